# mmcv v1.7.2 golden g7: 4 epochs x 5 iterations, lr 0.01
optimizer = dict(type="SGD", lr=0.01, momentum=0.9)
lr_config = dict(
    policy="poly",
    power=0.9,
    min_lr=1e-4,
    by_epoch=False,
    warmup="linear",
    warmup_iters=5,
    warmup_ratio=0.1,
)
total_epochs = 4
