# LARS (type='LARS', mmselfsup style) on the default CNN, BN and biases lars_exclude.
#
# LARS (layer-wise adaptive rate scaling) on the default example's CNN, configured the way
# mmselfsup configures SimCLR: `type='LARS'` (fastopt's FusedLARS) and BatchNorm and bias
# parameters excluded from the adaptation (`lars_exclude`) and from weight decay.
#
#   fastopt train cnn_lars
_base_ = [
    "_base_/models/small_cnn.py",
    "_base_/datasets/synthetic_shapes.py",
    "_base_/default_runtime.py",
]

optim_wrapper = dict(
    type="OptimWrapper",
    optimizer=dict(type="LARS", lr=0.5, momentum=0.9, weight_decay=1e-4, eta=0.01),
    paramwise_cfg=dict(
        custom_keys={
            "bn": dict(decay_mult=0, lars_exclude=True),
            "bias": dict(decay_mult=0, lars_exclude=True),
        }
    ),
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
    dict(type="CosineAnnealingLR", eta_min=0.0, by_epoch=True, begin=1, convert_to_iter_based=True),
]
train_cfg = dict(type="EpochBasedTrainLoop", max_epochs=12, val_interval=1)
