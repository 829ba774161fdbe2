# A tiny ViT with FusedAdamW, IterBasedTrainLoop and dynamic_intervals.
#
# IterBasedTrainLoop over an InfiniteSampler; validation every 300 iterations, then every 100
# from iteration 700 on (`dynamic_intervals`, MMDetection's pattern); warm-up and cosine
# stepped per iteration; checkpoints every 300 iterations. No weight decay on the position
# embedding, the class token, LayerNorms and biases (mmpretrain's ViT settings).
#
#   fastopt train vit_adamw_iters
_base_ = [
    "_base_/models/tiny_vit.py",
    "_base_/datasets/synthetic_shapes.py",
    "_base_/default_runtime.py",
]

# more images than the CNN examples use: a transformer has less built-in bias to lean on
train_dataloader = dict(
    dataset=dict(num_samples=20000),
    sampler=dict(type="InfiniteSampler", shuffle=True),
)

optim_wrapper = dict(
    type="OptimWrapper",
    optimizer=dict(type="FusedAdamW", lr=4e-3, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(
        norm_decay_mult=0.0,
        bias_decay_mult=0.0,
        custom_keys={"pos_embed": dict(decay_mult=0.0), "cls_token": dict(decay_mult=0.0)},
    ),
    clip_grad=dict(max_norm=5.0),
)
param_scheduler = [
    dict(type="LinearLR", start_factor=0.01, by_epoch=False, begin=0, end=100),
    dict(type="CosineAnnealingLR", eta_min=1e-5, by_epoch=False, begin=100),
]
train_cfg = dict(
    type="IterBasedTrainLoop",
    max_iters=900,
    val_interval=300,
    dynamic_intervals=[(700, 100)],
)
default_hooks = dict(
    checkpoint=dict(type="CheckpointHook", by_epoch=False, interval=300, max_keep_ckpts=2),
    logger=dict(type="LoggerHook", interval=50, log_metric_by_epoch=False),
)
log_processor = dict(by_epoch=False)
