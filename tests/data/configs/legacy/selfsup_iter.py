# MMCV 1.x (mmselfsup 0.x style): LARS, accumulation, cyclic lr/momentum, iteration-based
optimizer = dict(
    type="LARS",
    lr=0.3,
    momentum=0.9,
    weight_decay=1e-6,
    paramwise_cfg=dict(custom_keys={"bn": dict(decay_mult=0, lars_exclude=True)}),
)
optimizer_config = dict(
    type="GradientCumulativeOptimizerHook", cumulative_iters=4, grad_clip=dict(max_norm=10)
)
lr_config = dict(policy="cyclic", target_ratio=(10, 1e-4), cyclic_times=1, step_ratio_up=0.4)
momentum_config = dict(
    policy="cyclic", target_ratio=(0.85 / 0.95, 1), cyclic_times=1, step_ratio_up=0.4
)
runner = dict(type="IterBasedRunner", max_iters=1000)
workflow = [("train", 200), ("val", 1)]
checkpoint_config = dict(interval=200, by_epoch=False, max_keep_ckpts=3, create_symlink=False)
