# The default example in MMCV 1.x keys (optimizer_config, lr_config, data, ...).
#
# The default example written the MMCV 1.x way (mmcv.runner era configs): `data`, `optimizer`,
# `optimizer_config`, `lr_config`, `runner`, `workflow`, `checkpoint_config`, `log_config`,
# `evaluation`. fastopt translates each key to its MMEngine equivalent when it loads the file
# (one note per key says what became what); `data.samples_per_gpu` becomes each dataloader's
# `batch_size`. The metric is an MMEngine key: MMCV 1.x called the dataset's evaluate(),
# which has no translation.
#
#   fastopt train cnn_sgd_mmcv1x
_base_ = ["_base_/models/small_cnn.py"]

dataset_type = "SyntheticShapes"
data = dict(
    samples_per_gpu=64,
    workers_per_gpu=0,
    train=dict(type=dataset_type, split="train", num_samples=4000, seed=0),
    val=dict(type=dataset_type, split="val", num_samples=1000, seed=0, samples_per_gpu=200),
    test=dict(type=dataset_type, split="test", num_samples=1000, seed=0, samples_per_gpu=200),
)
val_evaluator = dict(type="Accuracy", topk=(1, 2))
test_evaluator = val_evaluator

optimizer = dict(type="FusedSGD", lr=0.2, momentum=0.9, weight_decay=5e-4, nesterov=True)
optimizer_config = dict(grad_clip=dict(max_norm=10.0, norm_type=2))
lr_config = dict(
    policy="CosineAnnealing",
    min_lr=1e-4,
    warmup="linear",
    warmup_iters=63,  # one epoch of 4000 images in batches of 64
    warmup_ratio=0.01,
)
runner = dict(type="EpochBasedRunner", max_epochs=12)
workflow = [("train", 1)]
checkpoint_config = dict(interval=1, max_keep_ckpts=2)
log_config = dict(interval=20, hooks=[dict(type="TextLoggerHook")])
evaluation = dict(interval=1, save_best="auto")
dist_params = dict(backend="nccl")
log_level = "INFO"
load_from = None
resume_from = None
seed = 0  # MMCV 1.x tools/train.py read the seed from here (or --seed)
