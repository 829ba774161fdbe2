_base_ = ["./_base_/schedule_1x.py", "./_base_/default_runtime.py"]

optimizer = dict(
    lr=0.01,
    paramwise_cfg=dict(norm_decay_mult=0.0, custom_keys={"backbone": dict(lr_mult=0.1)}),
)
optimizer_config = dict(_delete_=True, grad_clip=dict(max_norm=35, norm_type=2))
fp16 = dict(loss_scale=512)
evaluation = dict(interval=2, metric="bbox", save_best="auto")
