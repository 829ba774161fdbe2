# The default example: a small CNN, FusedSGD (Nesterov), linear warm-up + cosine.
#
# A small CNN (conv + BN + depthwise conv) on SyntheticShapes, trained with FusedSGD (Nesterov
# momentum), one epoch of linear warm-up and cosine annealing to the end of training.
#
#   fastopt train cnn_sgd_cosine
_base_ = [
    "_base_/models/small_cnn.py",
    "_base_/datasets/synthetic_shapes.py",
    "_base_/schedules/sgd_cosine.py",
    "_base_/default_runtime.py",
]
