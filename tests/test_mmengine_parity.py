"""fastopt next to the installed MMEngine (0.10.7), for the behaviours of issue 20, section 4
that its users rely on: the same inputs give the same results, or the same kind of error.

Where fastopt differs on purpose, the test shows both sides (see the README's list of
deliberate differences).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

mm_logging = pytest.importorskip("mmengine.logging", reason="MMEngine is not installed")

import mmengine.evaluator as mm_evaluator  # noqa: E402
import mmengine.hooks as mm_hooks  # noqa: E402
import mmengine.model as mm_model  # noqa: E402
import mmengine.optim as mm_optim  # noqa: E402
from mmengine.runner import Runner as MMRunner  # noqa: E402

import fastopt.evaluator as fo_evaluator  # noqa: E402
import fastopt.hooks as fo_hooks  # noqa: E402
import fastopt.logging as fo_logging  # noqa: E402
import fastopt.model as fo_model  # noqa: E402
import fastopt.scheduler as fo_scheduler  # noqa: E402
from fastopt.runner import Runner as FORunner  # noqa: E402


def sgd() -> torch.optim.SGD:
    return torch.optim.SGD([nn.Parameter(torch.zeros(2))], lr=0.1, momentum=0.9)


def error_type(make) -> type | None:
    try:
        make()
    except Exception as e:  # the kind of error is what is compared
        return type(e)
    return None


# ------------------------------------------------------------------ HistoryBuffer, hub
def test_history_buffer_float_counts_and_count_arrays():
    logs, counts = np.array([1.0, 4.0, 2.0]), np.array([0.5, 2.0, 1.5])
    ours, theirs = fo_logging.HistoryBuffer(logs, counts), mm_logging.HistoryBuffer(logs, counts)
    for buf in (ours, theirs):
        buf.update(3.0, 2.5)
    assert ours.data[0].tolist() == theirs.data[0].tolist()
    assert ours.data[1].tolist() == theirs.data[1].tolist()
    for window in (None, 2):
        assert ours.mean(window) == pytest.approx(float(theirs.mean(window)))


class _NoDeepCopy:
    def __deepcopy__(self, memo: dict) -> None:
        raise NotImplementedError


def test_message_hub_keeps_info_that_cannot_be_copied():
    obj = _NoDeepCopy()
    state = dict(log_scalars={}, runtime_info=dict(obj=obj), resumed_keys=dict(obj=True))
    ours = fo_logging.MessageHub.get_instance("test_mmengine_parity::hub")
    theirs = mm_logging.MessageHub.get_instance("test_mmengine_parity::hub")
    ours.load_state_dict(dict(state))
    theirs.load_state_dict(dict(state))
    assert ours.get_info("obj") is obj and theirs.get_info("obj") is obj


# ------------------------------------------------------------------------------ hooks
@pytest.mark.parametrize(
    "kwargs",
    [
        dict(out_suffix=[100]),
        dict(interval="100"),
        dict(interval=-1),
        dict(interval_exp_name="100"),
        dict(interval_exp_name=-1),
        dict(ignore_last="False"),
        dict(out_dir=1),
        dict(keep_local="no"),
        dict(file_client_args=dict(backend="local")),
    ],
)
def test_logger_hook_rejects_what_mmengine_rejects(kwargs):
    theirs = error_type(lambda: mm_hooks.LoggerHook(**kwargs))
    assert theirs is not None
    assert error_type(lambda: fo_hooks.LoggerHook(**kwargs)) is theirs


def test_logger_hook_accepts_a_str_suffix_and_a_path(tmp_path):
    for kwargs in (dict(out_suffix=".log"), dict(out_dir=tmp_path)):
        mm_hooks.LoggerHook(**kwargs)
        fo_hooks.LoggerHook(**kwargs)


def test_checkpoint_hook_str_keys():
    ours = fo_hooks.CheckpointHook(greater_keys="acc", less_keys="loss_cls")
    theirs = mm_hooks.CheckpointHook(greater_keys="acc", less_keys="loss_cls")
    assert list(ours.greater_keys) == list(theirs.greater_keys) == ["acc"]
    assert list(ours.less_keys) == list(theirs.less_keys) == ["loss_cls"]


# ------------------------------------------------------------------------- schedulers
@pytest.mark.parametrize("optimizer_first", [True, False])
def test_step_order_warning(optimizer_first):
    def run(module) -> list[str]:
        opt = sgd()
        scheduler = module.StepLR(opt, step_size=1)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if optimizer_first:
                opt.step()
            scheduler.step()
            opt.step()
        return [str(w.message) for w in caught if "how-to-adjust-learning-rate" in str(w.message)]

    ours, theirs = run(fo_scheduler), run(mm_optim)
    assert len(ours) == len(theirs) == (0 if optimizer_first else 1)


def test_step_order_warning_under_gradient_accumulation_is_silent_here():
    def run(optim, wrapper_cls) -> int:
        param = nn.Parameter(torch.ones(2))
        wrapper = wrapper_cls(torch.optim.SGD([param], lr=0.1), accumulative_counts=2)
        scheduler = optim.LinearLR(wrapper, by_epoch=False, end=4)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for _ in range(2):  # no optimizer step in the first iteration, on purpose
                wrapper.update_params((param * param).sum())
                scheduler.step()
        return sum("before `optimizer.step()`" in str(w.message) for w in caught)

    from fastopt.wrapper import OptimWrapper

    assert run(mm_optim, mm_optim.OptimWrapper) == 1  # MMEngine's false warning
    assert run(fo_scheduler, OptimWrapper) == 0


def test_linear_lr_start_factor_zero_fails_in_both_but_says_why_here():
    opt = sgd()
    theirs = mm_optim.LinearLR(opt, start_factor=0, end=5)
    with pytest.raises(ZeroDivisionError):
        theirs.step()  # MMEngine accepts 0, then divides by zero
    with pytest.raises(ValueError, match="must not be 0.*divides by zero"):
        fo_scheduler.LinearLR(sgd(), start_factor=0, end=5)


def test_reduce_on_plateau_by_iteration_is_an_extension():
    with pytest.raises(AssertionError, match="only support by_epoch=True"):
        mm_optim.ReduceOnPlateauLR(sgd(), by_epoch=False)
    assert not fo_scheduler.ReduceOnPlateauLR(sgd(), by_epoch=False).by_epoch


# ------------------------------------------------------------------------ model, data
def test_init_weights_reaches_the_same_children():
    def make(base_model: type, base_module: type) -> tuple[nn.Module, list[str]]:
        calls: list[str] = []

        class Leaf(base_module):
            def __init__(self, name: str) -> None:
                super().__init__()
                self.name = name

            def init_weights(self) -> None:
                calls.append(self.name)
                super().init_weights()

        class Model(base_model):
            def __init__(self) -> None:
                super().__init__()
                self.a = Leaf("a")
                self.seq = nn.Sequential(Leaf("hidden"))  # a plain container: not reached
                self.b = Leaf("b")

            def init_weights(self) -> None:
                calls.append("model")
                super().init_weights()

            def forward(self, *args, **kwargs):
                return {}

        model = Model()
        model.init_weights()
        return model, calls

    ours, our_calls = make(fo_model.BaseModel, fo_model.BaseModule)
    theirs, their_calls = make(mm_model.BaseModel, mm_model.BaseModule)
    assert our_calls == their_calls == ["model", "a", "b"]
    assert ours.is_init and theirs.is_init


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(),
        dict(mean=[10.0, 20.0, 30.0], std=[2.0, 4.0, 8.0], bgr_to_rgb=True),
        dict(mean=[5.0], std=[3.0], pad_size_divisor=8, pad_value=-2),
    ],
)
def test_img_data_preprocessor_outputs_match(kwargs):
    g = torch.Generator().manual_seed(0)
    images = [
        torch.randint(0, 255, (3, 5, 7), generator=g, dtype=torch.uint8),
        torch.randint(0, 255, (3, 6, 4), generator=g, dtype=torch.uint8),
    ]
    ours = fo_model.ImgDataPreprocessor(**kwargs)
    theirs = mm_model.ImgDataPreprocessor(**kwargs)
    for inputs in (images, torch.stack([images[0], images[0]])):
        a = ours(dict(inputs=inputs, data_samples=None))
        b = theirs(dict(inputs=inputs, data_samples=None))
        torch.testing.assert_close(a["inputs"], b["inputs"], rtol=0, atol=0)
        assert a.keys() == b.keys()
    tensors = [torch.ones(2, 3), torch.ones(2, 5), torch.ones(2, 1)]
    torch.testing.assert_close(
        fo_model.stack_batch(tensors, 4, 9), mm_model.stack_batch(tensors, 4, 9), rtol=0, atol=0
    )


def test_revert_sync_batchnorm_gives_the_same_layers():
    def net() -> nn.Module:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.SyncBatchNorm(4))
        model[1].running_mean.uniform_()
        return model.eval()

    x = torch.randn(2, 3, 4, 4)
    ours, theirs = fo_model.revert_sync_batchnorm(net()), mm_model.revert_sync_batchnorm(net())
    assert [type(m).__name__ for m in ours.modules()] == [
        type(m).__name__ for m in theirs.modules()
    ]
    torch.testing.assert_close(ours(x), theirs(x))


# ---------------------------------------------------------------------------- evaluator
def test_a_lone_metric_is_not_an_evaluator():
    class TheirMetric(mm_evaluator.BaseMetric):
        def process(self, data_batch, data_samples) -> None:
            pass

        def compute_metrics(self, results) -> dict:
            return {}

    theirs = error_type(lambda: MMRunner.build_evaluator(None, TheirMetric()))
    ours = error_type(lambda: FORunner.build_evaluator(None, fo_evaluator.BaseMetric()))
    assert ours is theirs is TypeError


@pytest.mark.parametrize("indicator", ["coco/AP", "AP50", "AR", "mIoU", "voc/AP"])
def test_get_metric_value(indicator):
    metrics = {"coco/AP": 0.5, "coco/AR": 0.4, "voc/AP50": 0.7, "voc/AR": 0.3}

    def value(fn):
        try:
            return fn(indicator, metrics)
        except ValueError as e:
            return ("ValueError", str(e))

    assert value(fo_evaluator.get_metric_value) == value(mm_evaluator.get_metric_value)
