# FusedAdamW with paramwise_cfg, clip_grad and bfloat16 AMP on the default CNN.
#
# bfloat16 autocast works on the CPU too.
#
# paramwise_cfg: no weight decay on BatchNorm, biases and depthwise convs; the head trains
# at half the learning rate. clip_grad: clip the global gradient norm at 2 (the pre-clip
# norm is logged as grad_norm). All of it runs in one fused reduction + update pass.
#
#   fastopt train cnn_adamw_amp
_base_ = [
    "_base_/models/small_cnn.py",
    "_base_/datasets/synthetic_shapes.py",
    "_base_/default_runtime.py",
]

optim_wrapper = dict(
    type="AmpOptimWrapper",
    dtype="bfloat16",
    loss_scale="dynamic",
    optimizer=dict(type="FusedAdamW", lr=4e-3, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(
        norm_decay_mult=0.0,
        bias_decay_mult=0.0,
        dwconv_decay_mult=0.0,
        custom_keys={"head": dict(lr_mult=0.5)},
    ),
    clip_grad=dict(max_norm=2.0, norm_type=2),
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
