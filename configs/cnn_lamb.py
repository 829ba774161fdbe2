# LAMB on the default example's CNN, configured the way mmpretrain's ResNet strikes-back
# recipes configure it: `type='Lamb'` (fastopt's FusedLAMB; timm's rule with global grad-norm
# clipping at max_grad_norm=1.0), no weight decay on biases and norm layers, cosine schedule
# after a linear warm-up.
#
#   fastopt train configs/cnn_lamb.py
_base_ = [
    "_base_/models/small_cnn.py",
    "_base_/datasets/synthetic_shapes.py",
    "_base_/default_runtime.py",
]

optim_wrapper = dict(
    type="OptimWrapper",
    optimizer=dict(type="Lamb", lr=0.01, weight_decay=0.02),
    paramwise_cfg=dict(bias_decay_mult=0.0, norm_decay_mult=0.0),
)
param_scheduler = [
    dict(
        type="LinearLR",
        start_factor=0.01,
        by_epoch=True,
        begin=0,
        end=1,
        convert_to_iter_based=True,
    ),
    dict(
        type="CosineAnnealingLR", eta_min=1e-5, by_epoch=True, begin=1, convert_to_iter_based=True
    ),
]
train_cfg = dict(type="EpochBasedTrainLoop", max_epochs=12, val_interval=1)
