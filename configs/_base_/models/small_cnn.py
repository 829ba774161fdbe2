# Conv + BN stem, three depthwise-separable blocks (3x3 depthwise conv, BN, 1x1 conv, BN),
# global average pooling and a linear head: 22k parameters.
model = dict(
    type="SmallCNN",
    num_classes=8,
    widths=(24, 48, 96, 128),
    strides=(2, 2, 1),
    data_preprocessor=dict(
        type="ClsDataPreprocessor", mean=[127.5, 127.5, 127.5], std=[64.0, 64.0, 64.0]
    ),
)
