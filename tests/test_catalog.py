"""The optimizer catalog (fastopt.catalog) and the engine's op list (csrc/core/ops.h) agree, and
every place that lists optimizers reads them: adding an optimizer is one entry in each."""

from __future__ import annotations

import inspect

import pytest
import torch

import fastopt
from fastopt import catalog
from fastopt.benchmark.candidates import OPTIMS
from fastopt.commands.bench import OPTIM_NAMES
from fastopt.ops import catalog as engine
from fastopt.registry import OPTIMIZERS

ENTRIES = {o.name: o for o in catalog.CATALOG}


def test_engine_ops_and_catalog_agree() -> None:
    optimizer_ops = {o.op for o in catalog.CATALOG}
    assert optimizer_ops | set(catalog.NON_OPTIMIZER_OPS) == set(engine.ops())
    assert not optimizer_ops & set(catalog.NON_OPTIMIZER_OPS)
    for o in catalog.CATALOG:
        assert o.cls()._kind == o.op, o.name
    for op, path in catalog.NON_OPTIMIZER_OPS.items():
        assert catalog.Target(path).load()._kind == op
        assert not engine.op(op).has_step and not engine.op(op).reductions


def test_names_are_unique() -> None:
    names = [n for o in catalog.CATALOG for n in (o.name, *o.aliases)]
    assert len(names) == len(set(names))
    bench = [o.bench_name for o in catalog.CATALOG]
    assert len(bench) == len(set(bench))


@pytest.mark.parametrize("name", ENTRIES)
def test_class_defaults_cover_the_ops_group_keys(name: str) -> None:
    """Every group key the engine reads (csrc/core/ops.h) is a default of the class, and every
    required one is present in a fresh group."""
    o = ENTRIES[name]
    opt = o.cls()([torch.nn.Parameter(torch.randn(3))], lr=0.01)
    group = opt.param_groups[0]
    for key, required in engine.op(o.op).group_keys().items():
        if required:
            assert key in group, f"{name}: group key {key!r} of op {o.op!r} missing"
    known = set(opt.defaults) | set(engine.op(o.op).group_keys())
    for override in o.group_overrides:
        assert set(override) <= known, f"{name}: overrides {override}"
    for case in o.cases.values():
        assert set(case) <= set(inspect.signature(o.cls()).parameters)


@pytest.mark.parametrize("name", ENTRIES)
def test_state_keys_are_the_ops(name: str) -> None:
    o = ENTRIES[name]
    p = torch.nn.Parameter(torch.randn(5))
    kwargs = next(iter(o.cases.values()))
    opt = o.cls()([p], **kwargs)
    p.grad = torch.randn(5)
    opt.step()
    keys = set(opt.state[p]) - {"step"}
    assert keys <= set(engine.op(o.op).state_keys)
    assert ("step" in opt.state[p]) == engine.op(o.op).has_step


def test_every_name_is_registered_and_exported() -> None:
    for name, cls_name in catalog.registry_names().items():
        assert OPTIMIZERS.get(name) is getattr(fastopt, cls_name), name
    for o in catalog.CATALOG:
        assert getattr(fastopt, o.name) is o.cls()
        assert o.name in fastopt.__all__


def test_mmengine_integration_registers_every_name() -> None:
    pytest.importorskip("mmengine")
    from mmengine.registry import OPTIMIZERS as MM_OPTIMIZERS

    from fastopt.integrations import mmengine as integration

    assert set(integration.OPTIMIZER_NAMES) == set(catalog.registry_names())
    for name, cls_name in catalog.registry_names().items():
        got = MM_OPTIMIZERS.get(name)
        if name in integration.REGISTERED["optimizers"]:
            assert got is getattr(fastopt, cls_name), name
        else:  # a name MMEngine already had (it registers lion-pytorch's Lion) keeps its class
            assert got is not None and got is not getattr(fastopt, cls_name), name
    assert {o.name for o in catalog.CATALOG} <= set(integration.REGISTERED["optimizers"])


def test_benchmark_lists_every_optimizer() -> None:
    assert set(OPTIMS) == {o.bench_name for o in catalog.CATALOG}
    assert OPTIM_NAMES == tuple(OPTIMS)
    for o in catalog.CATALOG:
        assert set(o.peers) <= set(catalog.PEER_IMPLS)
        assert "for-loop" in o.peers, f"{o.name} has no per-param baseline"


def test_references_load() -> None:
    for o in catalog.CATALOG:
        assert issubclass(o.reference.load(), torch.optim.Optimizer), o.name


def test_catalog_errors_name_the_known() -> None:
    with pytest.raises(KeyError, match="FusedAdamW"):
        catalog.get("FusedAdamWW")
    with pytest.raises(KeyError, match="adam"):
        engine.op("adamww")
