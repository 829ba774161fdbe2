"""Fused optimizers over FSDP2 (``fully_shard``) params: DTensor shards, 2 processes, gloo, CPU.

One spawn runs every case (a fresh model per case) and saves the gathered params; the test
compares them with one process training the unsharded model on the whole batch, and with
torch.optim on the same FSDP2 model.
"""

from __future__ import annotations

import os

import dist_run
import pytest
import torch

import fastopt

STEPS = 5
WORLD = 2
BATCH = 8  # per process

CASES = {
    "adamw": (fastopt.FusedAdamW, torch.optim.AdamW, dict(lr=0.05, weight_decay=0.1), None),
    "adamw-clip": (fastopt.FusedAdamW, torch.optim.AdamW, dict(lr=0.05), 0.5),
    "sgd-momentum-clip": (
        fastopt.FusedSGD,
        torch.optim.SGD,
        dict(lr=0.1, momentum=0.9, nesterov=True),
        0.5,
    ),
    "adam-amsgrad": (fastopt.FusedAdam, torch.optim.Adam, dict(lr=0.05, amsgrad=True), None),
    # per-tensor norms of sharded tensors: one all-reduce of the shards' sums; the reference is
    # the rule written per param (its torch.norm of a DTensor gathers every tensor's norm)
    "lars": (
        fastopt.FusedLARS,
        "ReferenceLARS",
        dict(lr=0.1, momentum=0.9, weight_decay=1e-3),
        None,
    ),
    "lars-clip": (fastopt.FusedLARS, "ReferenceLARS", dict(lr=0.1, weight_decay=1e-3), 0.5),
    "lamb-clip": (fastopt.FusedLAMB, "ReferenceLamb", dict(lr=0.01, weight_decay=0.01), 0.5),
}
# FSDP2's bf16 mixed precision (param_dtype bfloat16, fp32 reduce): fp32 params and grads
BF16_CASES = ("adamw-clip", "lars-clip", "lamb-clip")


def _reference(torch_cls):
    if isinstance(torch_cls, str):
        from fastopt.benchmark import references

        return getattr(references, torch_cls)
    return torch_cls


def _model():
    torch.manual_seed(0)
    # 7 rows do not split evenly over 2 processes; the 1-row bias leaves one shard empty
    return torch.nn.Sequential(
        torch.nn.Linear(6, 7), torch.nn.Tanh(), torch.nn.Linear(7, 5), torch.nn.Linear(5, 1)
    )


def _batch(step):
    g = torch.Generator().manual_seed(100 + step)
    return torch.randn(WORLD * BATCH, 6, generator=g), torch.randn(WORLD * BATCH, 1, generator=g)


def _loss(model, x, y):
    return torch.nn.functional.mse_loss(model(x), y)


def _train(model, opt, clip, rank=None):
    """STEPS steps; under FSDP2 each rank takes its half of the batch (grads are averaged)."""
    for step in range(STEPS):
        x, y = _batch(step)
        if rank is not None:
            x, y = x[rank * BATCH : (rank + 1) * BATCH], y[rank * BATCH : (rank + 1) * BATCH]
        _loss(model, x, y).backward()
        if clip is None:
            opt.step()
        elif isinstance(opt, fastopt.optim.base.FusedOptimizer):
            opt.fused_step(max_norm=clip)
        else:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            opt.step()
        opt.zero_grad()


def _sharded_model(bf16=False):
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    kw = dict(mp_policy=mp) if bf16 else {}
    model = _model()
    for layer in model:
        if isinstance(layer, torch.nn.Linear):
            fully_shard(layer, **kw)
    fully_shard(model, **kw)
    return model


def _full(model):
    return [p.full_tensor().detach().clone() for p in model.parameters()]


def _worker(rank, world, out_dir):
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict
    from torch.distributed.tensor import DTensor

    results = {}
    runs = [(name, False) for name in CASES] + [(name, True) for name in BF16_CASES]
    for name, bf16 in runs:
        fused_cls, torch_cls, kw, clip = CASES[name]
        model = _sharded_model(bf16)
        opt = fused_cls(model.parameters(), **kw)
        _train(model, opt, clip, rank)
        # states are DTensors laid out as their params, as torch.optim makes them
        for p in model.parameters():
            for key, value in opt.state[p].items():
                if key != "step":
                    assert isinstance(value, DTensor) and value.placements == p.placements
        osd = get_optimizer_state_dict(model, opt)
        assert len(osd["state"]) == 6, osd["state"].keys()
        ref_model = _sharded_model(bf16)
        ref = _reference(torch_cls)(ref_model.parameters(), **kw)
        _train(ref_model, ref, clip, rank)
        results[name + ("-bf16" if bf16 else "")] = (_full(model), _full(ref_model))

    # the reported case: FusedAdamW(model.parameters()).step() after one backward
    model = _sharded_model()
    x, y = _batch(0)
    _loss(
        model, x[rank * BATCH : (rank + 1) * BATCH], y[rank * BATCH : (rank + 1) * BATCH]
    ).backward()
    fastopt.FusedAdamW(model.parameters()).step()
    results["first-step"] = (_full(model), None)

    # AMP: an inf in one rank's shard skips the step on every rank (one all-reduce)
    model = _sharded_model()
    x, y = _batch(0)
    _loss(
        model, x[rank * BATCH : (rank + 1) * BATCH], y[rank * BATCH : (rank + 1) * BATCH]
    ).backward()
    opt = fastopt.FusedAdamW(model.parameters(), lr=0.1)
    if rank == 1:
        next(model.parameters()).grad._local_tensor[0, 0] = float("inf")
    before = _full(model)
    found_inf = torch.zeros(())
    opt.fused_step(loss_scale=torch.full((), 2.0), found_inf=found_inf, max_norm=1.0)
    assert found_inf.item() == 1.0, (rank, found_inf)
    assert all(torch.equal(a, b) for a, b in zip(before, _full(model)))

    # sharded params on two meshes next to a plain param (whole on every process): each
    # mesh's partials all-reduced over its group, the plain one counted once; equal to one
    # process stepping the whole tensors
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh_a = init_device_mesh("cpu", (WORLD,), mesh_dim_names=("a",))
    mesh_b = init_device_mesh("cpu", (WORLD,), mesh_dim_names=("b",))
    for name, kw in (("FusedLARS", dict(lr=0.1, momentum=0.9)), ("FusedAdamW", {})):
        model = _model()
        fully_shard(model[0], mesh=mesh_a)
        fully_shard(model[2], mesh=mesh_b)
        fully_shard(model[3], mesh=mesh_b)
        extra = torch.nn.Parameter(torch.linspace(-1.0, 1.0, 3))
        whole = _model()
        whole_extra = torch.nn.Parameter(extra.detach().clone())
        opt = getattr(fastopt, name)([*model.parameters(), extra], **kw)
        ref = getattr(fastopt, name)([*whole.parameters(), whole_extra], **kw)
        for step in range(3):
            x, y = _batch(step)
            opt.zero_grad()
            _loss(model, x, y).backward()
            extra.grad = torch.full((3,), 0.7 + step)
            # the reference steps the whole tensors with the same grads
            for p, q in zip(model.parameters(), whole.parameters()):
                q.grad = p.grad.full_tensor().clone()
            whole_extra.grad = extra.grad.clone()
            opt.fused_step(max_norm=0.5)
            ref.fused_step(max_norm=0.5)
        for p, q in zip(model.parameters(), whole.parameters()):
            torch.testing.assert_close(p.full_tensor(), q.detach(), rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(extra.detach(), whole_extra.detach(), rtol=1e-6, atol=1e-7)
    if rank == 0:
        torch.save(results, os.path.join(out_dir, "results.pt"))


@pytest.fixture(scope="module")
def fsdp2_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("fsdp2")
    dist_run.spawn(_worker, WORLD, str(out))
    return torch.load(out / "results.pt", weights_only=True)


@pytest.mark.dist
@pytest.mark.parametrize("case", list(CASES))
def test_fsdp2_equals_one_process_and_torch(fsdp2_results, case):
    fused_cls, torch_cls, kw, clip = CASES[case]
    model = _model()
    opt = fused_cls(model.parameters(), **kw)
    _train(model, opt, clip)
    sharded, torch_sharded = fsdp2_results[case]
    # the reduce-scatter averages the two halves' grads in another order than one process's
    # backward sums the whole batch: equal to float32 rounding, not bitwise
    for a, b, c in zip(sharded, model.parameters(), torch_sharded):
        torch.testing.assert_close(a, b.detach(), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(a, c, rtol=1e-5, atol=1e-6)


@pytest.mark.dist
@pytest.mark.parametrize("case", BF16_CASES)
def test_fsdp2_bf16_mixed_precision_equals_the_reference(fsdp2_results, case):
    """Under bf16 mixed precision the grads come from bf16 compute: the fused step equals the
    reference optimizer on the same sharded model to float32 rounding, and stays within bf16
    rounding of the fp32 one-process run."""
    sharded, reference = fsdp2_results[case + "-bf16"]
    fp32, _ = fsdp2_results[case]
    assert not all(torch.equal(a, c) for a, c in zip(sharded, fp32))  # bf16 compute did run
    for a, b, c in zip(sharded, reference, fp32):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(a, c, rtol=0.0, atol=0.05)


@pytest.mark.dist
def test_fsdp2_first_step_of_the_reported_case(fsdp2_results):
    model = _model()
    _loss(model, *_batch(0)).backward()
    fastopt.FusedAdamW(model.parameters()).step()
    for a, b in zip(fsdp2_results["first-step"][0], model.parameters()):
        torch.testing.assert_close(a, b.detach(), rtol=1e-5, atol=1e-6)


def test_fully_shard_config_errors_name_the_argument():
    from fastopt.registry import MODEL_WRAPPERS

    model = _model()
    with pytest.raises(ValueError, match=r"shard_modules \['blocks\.\*'\] match no module"):
        MODEL_WRAPPERS.build(dict(type="FullyShard", shard_modules=["blocks.*"], module=model))
    with pytest.raises(TypeError, match="shard_modules must be a list"):
        MODEL_WRAPPERS.build(dict(type="FullyShard", shard_modules="0", module=model))
    with pytest.raises(ValueError, match="mp_policy.param_dtype='bf16' is not a torch dtype"):
        MODEL_WRAPPERS.build(
            dict(type="FullyShard", mp_policy=dict(param_dtype="bf16"), module=model)
        )
    with pytest.raises(ValueError, match=r"mp_policy has no \['param_type'\]"):
        MODEL_WRAPPERS.build(
            dict(type="FullyShard", mp_policy=dict(param_type="bfloat16"), module=model)
        )


def test_shard_modules_pick_outermost_matches_by_name_or_class():
    from fastopt.model.fsdp import _targets

    model = torch.nn.Sequential(torch.nn.Sequential(torch.nn.Linear(2, 2)), torch.nn.Linear(2, 2))
    assert [n for n, _ in _targets(model, ["*"])] == ["0", "1"]  # not 0.0 inside 0
    assert [n for n, _ in _targets(model, ["Linear"])] == ["0.0", "1"]


def _write_sharded_state(directory):
    """A sharded state directory as a 1-process run writes it (no process group)."""
    import torch.distributed.checkpoint as dcp

    model = _model()
    opt = fastopt.FusedAdamW(model.parameters(), lr=0.1)
    _loss(model, *_batch(0)).backward()
    opt.step()
    from fastopt.model.fsdp import _states

    dcp.save(_states(model, opt), checkpoint_id=str(directory), no_dist=True)
    return model, opt


def test_sharded_state_directory_reads_whole_and_checks_shapes(tmp_path):
    from fastopt.model.fsdp import (
        load_sharded_model_state,
        load_sharded_optimizer_state,
        read_sharded_model_state,
        sharded_model_placeholders,
    )

    model, opt = _write_sharded_state(tmp_path / "epoch_1.dcp")
    # published weights: the whole state dict, read in one process
    weights = read_sharded_model_state(str(tmp_path / "epoch_1.dcp"))
    assert weights.keys() == model.state_dict().keys()
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())
    # shapes from the metadata alone (the train command's fit check)
    shapes = sharded_model_placeholders(str(tmp_path / "epoch_1.dcp"))
    assert {k: v.shape for k, v in shapes.items()} == {
        k: v.shape for k, v in model.state_dict().items()
    }
    assert all(v.device.type == "meta" for v in shapes.values())
    # loaded into a fresh model and optimizer: the same states
    fresh = _model()
    with torch.no_grad():
        for p in fresh.parameters():
            p.zero_()
    fresh_opt = fastopt.FusedAdamW(fresh.parameters(), lr=0.1)
    result = load_sharded_model_state(str(tmp_path / "epoch_1.dcp"), fresh, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    load_sharded_optimizer_state(str(tmp_path / "epoch_1.dcp"), fresh, fresh_opt)
    for a, b in zip(fresh.parameters(), model.parameters()):
        assert torch.equal(a, b)
        for key in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(fresh_opt.state[a][key], opt.state[b][key]), key
    with pytest.raises(FileNotFoundError, match="sharded state .*missing"):
        load_sharded_model_state(str(tmp_path / "nothing.dcp"), fresh, strict=True)


def test_removing_a_checkpoint_removes_its_sharded_state(tmp_path):
    from fastopt.hooks.checkpoint_hook import CheckpointHook

    _write_sharded_state(tmp_path / "epoch_1.dcp")
    (tmp_path / "epoch_1.pth").write_bytes(b"checkpoint")
    assert CheckpointHook._remove_unless_current(str(tmp_path / "epoch_1.pth"), [])
    assert not (tmp_path / "epoch_1.pth").exists()
    assert not (tmp_path / "epoch_1.dcp").exists()


def test_state_dict_type_is_checked():
    from fastopt.registry import MODEL_WRAPPERS

    with pytest.raises(ValueError, match="state_dict_type must be one of \\('full', 'sharded'\\)"):
        MODEL_WRAPPERS.build(dict(type="FullyShard", state_dict_type="local", module=_model()))
