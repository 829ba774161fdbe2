"""A diverged run is reported, not scored as perfect (issue 19 §2).

nan scores are never a correct prediction, a metric that is not finite is logged, the first
nan/inf training loss is reported with its iteration (and stops training by default), and
``save_best`` never takes a nan metric as the best.
"""

from __future__ import annotations

import logging
import math

import pytest
import torch
from runner_toys import build, log_text

from fastopt.evaluator import Accuracy, BaseMetric  # noqa: E402
from fastopt.hooks import (  # noqa: E402
    NonFiniteLossError,
    RuntimeInfoHook,
    finite_loss,  # noqa: E402
)

NAN = float("nan")


pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------------------------- metrics
def test_nan_scores_are_never_a_correct_prediction(caplog):
    metric = Accuracy(topk=(1, 2))
    samples = [
        dict(pred_score=torch.tensor([NAN, NAN, NAN]), gt_label=0),  # a diverged model
        dict(pred_score=torch.tensor([0.1, NAN, 0.2]), gt_label=2),  # one nan is enough
        dict(pred_score=torch.tensor([0.1, 0.7, 0.2]), gt_label=1),  # a real hit
    ]
    metric.process({}, samples)
    with caplog.at_level(logging.WARNING, logger="fastopt.evaluator.accuracy"):
        result = metric.compute_metrics(metric.results)
    # before: comparisons with nan are all False, so the nan rows ranked first (100%)
    assert result == {"top1": pytest.approx(100 / 3), "top2": pytest.approx(100 / 3)}
    assert "2 of 3 predictions have nan scores" in caplog.text
    # infinite scores still rank: +inf on the label is a hit
    metric.process({}, [dict(pred_score=torch.tensor([-math.inf, math.inf]), gt_label=1)])
    assert metric.compute_metrics(metric.results[-1:]) == {"top1": 100.0, "top2": 100.0}


def test_a_metric_that_is_not_finite_is_logged(caplog):
    class Diverged(BaseMetric):
        def process(self, data_batch, data_samples):
            self.results.extend(data_samples)

        def compute_metrics(self, results):
            return dict(loss=NAN, ratio=torch.tensor(math.inf), acc=0.5, name="x")

    metric = Diverged(prefix="d")
    metric.process({}, [1, 2])
    with caplog.at_level(logging.WARNING, logger="fastopt.evaluator.metric"):
        metrics = metric.evaluate(2)
    assert math.isnan(metrics["d/loss"]) and metrics["d/acc"] == 0.5
    assert "Diverged: d/loss=nan, d/ratio=inf not finite" in caplog.text
    assert "d/acc" not in caplog.text


# ------------------------------------------------------------------------- the training loss
def test_nan_lr_stops_training_at_the_first_nan_loss(tmp_path):
    runner = build(
        tmp_path,
        optim_wrapper=dict(optimizer=dict(type="SGD", lr=NAN)),
        default_hooks=dict(checkpoint=dict(type="CheckpointHook", interval=1, save_best="acc")),
    )
    with pytest.raises(NonFiniteLossError) as exc:
        runner.train()
    # iteration 1 uses the initial weights; its step with lr=nan makes iteration 2's loss nan
    message = str(exc.value)
    assert message.startswith("loss is nan at training iteration 2 (epoch 1, batch 2/4)")
    assert "lr=nan" in message and "default_hooks.runtime_info.check_finite=False" in message
    assert runner.iter == 1  # stopped inside that iteration's hooks
    assert not list(tmp_path.glob("*.pth"))  # nothing validated, no (best) checkpoint
    assert "WARNING - loss is nan at training iteration 2" in log_text(runner)


def test_check_finite_false_warns_once_and_trains_on(tmp_path):
    runner = build(
        tmp_path,
        optim_wrapper=dict(optimizer=dict(type="SGD", lr=1e30)),  # finite, but diverges
        default_hooks=dict(runtime_info=dict(type="RuntimeInfoHook", check_finite=False)),
    )
    runner.train()
    assert runner.iter == runner.max_iters == 8
    log = log_text(runner)
    warnings = [line for line in log.splitlines() if "the run has diverged" in line]
    assert len(warnings) == 1, warnings
    assert " is " in warnings[0] and "at training iteration" in warnings[0]
    assert "training goes on (check_finite=False)" in warnings[0]


def test_finite_losses_are_not_reported(tmp_path):
    runner = build(tmp_path)
    runner.train()
    assert "diverged" not in log_text(runner)
    hook = next(h for h in runner.hooks if isinstance(h, RuntimeInfoHook))
    assert not hook.finite_check.reported


def test_device_losses_are_read_back_in_batches_with_the_first_iteration(tmp_path, monkeypatch):
    # treat CPU tensors as device tensors: the values are compared where they live and read
    # back only at the read points, yet the report names the first bad iteration
    monkeypatch.setattr(finite_loss.FiniteLossCheck, "host_devices", ())
    reads = []
    flush = finite_loss.FiniteLossCheck.flush

    def counting_flush(self, runner):
        if self._pending:
            reads.append(runner.iter)
        return flush(self, runner)

    monkeypatch.setattr(finite_loss.FiniteLossCheck, "flush", counting_flush)
    runner = build(tmp_path, optim_wrapper=dict(optimizer=dict(type="SGD", lr=NAN)))
    with pytest.raises(NonFiniteLossError, match=r"^loss is nan at training iteration 2 "):
        runner.train()
    # read once, at the start of epoch 2 (after 4 iterations), not after every step
    assert reads == [4]


def test_check_finite_must_be_a_bool():
    with pytest.raises(TypeError, match="check_finite must be True or False"):
        RuntimeInfoHook(check_finite="yes")


# -------------------------------------------------------------------------------- save_best
def test_save_best_never_takes_a_nan_metric(tmp_path):
    runner = build(
        tmp_path,
        train_cfg=dict(by_epoch=True, max_epochs=4),
        val_evaluator=dict(type="RunnerToyAccuracy", scores=[NAN, 0.5, NAN, math.inf]),
        default_hooks=dict(
            checkpoint=dict(type="CheckpointHook", interval=-1, save_best="acc", save_last=False)
        ),
    )
    runner.train()
    assert sorted(p.name for p in tmp_path.glob("*.pth")) == ["best_acc_epoch_2.pth"]
    assert runner.message_hub.get_info("best_score") == 0.5
    log = log_text(runner)
    assert "save_best: acc=nan at 1 epoch is not finite" in log
    assert "save_best: acc=inf at 4 epoch is not finite" in log
