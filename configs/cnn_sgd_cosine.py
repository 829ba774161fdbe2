# The default example: a small CNN (conv + BN + depthwise conv) on SyntheticShapes, trained
# with FusedSGD (Nesterov momentum), a linear warm-up and cosine annealing.
#
#   fastopt train configs/cnn_sgd_cosine.py
_base_ = [
    "_base_/models/small_cnn.py",
    "_base_/datasets/synthetic_shapes.py",
    "_base_/schedules/sgd_cosine.py",
    "_base_/default_runtime.py",
]
