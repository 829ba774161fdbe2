"""MessageHub / HistoryBuffer: MMEngine's API, lazy tensor scalars, weights_only-safe state."""

from __future__ import annotations

import collections
import logging
import math
import warnings

import numpy as np
import pytest
import torch

from fastopt.logging import HistoryBuffer, ManagerMixin, MessageHub


@pytest.fixture
def hub(request: pytest.FixtureRequest) -> MessageHub:
    return MessageHub.get_instance(f"test_message_hub::{request.node.name}")


def _assert_plain(value: object, path: str = "state") -> None:
    """Every leaf is None/bool/int/float/str; containers are dict (str keys), list, tuple."""
    if value is None or isinstance(value, (bool, int, float, str)):
        assert type(value) in (type(None), bool, int, float, str), f"{path}: {type(value)}"
        return
    if isinstance(value, dict):
        assert type(value) is dict, f"{path}: {type(value)}"
        for k, v in value.items():
            assert isinstance(k, (str, int)), f"{path}: key {k!r}"
            _assert_plain(v, f"{path}[{k!r}]")
        return
    assert type(value) in (list, tuple), f"{path}: {type(value)}"
    for i, v in enumerate(value):
        _assert_plain(v, f"{path}[{i}]")


# ----------------------------------------------------------------------------- instances
def test_get_instance_returns_the_same_object_and_current_is_the_latest_created():
    a = MessageHub.get_instance("test_message_hub::a")
    assert MessageHub.get_instance("test_message_hub::a") is a
    assert a.instance_name == "test_message_hub::a"
    b = MessageHub.get_instance("test_message_hub::b")
    assert MessageHub.get_current_instance() is b
    # fetching an existing instance does not make it current
    assert MessageHub.get_instance("test_message_hub::a") is a
    assert MessageHub.get_current_instance() is b
    assert MessageHub.check_instance_created("test_message_hub::a")
    assert not MessageHub.check_instance_created("test_message_hub::never")


def test_get_instance_with_arguments_for_an_existing_instance_warns():
    MessageHub.get_instance("test_message_hub::warn")
    with pytest.warns(UserWarning, match="already exists"):
        MessageHub.get_instance("test_message_hub::warn", runtime_info={"a": 1})


def test_each_class_has_its_own_instances_and_a_default_hub_is_created_on_demand():
    class OtherHub(MessageHub):
        pass

    class Other(ManagerMixin):
        pass

    with pytest.raises(RuntimeError, match="get_instance"):
        Other.get_current_instance()
    hub = OtherHub.get_current_instance()
    assert hub.instance_name == "fastopt"
    assert type(hub) is OtherHub
    assert OtherHub.get_current_instance() is hub
    assert MessageHub.get_instance("fastopt") is not hub
    with pytest.raises(ValueError, match="non-empty"):
        MessageHub("")


# ------------------------------------------------------------------------------- scalars
def test_update_scalar_history_mean_current_min_max(hub: MessageHub):
    for v in (1, 2.5, 4, 8):
        hub.update_scalar("train/loss", v)
    hub.update_scalar("train/loss", 10, count=2)  # a sum over two samples
    buf = hub.get_scalar("train/loss")
    values, counts = buf.data
    np.testing.assert_array_equal(values, [1, 2.5, 4, 8, 10])
    np.testing.assert_array_equal(counts, [1, 1, 1, 1, 2])
    assert buf.current() == 10.0
    assert buf.mean() == pytest.approx(25.5 / 6)
    assert buf.mean(2) == pytest.approx(18 / 3)
    assert buf.mean(100) == pytest.approx(25.5 / 6)
    assert (buf.min(), buf.max(3)) == (1.0, 10.0)
    assert buf.statistics("mean", 2) == buf.mean(2)
    assert len(buf) == 5
    with pytest.raises(KeyError, match="unknown statistic"):
        buf.statistics("median")
    with pytest.raises(ValueError, match="window_size"):
        buf.mean(0)


def test_update_scalars_accepts_value_count_dicts(hub: MessageHub):
    hub.update_scalars({"a": 1, "b": {"value": 6, "count": 3}, "c": np.float32(0.5)})
    hub.update_scalars({"b": {"value": 2}})
    assert hub.get_scalar("a").current() == 1.0
    assert hub.get_scalar("b").mean() == pytest.approx(8 / 4)
    assert hub.get_scalar("c").current() == 0.5
    with pytest.raises(KeyError, match="'value'"):
        hub.update_scalars({"d": {"count": 1}})
    with pytest.raises(TypeError, match="must be a dict"):
        hub.update_scalars([("a", 1)])  # type: ignore[arg-type]


def test_tensor_scalars_are_converted_when_read_not_when_logged(hub: MessageHub):
    loss = (torch.ones(3, requires_grad=True) * 2).sum()
    hub.update_scalar("train/loss", loss)
    norm = torch.tensor(1.0)
    hub.update_scalar("train/grad_norm", norm)
    # still the logged tensor: a change made before the first read is visible...
    norm.fill_(5.0)
    assert hub.get_scalar("train/grad_norm").current() == 5.0
    # ...and the read turned it into a number, so later changes are not
    norm.fill_(7.0)
    assert hub.get_scalar("train/grad_norm").current() == 5.0
    assert hub.get_scalar("train/loss").current() == 6.0


def test_many_unread_tensors_are_converted_in_batches(hub: MessageHub):
    t = torch.tensor(3.0)
    for _ in range(1024):  # the pending limit: all converted on the last update
        hub.update_scalar("x", t)
    t.fill_(-1.0)
    values, _ = hub.get_scalar("x").data
    assert values.shape == (1024,) and (values == 3.0).all()


def test_tensor_scalars_of_several_dtypes_and_shapes(hub: MessageHub):
    hub.update_scalar("v", torch.tensor(0.1, dtype=torch.float16))
    hub.update_scalar("v", torch.tensor([2], dtype=torch.int64))
    hub.update_scalar("v", torch.tensor([[0.25]], dtype=torch.float64))
    hub.update_scalar("v", torch.tensor(float("inf")))
    hub.update_scalar("v", 1)
    values, _ = hub.get_scalar("v").data
    assert values.tolist() == [
        float(torch.tensor(0.1, dtype=torch.float16)),
        2.0,
        0.25,
        math.inf,
        1.0,
    ]


def test_bad_scalars_are_rejected_with_the_key(hub: MessageHub):
    with pytest.raises(ValueError, match="'x'.*exactly one element"):
        hub.update_scalar("x", torch.ones(2))
    with pytest.raises(TypeError, match="'y'.*str"):
        hub.update_scalar("y", "1.0")
    with pytest.raises(TypeError, match="count must be an int or a float"):
        hub.update_scalar("z", 1.0, count="2")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="count must be a non-negative number"):
        hub.update_scalar("z", 1.0, count=-1)
    with pytest.raises(KeyError, match="missing is not found"):
        hub.get_scalar("missing")
    with pytest.raises(ValueError, match="empty"):
        HistoryBuffer().current()


def test_history_keeps_the_last_max_length_values():
    buf = HistoryBuffer(max_length=3)
    for v in range(10):
        buf.update(v)
    assert buf.data[0].tolist() == [7, 8, 9]
    assert len(buf) == 3
    assert buf.mean() == 8.0
    with pytest.raises(ValueError, match="same length"):
        HistoryBuffer([1, 2], [1])


# -------------------------------------------------------------------------- runtime info
def test_runtime_info(hub: MessageHub):
    hub.update_info("iter", 3)
    hub.update_info("iter", 4)
    hub.update_info_dict({"epoch": 1, "max_iters": 10})
    assert hub.get_info("iter") == 4
    assert hub.get_info("nothing") is None
    assert hub.get_info("nothing", default=-1) == -1
    assert hub.runtime_info == {"iter": 4, "epoch": 1, "max_iters": 10}
    assert hub.pop_info("epoch") == 1
    assert hub.pop_info("epoch", "gone") == "gone"


def test_resumed_flag_of_a_key_cannot_change(hub: MessageHub):
    hub.update_scalar("a", 1, resumed=False)
    with pytest.raises(ValueError, match="resumed"):
        hub.update_scalar("a", 1)
    hub.update_info("b", 1)
    with pytest.raises(ValueError, match="resumed"):
        hub.update_info("b", 1, resumed=False)


# ---------------------------------------------------------------------------- state dict
def test_state_dict_is_plain_and_survives_a_weights_only_load(hub: MessageHub, tmp_path, caplog):
    hub.update_scalar("train/loss", torch.tensor(2.0, requires_grad=True) * 1)
    hub.update_scalar("train/loss", 4.0, count=2)
    hub.update_scalar("train/time", 0.1, resumed=False)
    hub.update_info("iter", 7)
    hub.update_info("cfg", "model = dict(type='X')")
    hub.update_info("keep_ckpt_ids", collections.deque([2, 4]))
    hub.update_info("best_score", np.float64(0.75))
    hub.update_info("scale", torch.tensor(2.0))
    hub.update_info("dataset_meta", {"classes": ("cat", "dog"), "palette": [[0, 0, 255]]})
    hub.update_info("not_saved", 1, resumed=False)
    hub.update_info("logger", logging.getLogger("x"))  # not plain: left out, with a warning

    with caplog.at_level(logging.WARNING, logger="fastopt.logging"):
        state = hub.state_dict()
    assert "'logger' is not saved" in caplog.text
    _assert_plain(state)
    assert set(state["log_scalars"]) == {"train/loss"}
    assert state["runtime_info"] == {
        "iter": 7,
        "cfg": "model = dict(type='X')",
        "keep_ckpt_ids": [2, 4],
        "best_score": 0.75,
        "scale": 2.0,
        "dataset_meta": {"classes": ("cat", "dog"), "palette": [[0, 0, 255]]},
    }

    path = tmp_path / "hub.pth"
    torch.save({"message_hub": state}, path)
    loaded = torch.load(path, weights_only=True)["message_hub"]

    other = MessageHub(name="restored")
    other.load_state_dict(loaded)
    assert other.get_scalar("train/loss").data[0].tolist() == [2.0, 4.0]
    assert other.get_scalar("train/loss").mean() == pytest.approx(6 / 3)
    assert other.get_info("iter") == 7
    assert other.get_info("keep_ckpt_ids") == [2, 4]
    assert "train/time" not in other.log_scalars and other.get_info("not_saved") is None
    # what was restored is saved again
    assert other.state_dict() == loaded


def test_load_state_dict_requires_all_parts(hub: MessageHub):
    with pytest.raises(KeyError, match="resumed_keys"):
        hub.load_state_dict({"log_scalars": {}, "runtime_info": {}})


def test_constructor_checks_its_inputs():
    with pytest.raises(TypeError, match="HistoryBuffer"):
        MessageHub("h", log_scalars={"a": [1, 2]})  # type: ignore[dict-item]
    with pytest.raises(KeyError, match="neither"):
        MessageHub("h", resumed_keys={"a": True})
    hub = MessageHub("h", log_scalars={"a": HistoryBuffer([1.0], [1])}, resumed_keys={"a": True})
    assert hub.get_scalar("a").current() == 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert repr(hub) == "MessageHub(name='h', scalars=['a'], info=[])"


# --------------------------------------------------- MMEngine behaviours (issue 20, §4)
def test_counts_may_be_floats_numpy_scalars_and_one_element_arrays():
    buf = HistoryBuffer([2.0, 3.0], np.array([0.5, 1.5]))  # count arrays, as MMEngine takes
    buf.update(4.0, 2.0)
    buf.update(1.0, np.int64(1))
    buf.update(5.0, torch.tensor([2.5]))
    values, counts = buf.data
    assert values.tolist() == [2.0, 3.0, 4.0, 1.0, 5.0]
    assert counts.dtype == np.float64 and counts.tolist() == [0.5, 1.5, 2.0, 1.0, 2.5]
    assert buf.mean() == pytest.approx(15.0 / 7.5)
    assert buf.mean(2) == pytest.approx(6.0 / 3.5)
    # integer counts keep an integer array
    assert HistoryBuffer([1.0, 2.0], [1, 3]).data[1].dtype == np.int64
    with pytest.raises(ValueError, match="exactly one element"):
        buf.update(1.0, np.ones(2))
    with pytest.raises(ValueError, match="non-negative"):
        buf.update(1.0, float("nan"))


def test_a_history_longer_than_max_length_keeps_the_newest_with_a_warning():
    with pytest.warns(UserWarning, match="exceeds the max_length"):
        buf = HistoryBuffer(list(range(5)), [1] * 5, max_length=3)
    assert buf.data[0].tolist() == [2, 3, 4]


def test_register_statistics_adds_a_statistic_called_by_name():
    def weighted_last_mean(self: HistoryBuffer, window_size: int, weights: list) -> float:
        # written as in MMEngine's docstring, on MMEngine's attribute names
        values = self._log_history[-window_size:]
        return float((values * np.array(weights)).sum() / self._count_history[-window_size:].sum())

    try:
        assert HistoryBuffer.register_statistics(weighted_last_mean) is weighted_last_mean
        buf = HistoryBuffer([1.0, 2.0, 4.0], [1, 1, 2])
        assert buf.statistics("weighted_last_mean", 2, [1.0, 0.5]) == pytest.approx(4.0 / 3)
        assert buf.statistics("mean") == buf.mean()  # the built-in ones still work
        with pytest.raises(ValueError, match="'weighted_last_mean' is already registered"):
            HistoryBuffer.register_statistics(weighted_last_mean)
    finally:
        HistoryBuffer._statistics_methods.pop("weighted_last_mean", None)

    def mean(self: HistoryBuffer) -> float:
        return 0.0

    with pytest.raises(ValueError, match="'mean' is already registered"):
        HistoryBuffer.register_statistics(mean)
    with pytest.raises(KeyError, match="register_statistics"):
        HistoryBuffer([1.0], [1]).statistics("weighted_last_mean", 1, [1.0])


class _NoDeepCopy:
    def __deepcopy__(self, memo: dict) -> None:
        raise NotImplementedError("cannot be copied")


def test_load_state_dict_keeps_info_that_cannot_be_deep_copied(hub: MessageHub, caplog):
    obj = _NoDeepCopy()
    state = {
        "log_scalars": {"loss": HistoryBuffer([0.5], [1])},
        "runtime_info": {"obj": obj, "iter": 3},
        "resumed_keys": {"loss": True, "obj": True, "iter": True, "gone": True},
    }
    with caplog.at_level(logging.WARNING, logger="fastopt.logging"):
        hub.load_state_dict(state)
    assert hub.get_info("obj") is obj  # the object itself, as MMEngine keeps it
    assert hub.get_info("iter") == 3
    assert "'obj' (_NoDeepCopy) cannot be deep-copied" in caplog.text
    assert "resumed key 'gone'" in caplog.text
    assert hub.get_scalar("loss").current() == 0.5


def test_load_state_dict_from_a_message_hub(hub: MessageHub):
    source = MessageHub("test_message_hub::source")
    source.update_scalar("loss", 2.0)
    source.update_info("epoch", 4)
    source.update_info("note", "x", resumed=False)
    hub.load_state_dict(source)
    assert hub.get_scalar("loss").current() == 2.0
    assert hub.get_scalar("loss") is not source.get_scalar("loss")  # copied
    assert (hub.get_info("epoch"), hub.get_info("note")) == (4, "x")
    assert "note" not in hub.state_dict()["runtime_info"]  # still not resumed
