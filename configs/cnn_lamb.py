# LAMB (type='Lamb', mmpretrain style) on the default CNN, no decay on biases/norms.
#
# LAMB on the default example's CNN, configured the way mmpretrain's ResNet strikes-back
# recipes configure it: `type='Lamb'` (fastopt's FusedLAMB; timm's rule with global grad-norm
# clipping at max_grad_norm=1.0) and no weight decay on biases and norm layers, on the default
# example's warm-up + cosine schedule.
#
#   fastopt train cnn_lamb
_base_ = [
    "_base_/models/small_cnn.py",
    "_base_/datasets/synthetic_shapes.py",
    "_base_/schedules/sgd_cosine.py",
    "_base_/default_runtime.py",
]

optim_wrapper = dict(
    _delete_=True,
    type="OptimWrapper",
    optimizer=dict(type="Lamb", lr=0.01, weight_decay=0.02),
    paramwise_cfg=dict(bias_decay_mult=0.0, norm_decay_mult=0.0),
)
