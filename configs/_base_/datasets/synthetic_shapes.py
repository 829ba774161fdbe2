# SyntheticShapes: 8 classes of shapes rendered from a seed (fastopt.dataset.synthetic), no
# download. 4000 training and 1000 validation images of 32x32 pixels; chance level is 12.5%.
dataset_type = "SyntheticShapes"
data_seed = 0

train_dataloader = dict(
    batch_size=64,
    num_workers=0,
    dataset=dict(type=dataset_type, split="train", num_samples=4000, seed=data_seed),
    sampler=dict(type="DefaultSampler", shuffle=True),
    collate_fn=dict(type="default_collate"),
)
val_dataloader = dict(
    batch_size=200,
    num_workers=0,
    dataset=dict(type=dataset_type, split="val", num_samples=1000, seed=data_seed),
    sampler=dict(type="DefaultSampler", shuffle=False),
    collate_fn=dict(type="default_collate"),
)
test_dataloader = dict(
    batch_size=200,
    num_workers=0,
    dataset=dict(type=dataset_type, split="test", num_samples=1000, seed=data_seed),
    sampler=dict(type="DefaultSampler", shuffle=False),
    collate_fn=dict(type="default_collate"),
)
val_evaluator = dict(type="Accuracy", topk=(1, 2))
test_evaluator = val_evaluator
val_cfg = dict()
test_cfg = dict()
