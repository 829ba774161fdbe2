"""BaseMetric and Evaluator: results, prefixes, sizes, metric configs, and the errors."""

from __future__ import annotations

import logging

import pytest
import runner_toys as toys

from fastopt.evaluator import BaseMetric, Evaluator, get_metric_value  # noqa: E402
from fastopt.registry import METRICS  # noqa: E402
from fastopt.runner import Runner  # noqa: E402


@METRICS.register_module()
class EvalTestMean(BaseMetric):
    """Mean of the processed numbers; records what it was given."""

    default_prefix = "mean"

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.batches = []

    def process(self, data_batch, data_samples):
        self.batches.append(data_batch)
        self.results.extend(data_samples)

    def compute_metrics(self, results):
        return dict(value=sum(results) / len(results), n=len(results))


def test_metric_evaluate_prefixes_cuts_padding_and_clears():
    metric = EvalTestMean()
    metric.process("batch", [1.0, 2.0, 3.0])
    metric.process("batch", [6.0])  # e.g. a repeated sample the sampler padded with
    assert metric.evaluate(size=3) == {"mean/value": 2.0, "mean/n": 3}
    assert metric.results == []
    named = EvalTestMean(prefix="val_set")
    named.process(None, [4.0])
    assert named.evaluate(1) == {"val_set/value": 4.0, "val_set/n": 1}


def test_metric_warns_on_empty_results_and_checks_its_output(caplog):
    class Broken(EvalTestMean):
        def compute_metrics(self, results):
            return [1]

    broken = Broken()
    broken.process(None, [1.0])
    with pytest.raises(TypeError, match="Broken.compute_metrics must return a dict, got list"):
        broken.evaluate(1)
    empty = EvalTestMean()
    with (
        caplog.at_level(logging.WARNING, logger="fastopt.evaluator"),
        pytest.raises(ZeroDivisionError),
    ):
        empty.evaluate(0)
    assert "EvalTestMean got empty `self.results`" in caplog.text
    with pytest.raises(ValueError, match="collect_device must be 'cpu' or 'gpu'"):
        EvalTestMean(collect_device="tpu")


def test_base_metric_methods_must_be_implemented():
    metric = BaseMetric()
    with pytest.raises(NotImplementedError, match="must implement process"):
        metric.process(None, [])
    with pytest.raises(NotImplementedError, match="must implement compute_metrics"):
        metric.compute_metrics([])


def test_evaluator_runs_every_metric_and_shares_dataset_meta():
    first, second = EvalTestMean(prefix="a"), EvalTestMean(prefix="b")
    evaluator = Evaluator([first, dict(type="EvalTestMean", prefix="c")])
    evaluator.metrics.append(second)
    evaluator.dataset_meta = dict(classes=("x",))
    assert all(m.dataset_meta == dict(classes=("x",)) for m in evaluator)
    evaluator.process(data_samples=[2.0, 4.0], data_batch="inputs")
    assert first.batches == ["inputs"]
    assert evaluator.evaluate(2) == {
        "a/value": 3.0,
        "a/n": 2,
        "c/value": 3.0,
        "c/n": 2,
        "b/value": 3.0,
        "b/n": 2,
    }
    assert len(evaluator) == 3


def test_evaluator_rejects_duplicate_metric_names_and_non_metrics():
    evaluator = Evaluator([EvalTestMean(), EvalTestMean()])
    evaluator.process([1.0])
    with pytest.raises(ValueError, match=r"same metric name \['mean/n', 'mean/value'\]"):
        evaluator.evaluate(1)
    with pytest.raises(TypeError, match="must have process\\(\\) and evaluate\\(\\), got int"):
        Evaluator([3])


def test_runner_builds_evaluators_from_every_form(tmp_path):
    runner = Runner(model=toys.RunnerToyModel(), work_dir=str(tmp_path), log_level="WARNING")
    metric = EvalTestMean()
    # a lone metric is refused, as in MMEngine; the message says how to wrap it
    with pytest.raises(TypeError, match=r"the metric EvalTestMean: pass \[metric\]"):
        runner.build_evaluator(metric)
    assert runner.build_evaluator([metric]).metrics == [metric]
    evaluator = Evaluator(metric)
    assert runner.build_evaluator(evaluator) is evaluator
    assert isinstance(runner.build_evaluator(dict(type="EvalTestMean")).metrics[0], EvalTestMean)
    assert len(runner.build_evaluator([dict(type="EvalTestMean"), metric]).metrics) == 2
    built = runner.build_evaluator(dict(type="Evaluator", metrics=[dict(type="EvalTestMean")]))
    assert isinstance(built, Evaluator)
    with pytest.raises(TypeError, match="evaluator should be an Evaluator, a dict or a list"):
        runner.build_evaluator(3)


# --------------------------------------------------- MMEngine behaviours (issue 20, §4)
def test_offline_evaluate_processes_saved_predictions_in_chunks():
    metric = EvalTestMean()
    evaluator = Evaluator([metric])
    inputs = [dict(x=i) for i in range(5)]
    assert evaluator.offline_evaluate([1.0, 2.0, 3.0, 4.0, 5.0], inputs, chunk_size=2) == {
        "mean/value": 3.0,
        "mean/n": 5,
    }
    # the inputs of each chunk are collated like a loader's batch (pseudo_collate)
    assert metric.batches == [dict(x=[0, 1]), dict(x=[2, 3]), dict(x=[4])]
    metric.batches.clear()
    assert evaluator.offline_evaluate([2.0, 4.0])["mean/value"] == 3.0
    assert metric.batches == [None, None]
    with pytest.raises(ValueError, match="same length"):
        evaluator.offline_evaluate([1.0], [dict(x=0), dict(x=1)])
    with pytest.raises(ValueError, match="chunk_size"):
        evaluator.offline_evaluate([1.0], chunk_size=0)


def test_get_metric_value_by_full_name_or_unique_short_name():
    metrics = {"coco/AP": 0.5, "coco/AR": 0.4, "voc/AP50": 0.7, "voc/AR": 0.3}
    assert get_metric_value("coco/AP", metrics) == 0.5
    assert get_metric_value("AP50", metrics) == 0.7
    with pytest.raises(ValueError, match="matches multiple metrics"):
        get_metric_value("AR", metrics)
    with pytest.raises(ValueError, match="can not match any metric"):
        get_metric_value("coco/AP50", metrics)
    with pytest.raises(ValueError, match="can not match any metric"):
        get_metric_value("mIoU", metrics)
