model = dict(
    type="ToyNet",
    num_classes=80,
    backbone=dict(type="ToyBackbone", depth=18, norm_cfg=dict(type="BN", requires_grad=True)),
    head=dict(type="ToyHead", in_channels=512),
)
