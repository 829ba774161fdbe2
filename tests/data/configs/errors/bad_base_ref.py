_base_ = "../_base_/models/toy.py"
depth = {{_base_.model.backbone.width}}
