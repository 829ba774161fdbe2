# A small vision transformer: 4x4 patches (64 tokens + a class token), width 64, 3 pre-norm
# encoder layers with 4 heads: 108k parameters.
model = dict(
    type="TinyViT",
    num_classes=8,
    image_size=32,
    patch_size=4,
    dim=64,
    depth=3,
    heads=4,
    data_preprocessor=dict(
        type="ClsDataPreprocessor", mean=[127.5, 127.5, 127.5], std=[64.0, 64.0, 64.0]
    ),
)
