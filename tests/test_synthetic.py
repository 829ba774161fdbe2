"""The example configs' parts: SyntheticShapes, ClsDataPreprocessor, SmallCNN, TinyViT, Accuracy."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from conftest import fastopt_subprocess_env

from fastopt.constructor import build_optim_wrapper
from fastopt.dataset import SyntheticShapes, build_dataloader
from fastopt.dataset.synthetic import CLASSES
from fastopt.evaluator import Accuracy, Evaluator
from fastopt.model import ClsDataPreprocessor, SmallCNN, TinyViT
from fastopt.registry import DATASETS, METRICS, MODELS


# ------------------------------------------------------------------------------- dataset
def test_same_seed_and_split_give_the_same_images():
    a = SyntheticShapes("train", num_samples=64, seed=3)
    b = SyntheticShapes("train", num_samples=64, seed=3)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    # another seed or another split: other images
    assert not torch.equal(a.images, SyntheticShapes("train", num_samples=64, seed=4).images)
    assert not torch.equal(a.images, SyntheticShapes("val", num_samples=64, seed=3).images)


def test_image_format():
    small = SyntheticShapes("val", num_samples=100, seed=0)
    assert len(small) == 100 and small.images.shape == (100, 3, 32, 32)
    assert small.images.dtype == torch.uint8


def test_samples_balanced_labels_and_metainfo():
    ds = SyntheticShapes("train", num_samples=803, image_size=24, num_classes=6)
    sample = ds[5]
    assert set(sample) == {"inputs", "data_samples"}
    assert sample["inputs"].shape == (3, 24, 24) and sample["inputs"].dtype == torch.uint8
    assert isinstance(sample["data_samples"], int)
    counts = torch.bincount(ds.labels, minlength=6)
    assert counts.tolist() == [134] * 5 + [133]
    assert ds.metainfo["classes"] == CLASSES[:6]
    # images are not blank: every one has contrast between shape and background
    spread = ds.images.float().flatten(1).std(dim=1)
    assert spread.min() > 10


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(split="training"), "split must be one of"),
        (dict(num_samples=0), "num_samples must be a positive int"),
        (dict(image_size=8), "image_size must be an int >= 16"),
        (dict(num_classes=9), "num_classes must be in"),
        (dict(noise=-0.1), "noise must be >= 0"),
    ],
)
def test_bad_dataset_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SyntheticShapes(**kwargs)


def test_registered_and_loadable_from_a_dataloader_config():
    loader = build_dataloader(
        dict(
            batch_size=16,
            dataset=dict(type="SyntheticShapes", split="val", num_samples=40),
            sampler=dict(type="DefaultSampler", shuffle=False),
            collate_fn=dict(type="default_collate"),
        ),
        seed=0,
    )
    batch = next(iter(loader))
    assert batch["inputs"].shape == (16, 3, 32, 32) and batch["data_samples"].shape == (16,)
    assert len(loader) == 3


def test_registry_locations_find_the_example_parts_in_a_fresh_interpreter(tmp_path):
    code = (
        "from fastopt.registry import DATASETS, METRICS, MODELS\n"
        "print(DATASETS.get('SyntheticShapes').__name__, METRICS.get('Accuracy').__name__,"
        " MODELS.get('SmallCNN').__name__, MODELS.get('TinyViT').__name__,"
        " MODELS.get('ClsDataPreprocessor').__name__)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=fastopt_subprocess_env(),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert out == ["SyntheticShapes", "Accuracy", "SmallCNN", "TinyViT", "ClsDataPreprocessor"]
    assert DATASETS.get("SyntheticShapes") is SyntheticShapes
    assert METRICS.get("Accuracy") is Accuracy and MODELS.get("SmallCNN") is SmallCNN


# ------------------------------------------------------------------------- preprocessor
def test_preprocessor_stacks_lists_and_normalises():
    pre = ClsDataPreprocessor(mean=[100.0, 0.0, 255.0], std=[2.0, 1.0, 5.0])
    images = [torch.full((3, 2, 2), 110, dtype=torch.uint8) for _ in range(3)]
    out = pre(dict(inputs=images, data_samples=[1, 0, 2]))
    assert out["inputs"].shape == (3, 3, 2, 2) and out["inputs"].dtype == torch.float32
    assert out["inputs"][0, :, 0, 0].tolist() == [5.0, 110.0, -29.0]
    assert out["data_samples"].tolist() == [1, 0, 2] and out["data_samples"].dtype == torch.int64
    # a stacked batch (default_collate) gives the same result
    stacked = pre(dict(inputs=torch.stack(images), data_samples=torch.tensor([1, 0, 2])))
    assert torch.equal(stacked["inputs"], out["inputs"])
    plain = ClsDataPreprocessor()(dict(inputs=torch.stack(images)))
    assert plain["inputs"].max() == 110.0 and plain["data_samples"] is None


def test_preprocessor_errors():
    with pytest.raises(ValueError, match="both mean and std"):
        ClsDataPreprocessor(mean=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="std must be positive"):
        ClsDataPreprocessor(mean=[1.0], std=[0.0])
    with pytest.raises(ValueError, match="images have 1 channels but mean/std give 3"):
        ClsDataPreprocessor(mean=[0.0] * 3, std=[1.0] * 3)(dict(inputs=torch.zeros(2, 1, 4, 4)))
    with pytest.raises(TypeError, match="expects a dict batch"):
        ClsDataPreprocessor()([torch.zeros(3, 4, 4)])


# ------------------------------------------------------------------------------- models
@pytest.mark.parametrize(
    "model",
    [
        SmallCNN(num_classes=5),
        TinyViT(num_classes=5, image_size=16, dim=16, depth=1, heads=2),
        TinyViT(num_classes=5, image_size=16, dim=16, depth=1, heads=2, conv_stem=False),
    ],
    ids=["cnn", "vit", "vit-patchify"],
)
def test_classifier_modes(model):
    torch.manual_seed(0)
    size = 16
    batch = dict(
        inputs=[torch.randint(0, 256, (3, size, size), dtype=torch.uint8) for _ in range(4)],
        data_samples=[0, 1, 2, 4],
    )
    data = model.data_preprocessor(batch, True)
    logits = model(**data, mode="tensor")
    assert logits.shape == (4, 5)
    losses = model(**data, mode="loss")
    assert set(losses) == {"loss"} and losses["loss"].ndim == 0
    preds = model(**data, mode="predict")
    assert len(preds) == 4 and set(preds[0]) == {"pred_score", "pred_label", "gt_label"}
    assert torch.allclose(preds[0]["pred_score"].sum(), torch.tensor(1.0))
    assert preds[3]["gt_label"].item() == 4
    with pytest.raises(ValueError, match="mode must be"):
        model(**data, mode="nope")
    with pytest.raises(ValueError, match="needs the labels"):
        model(data["inputs"], None, mode="loss")


def test_train_step_lowers_the_loss_with_a_fused_optimizer():
    torch.manual_seed(0)
    model = SmallCNN(num_classes=8, widths=(8, 16), strides=(2,))
    ds = SyntheticShapes("train", num_samples=64, image_size=16)
    batch = dict(inputs=ds.images, data_samples=ds.labels)
    wrapper = build_optim_wrapper(model, dict(optimizer=dict(type="FusedAdamW", lr=3e-2)))
    first = model.train_step(batch, wrapper)["loss"].item()
    for _ in range(30):
        last = model.train_step(batch, wrapper)["loss"].item()
    assert last < 0.6 * first


def test_small_cnn_parameter_names_fit_paramwise_keys():
    model = SmallCNN()
    names = [n for n, _ in model.named_parameters()]
    assert names[:3] == ["stem.conv.weight", "stem.bn.weight", "stem.bn.bias"]
    assert "blocks.0.depthwise.conv.weight" in names and names[-1] == "head.bias"
    wrapper = build_optim_wrapper(
        model,
        dict(
            optimizer=dict(type="FusedSGD", lr=0.1, momentum=0.9, weight_decay=1e-4),
            paramwise_cfg=dict(
                dwconv_decay_mult=0.0,
                custom_keys={"bn": dict(decay_mult=0.0, lars_exclude=True)},
            ),
        ),
    )
    by_name = dict(zip(names, wrapper.optimizer.param_groups))
    assert by_name["stem.bn.weight"]["lars_exclude"] is True
    assert by_name["stem.bn.weight"]["weight_decay"] == 0.0
    assert by_name["blocks.1.depthwise.conv.weight"]["weight_decay"] == 0.0
    assert by_name["blocks.1.pointwise.conv.weight"]["weight_decay"] == 1e-4
    with pytest.raises(ValueError, match="strides needs one entry per block"):
        SmallCNN(widths=(8, 16, 32), strides=(2,))
    with pytest.raises(ValueError, match="not a multiple of patch_size"):
        TinyViT(image_size=30)


# ------------------------------------------------------------------------------ metric
def test_accuracy_top_k_in_percent():
    metric = Accuracy(topk=(1, 2))
    scores = torch.tensor([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.2, 0.3, 0.5], [0.3, 0.3, 0.4]])
    preds = [dict(pred_score=s, gt_label=torch.tensor(g)) for s, g in zip(scores, [1, 1, 0, 0])]
    metric.process(None, preds)
    # sample 0 top1; sample 1 rank 2 (top2); sample 2 rank 3; sample 3: label tied with
    # another class for 2nd place counts as rank 3
    assert metric.evaluate(4) == {"accuracy/top1": 25.0, "accuracy/top2": 50.0}
    assert metric.results == []


def test_accuracy_labels_from_the_batch_and_pred_label_only():
    metric = Accuracy(prefix="acc")
    metric.process(
        dict(data_samples=torch.tensor([2, 0])), [dict(pred_label=2), dict(pred_label=1)]
    )
    assert metric.evaluate(2) == {"acc/top1": 50.0}
    with pytest.raises(ValueError, match="needs pred_score"):
        Accuracy(topk=2).process(None, [dict(pred_label=1, gt_label=1)])
    with pytest.raises(ValueError, match="needs gt_label"):
        Accuracy().process(None, [dict(pred_label=1)])
    with pytest.raises(ValueError, match="topk must be positive ints"):
        Accuracy(topk=(0,))


def test_accuracy_through_the_evaluator_and_a_model():
    torch.manual_seed(0)
    model = SmallCNN(num_classes=8, widths=(8, 16), strides=(2,))
    model.eval()
    ds = SyntheticShapes("val", num_samples=10, image_size=16)
    batch = dict(inputs=ds.images, data_samples=ds.labels)
    evaluator = Evaluator(dict(type="Accuracy", topk=(1, 8)))
    with torch.no_grad():
        evaluator.process(model.val_step(batch), batch)
    result = evaluator.evaluate(10)
    assert result["accuracy/top8"] == 100.0 and 0.0 <= result["accuracy/top1"] <= 100.0
