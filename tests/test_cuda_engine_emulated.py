"""The CUDA engine without a GPU: its kernels and launch plans run under the host emulation
(fastopt._C_simt) and are compared with torch.optim and, bit for bit, with the CPU engine.

The elementwise update is the same functor code in both engines (and nvcc compiles it with
--fmad=false), so optimizers without a per-tensor reduction match the CPU engine exactly; norms
come from a different reduction tree, so LARS, LAMB and clipped steps match to the last bits.
"""

from __future__ import annotations

import math

import pytest
import torch
from cuda_cases import CHUNK, SHAPES
from optim_reference import CASES, ONE_CASE_EACH, TORCH_FOR_LOOP, engine, grouped

import fastopt
import fastopt._ext
from fastopt import _C as CPU
from fastopt import catalog
from fastopt.ops import catalog as op_catalog

SIMT = pytest.importorskip("fastopt._C_simt", reason="fastopt._C_simt is not built")


@pytest.fixture
def limits():
    """Set the CUDA engine's launch limits for plans built in a test, restoring them after."""
    saved = SIMT.cuda_launch_limits()
    yield lambda **kw: SIMT.set_cuda_launch_limits(**kw)
    SIMT.set_cuda_launch_limits(**saved)


@pytest.fixture
def hooks():
    yield SIMT.simt_hooks
    SIMT.simt_hooks()


def make_params(seed=0, dtype=torch.float32, shapes=SHAPES, grad_dtype=None, make=None):
    g = torch.Generator().manual_seed(seed)
    out = []
    for s in shapes:
        t = torch.randn(s, generator=g).to(dtype)
        p = torch.nn.Parameter(make(t) if make is not None else t)
        if grad_dtype is not None and grad_dtype != dtype:
            p.grad_dtype = grad_dtype
        out.append(p)
    return out


def train(module, name, kwargs, steps=6, seed=0, groups=True, step_kwargs=None, **param_kw):
    """Steps a fused optimizer built with `module`; returns (params, optimizer)."""
    state_dtype = param_kw.pop("state_dtype", torch.float32)
    with engine(module):
        params = make_params(seed, **param_kw)
        opt = getattr(fastopt, name)(
            grouped(name, params) if groups else params, state_dtype=state_dtype, **kwargs
        )
        g = torch.Generator().manual_seed(seed + 1)
        for i in range(steps):
            for p in params:
                dtype = getattr(p, "grad_dtype", None) or p.dtype
                p.grad = torch.randn(p.shape, generator=g).to(dtype)
            if step_kwargs is None:
                opt.step()
            else:
                opt.fused_step(**step_kwargs(i))
    return params, opt


def assert_same(a, b, exact=True):
    (pa, oa), (pb, ob) = a, b
    for x, y in zip(pa, pb):
        compare(x.detach(), y.detach(), exact)
        sa, sb = oa.state.get(x, {}), ob.state.get(y, {})
        assert set(sa) == set(sb)
        for key in sa:
            compare(sa[key], sb[key], exact)


def compare(x, y, exact):
    assert x.dtype == y.dtype and x.shape == y.shape
    if exact:
        assert torch.equal(x, y), f"max diff {(x.float() - y.float()).abs().max()}"
    else:  # a different reduction tree: the last bits of norms (and of what they scale)
        tol = 1e-5 if x.dtype == torch.float32 else 1e-2
        torch.testing.assert_close(x.float(), y.float(), rtol=tol, atol=tol * 1e-1)


def exact_for(name):
    """Ops with a per-tensor reduction (LARS, LAMB) sum in a different tree on each engine."""
    return not op_catalog.op(catalog.get(name).op).reductions


# ---- every optimizer, every element type combination -------------------------------------------


@pytest.mark.parametrize("case", sorted(CASES))
def test_fp32_matches_torch_and_the_cpu_engine(case):
    name, kwargs = CASES[case]
    simt = train(SIMT, name, kwargs)
    assert simt[1]._plan.engine.backend == "simt"
    assert_same(simt, train(CPU, name, kwargs), exact=exact_for(name))
    ref_params = make_params(0)
    ref = TORCH_FOR_LOOP[name](grouped(name, ref_params), **kwargs)
    g = torch.Generator().manual_seed(1)
    for _ in range(6):
        for p in ref_params:
            p.grad = torch.randn(p.shape, generator=g)
        ref.step()
    for a, b in zip(simt[0], ref_params):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=2e-5, atol=2e-6)


TYPES = [  # (param, grad, state)
    (torch.bfloat16, torch.bfloat16, torch.float32),
    (torch.bfloat16, torch.float32, torch.float32),
    (torch.bfloat16, torch.bfloat16, "param"),
    (torch.bfloat16, torch.float32, "param"),
    (torch.float16, torch.float16, torch.float32),
    (torch.float16, torch.float32, "param"),
    (torch.float16, torch.float16, "param"),
]


@pytest.mark.parametrize("types", TYPES, ids=lambda t: "-".join(str(x).split(".")[-1] for x in t))
@pytest.mark.parametrize("case", ONE_CASE_EACH)
def test_low_precision_matches_the_cpu_engine(case, types):
    name, kwargs = CASES[case]
    dtype, grad_dtype, state_dtype = types
    kw = dict(dtype=dtype, grad_dtype=grad_dtype, state_dtype=state_dtype)
    simt = train(SIMT, name, kwargs, **kw)
    cpu = train(CPU, name, kwargs, **kw)
    assert_same(simt, cpu, exact=exact_for(name))
    for p in simt[0]:
        assert p.dtype == dtype


# ---- launch plans: vector and scalar chunks, several launches, huge tensors --------------------


def kernels(plan, prefix, **pipeline):
    return [r for r in plan.engine.launches(**pipeline) if r["kernel"].startswith(prefix)]


def misaligned(t):
    """The same values at a 4-byte offset: no 16-byte accesses for this tensor."""
    buf = torch.empty(t.numel() + 1, dtype=t.dtype)
    view = buf[1:].view(t.shape)
    view.copy_(t)
    return view


@pytest.mark.parametrize("case", ["sgd_momentum", "adamw_amsgrad", "lars"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_vector_and_scalar_chunks(case, dtype):
    name, kwargs = CASES[case]
    for make, path in ((None, "vector_chunks"), (misaligned, "scalar_chunks")):
        simt = train(SIMT, name, kwargs, dtype=dtype, make=make)
        assert_same(simt, train(CPU, name, kwargs, dtype=dtype, make=make), exact=exact_for(name))
        records = kernels(simt[1]._plan, "update")
        other = "scalar_chunks" if path == "vector_chunks" else "vector_chunks"
        assert sum(r[path] for r in records) > 0 and sum(r[other] for r in records) == 0
        if name == "FusedLARS":
            norms = kernels(simt[1]._plan, "param_norms")
            assert sum(r[path] for r in norms) > 0 and sum(r[other] for r in norms) == 0


def test_vector_path_is_decided_per_chunk(limits):
    """Chunks of 1026 elements: every other chunk of a float32 tensor starts 8 bytes off."""
    limits(chunk_elems=1026)
    shapes = [(1026 * 6 + 5,), (3,)]
    name, kwargs = CASES["adamw"]
    simt = train(SIMT, name, kwargs, shapes=shapes, groups=False)
    [update] = kernels(simt[1]._plan, "update")
    assert update["blocks"] == 8 and update["vector_chunks"] == 5 and update["scalar_chunks"] == 3
    assert_same(simt, train(CPU, name, kwargs, shapes=shapes, groups=False))


@pytest.mark.parametrize("case", ["sgd_nesterov", "adam_l2_amsgrad", "lars_nesterov"])
def test_multi_launch_plans(limits, case):
    """Few tensors and blocks per launch: every kernel runs as several launches."""
    limits(max_tensors=3, max_blocks=4)
    name, kwargs = CASES[case]
    shapes = [(n,) for n in (3, 70_000, 1, 5000, 130_000, 7, 0, 64, 9999, 2, 66_000)]
    simt = train(SIMT, name, kwargs, shapes=shapes, steps=4)
    plan = simt[1]._plan
    for prefix in ("update", "prepare") + (("param_norms", "grad_norms") if "lars" in case else ()):
        records = kernels(plan, prefix)
        assert len(records) >= 4, prefix
        assert all(r["tensors"] <= 3 for r in records)
        if prefix != "prepare":
            assert all(r["blocks"] <= 4 or r["tensors"] == 1 for r in records)
    assert_same(simt, train(CPU, name, kwargs, shapes=shapes, steps=4), exact=exact_for(name))


@pytest.mark.parametrize("name", ["FusedSGD", "FusedAdamW", "FusedLARS"])
def test_one_group_per_param_fills_the_parameter_space(name):
    """MMEngine's layout (a group per param): hundreds of tensors per launch, not torch's ~40."""
    n = 1500
    with engine(SIMT):
        params = [torch.nn.Parameter(torch.full((3,), float(i + 1))) for i in range(n)]
        opt = getattr(fastopt, name)(
            [{"params": [p], "lr": 1e-3 * (1 + i % 7)} for i, p in enumerate(params)], lr=0.1
        )
        for p in params:
            p.grad = torch.ones(3)
        opt.step()
    for prefix in ("update", "prepare"):
        records = kernels(opt._plan, prefix)
        assert sum(r["tensors"] for r in records) == n
        assert min(r["tensors"] for r in records[:-1]) >= 300
        assert max(r["param_bytes"] for r in records) <= SIMT.build_info()["cuda_param_bytes"]
    with engine(CPU):
        ref = [torch.nn.Parameter(torch.full((3,), float(i + 1))) for i in range(n)]
        ref_opt = getattr(fastopt, name)(
            [{"params": [p], "lr": 1e-3 * (1 + i % 7)} for i, p in enumerate(ref)], lr=0.1
        )
        for p in ref:
            p.grad = torch.ones(3)
        ref_opt.step()
    for a, b in zip(params, ref):
        compare(a.detach(), b.detach(), exact=exact_for(name))


@pytest.mark.parametrize("case", ["sgd_momentum", "adamw_amsgrad", "lars"])
def test_huge_tensor_chunk_arithmetic_with_small_data(case, hooks):
    """A tensor of 2^32 + 3 * 65536 + 77 elements whose last three chunks are real memory.

    The table holds a base pointer that far before the real buffers; the emulation skips the
    blocks of the earlier chunks, so only 64-bit index arithmetic can reach the right elements.
    """
    name, kwargs = CASES[case]
    numel = 2**32 + 3 * CHUNK + 77
    chunks = -(-numel // CHUNK)
    first = chunks - 3  # first real chunk
    offset = first * CHUNK  # elements before the real memory
    real = numel - offset
    g = torch.Generator().manual_seed(7)
    values, grads = torch.randn(real, generator=g), torch.randn(real, generator=g)

    p = torch.nn.Parameter(values.clone())
    p.grad = grads.clone()
    opt = getattr(fastopt, name)([p], **kwargs)  # its param group, with every key
    names = opt._state_spec(opt.param_groups[0]).names
    states = [torch.zeros(real) for _ in names]
    steps = torch.zeros(1)
    fake = [t.data_ptr() - 4 * offset for t in [p.detach(), *states]]
    entry = SIMT.Entry(
        param=fake[0],
        states=fake[1:] + [0] * (SIMT.catalog()["max_states"] - len(states)),
        numel=numel,
        param_dtype=0,
        grad_dtype=0,
        state_dtype=0,
        group=0,
        step=steps.data_ptr(),
        fresh=1,
        expected_grad_dtype=torch.float32,
    )
    plan = SIMT.Plan(
        opt._kind,
        opt.param_groups,
        {},
        [p],
        [0],
        [0],
        [None],
        [entry],
        [],
        device=torch.device("cpu"),
        check_sizes=False,  # the entry claims 2^32 elements; only the real ones are run
    )
    workspace = torch.zeros(plan.workspace_bytes, dtype=torch.uint8)
    plan.bind_workspace(workspace.data_ptr())
    assert plan.refresh()[0] == 0
    plan.set_grad(0, p.grad.data_ptr() - 4 * offset)
    [update] = [r for r in plan.launches() if r["kernel"].startswith("update")]
    assert update["blocks"] == chunks and update["tensors"] == 1
    hooks(skip=["update", "norms"], skip_below=first)
    plan.run(1)

    q = torch.nn.Parameter(values.clone())
    q.grad = grads.clone()
    with engine(CPU):
        ref = getattr(fastopt, name)([q], **kwargs)
        ref.step()
    compare(p.detach(), q.detach(), exact=exact_for(name))
    for key, state in zip(names, states):
        compare(state, ref.state[q][key], exact=exact_for(name))
    if opt._has_step:
        assert steps.item() == 1.0


def test_launch_records_of_huge_tensors(limits):
    """Host-side plan arithmetic for tensors of 3 * 2^31 elements (records only, no data)."""
    limits(max_blocks=1000)
    numel = 3 * 2**31 + 5
    params = [torch.nn.Parameter(torch.zeros(1)) for _ in range(3)]
    opt = fastopt.FusedSGD(params, lr=0.1)
    entries = [
        SIMT.Entry(
            param=p.data_ptr(),
            states=[0] * SIMT.catalog()["max_states"],
            numel=numel,
            param_dtype=0,
            grad_dtype=0,
            state_dtype=0,
            group=0,
            step=0,
            fresh=0,
            expected_grad_dtype=torch.float32,
        )
        for p in params
    ]
    plan = SIMT.Plan(
        "sgd",
        opt.param_groups,
        {},
        params,
        [0, 1, 2],
        [0] * 3,
        [None] * 3,
        entries,
        [],
        check_sizes=False,  # records only: the entries claim 3 * 2^31 elements
    )
    for p in params:
        p.grad = torch.zeros(1)
    assert plan.refresh()[0] == 0
    chunks = -(-numel // CHUNK)
    assert plan.num_chunks == 3 * chunks
    updates = [r for r in plan.launches() if r["kernel"].startswith("update")]
    assert [(r["tensors"], r["blocks"]) for r in updates] == [(1, chunks)] * 3  # never split


# ---- the gradient pipeline on the device ----------------------------------------------------------


def pipeline(norm_type):
    """fused_step arguments of step i: a growing loss scale, clipping, norm_out and found_inf."""
    norm_out, found_inf = torch.zeros(()), torch.zeros(())

    def kwargs(i):
        return dict(
            norm_type=norm_type,
            max_norm=5.0,
            loss_scale=torch.tensor(1024.0 * (i + 1)),
            norm_out=norm_out,
            found_inf=found_inf,
        )

    return kwargs, norm_out, found_inf


@pytest.mark.parametrize("norm_type", [2.0, 1.0, math.inf, 3.0])
@pytest.mark.parametrize("case", ["sgd_momentum", "adamw", "lars"])
def test_pipeline_matches_the_cpu_engine(case, norm_type):
    name, kwargs = CASES[case]
    runs, norms = [], []
    for module in (SIMT, CPU):
        step_kwargs, norm_out, found_inf = pipeline(norm_type)
        runs.append(train(module, name, kwargs, steps=4, step_kwargs=step_kwargs))
        norms.append(norm_out.item())
        assert found_inf.item() == 0.0
    assert norms[0] == pytest.approx(norms[1], rel=1e-6)
    assert_same(*runs, exact=False)


@pytest.mark.parametrize("case", ["sgd_momentum", "adam_l2_amsgrad"])
def test_unscale_without_a_reduction_is_exact(case):
    name, kwargs = CASES[case]
    runs = [
        train(m, name, kwargs, steps=4, step_kwargs=lambda i: {"loss_scale": torch.tensor(2.0**i)})
        for m in (SIMT, CPU)
    ]
    assert_same(*runs)


@pytest.mark.parametrize("bad", [math.inf, math.nan])
@pytest.mark.parametrize("name", ["FusedSGD", "FusedAdamW", "FusedLARS"])
def test_non_finite_grads_skip_the_step_on_the_device(name, bad):
    """A skipped first step leaves params, states, step counts and first-step flags untouched."""
    kwargs = dict(lr=0.1, momentum=0.9, dampening=0.5) if name != "FusedAdamW" else dict(lr=0.1)
    if name == "FusedLARS":
        kwargs.pop("dampening")
    results = {}
    for module in (SIMT, CPU):
        found, norm = torch.zeros(()), torch.zeros(())
        with engine(module):
            p = torch.nn.Parameter(torch.arange(10.0))
            opt = getattr(fastopt, name)([p], **kwargs)
            p.grad = torch.ones(10)
            p.grad[3] = bad
            opt.fused_step(max_norm=1.0, found_inf=found, norm_out=norm)
            assert found.item() == 1.0 and not math.isfinite(norm.item())
            assert torch.equal(p.detach(), torch.arange(10.0))
            if name == "FusedAdamW":
                assert opt.state[p]["step"].item() == 0
            for _ in range(2):
                p.grad = torch.linspace(-1, 1, 10)
                opt.fused_step(max_norm=1.0, found_inf=found)
                assert found.item() == 0.0
        results[module] = (p.detach().clone(), {k: v.clone() for k, v in opt.state[p].items()})
    compare(results[SIMT][0], results[CPU][0], exact=name != "FusedLARS")
    for key, value in results[CPU][1].items():
        compare(results[SIMT][1][key], value, exact=name != "FusedLARS")


@pytest.mark.parametrize("bad", [math.inf, math.nan])
def test_clipping_by_a_non_finite_norm_without_found_inf(bad):
    """As torch's clamp: an inf norm zeroes the grads (inf * 0 = nan where the inf was), a nan
    norm makes every grad nan."""
    results = []
    for module in (SIMT, CPU):
        with engine(module):
            p = torch.nn.Parameter(torch.arange(6.0))
            opt = fastopt.FusedSGD([p], lr=0.1)
            p.grad = torch.ones(6)
            p.grad[2] = bad
            opt.fused_step(max_norm=1.0)
        results.append(p.detach())
    assert torch.equal(results[0].isnan(), results[1].isnan())
    assert results[0].isnan().sum().item() == (1 if bad == math.inf else 6)
    assert torch.equal(results[0].nan_to_num(), results[1].nan_to_num())


def test_tensor_norms_match_the_cpu_engine():
    norms = []
    for module in (SIMT, CPU):
        params, opt = train(module, "FusedSGD", dict(lr=0.1), steps=1)
        plan = opt._plan.engine
        for p in params:
            p.grad = torch.linspace(-2, 3, p.numel()).view(p.shape)
        assert plan.refresh()[0] == 0
        norms.append([plan.tensor_norms(w, t, 3.0, 0.5) for w in (0, 1) for t in (0, 1, 2, 3)])
    for a, b in zip(*norms):
        assert a == pytest.approx(b, rel=1e-12)


# ---- device-side step counts and lr, capturable, errors ---------------------------------------------


def test_tensor_lr_is_read_by_the_device():
    """An lr tensor on the params' device is read at run time: in-place updates need no rebuild."""
    schedule = [0.125, 0.0625, 0.0625, 0.015625]  # float32 values: the device reads float32
    results = []
    for lr_tensor in (True, False):
        with engine(SIMT):
            p = torch.nn.Parameter(torch.linspace(-1, 1, 100))
            lr = torch.tensor(schedule[0])
            opt = fastopt.FusedAdamW([p], lr=lr if lr_tensor else schedule[0], capturable=True)
            for i, value in enumerate(schedule):
                if lr_tensor:
                    lr.fill_(value)
                else:
                    opt.param_groups[0]["lr"] = value
                p.grad = torch.cos(torch.arange(100.0) * (i + 1))
                opt.step()
                if i == 0:
                    plan = opt._plan
            assert opt._plan is plan
            assert opt.state[p]["step"].device == p.device
        results.append(p.detach().clone())
    assert torch.equal(results[0], results[1])


def test_capturable_needs_a_cuda_device_on_the_cpu_engine():
    with engine(CPU):
        p = torch.nn.Parameter(torch.zeros(3))
        opt = fastopt.FusedAdam([p], capturable=True)
        p.grad = torch.ones(3)
        with pytest.raises(RuntimeError, match="capturable=True needs params on a CUDA device"):
            opt.step()


def test_a_failing_kernel_is_named_in_the_exception(hooks):
    hooks(fail=["update<adam"])
    with engine(SIMT):
        p = torch.nn.Parameter(torch.zeros(3, dtype=torch.bfloat16))
        opt = fastopt.FusedAdam([p])
        p.grad = torch.ones(3, dtype=torch.bfloat16)
        with pytest.raises(RuntimeError) as err:
            opt.step()
    text = str(err.value)
    assert "CUDA kernel 'update<adam, bfloat16, bfloat16, float32>' failed" in text
    assert "cudaErrorLaunchFailure" in text and "injected" in text


def test_engines_by_device_type():
    assert SIMT.engine_for("cpu") == "simt" and SIMT.engine_for("cuda") is None
    assert CPU.engine_for("cpu") == "cpu"
    assert CPU.engine_for("cuda") == ("cuda" if "cuda" in CPU.build_info()["backends"] else None)
    assert CPU.Plan is not SIMT.Plan
    assert "simt" in fastopt._ext.build_info()["backends"]
