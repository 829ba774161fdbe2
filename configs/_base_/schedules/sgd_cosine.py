# FusedSGD with Nesterov momentum: one epoch of linear warm-up (stepped every iteration), then
# cosine annealing to the end of training. The cosine's `end` and `T_max` default to the
# training length, so `--cfg-options train_cfg.max_epochs=N` shortens the whole schedule.
optim_wrapper = dict(
    type="OptimWrapper",
    optimizer=dict(type="FusedSGD", lr=0.2, momentum=0.9, weight_decay=5e-4, nesterov=True),
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
        type="CosineAnnealingLR", eta_min=1e-4, by_epoch=True, begin=1, convert_to_iter_based=True
    ),
]
train_cfg = dict(type="EpochBasedTrainLoop", max_epochs=12, val_interval=1)
auto_scale_lr = dict(enable=False, base_batch_size=64)
