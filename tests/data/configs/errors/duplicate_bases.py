_base_ = ["../_base_/models/toy.py", "../_base_/models/toy_copy.py"]
