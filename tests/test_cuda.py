"""The CUDA engine on a real GPU (marked ``cuda``: skipped without one, see conftest.py).

Every optimizer and dtype against torch.optim on the GPU and against the CPU engine, the
gradient pipeline without host synchronisation, CUDA graph capture and replay with
``capturable=True``, a non-default stream, a second device, misaligned views, launch plans split
by small limits, and a tensor of more than 2^31 elements. Without a GPU the same kernels and
launch plans are tested under the host emulation (test_cuda_engine_emulated.py).
"""

from __future__ import annotations

import math

import pytest
import torch
from optim_reference import CASES, ONE_CASE_EACH, TORCH_FOR_LOOP, grouped
from test_cuda_engine_emulated import SHAPES

import fastopt
from fastopt import _C

pytestmark = pytest.mark.cuda

DEV = torch.device("cuda", 0)


def make(seed, dtype=torch.float32, device=DEV, shapes=SHAPES, make=None):
    g = torch.Generator().manual_seed(seed)
    out = []
    for s in shapes:
        t = torch.randn(s, generator=g).to(dtype).to(device)
        out.append(torch.nn.Parameter(make(t) if make is not None else t))
    return out


def grads(params, seed, dtype=None):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(p.shape, generator=g).to(dtype or p.dtype).to(p.device) for p in params]


def run(name, kwargs, device=DEV, dtype=torch.float32, steps=5, state_dtype=torch.float32, **kw):
    params = make(0, dtype, device, **kw)
    opt = getattr(fastopt, name)(grouped(name, params), state_dtype=state_dtype, **kwargs)
    for i in range(steps):
        for p, g in zip(params, grads(params, i + 1)):
            p.grad = g
        opt.step()
    return params, opt


def test_build_reports_cuda():
    info = _C.build_info()
    assert "cuda" in info["backends"] and "80" in info["cuda_archs"] and "90" in info["cuda_archs"]
    assert _C.engine_for("cuda") == "cuda"


@pytest.mark.parametrize("case", sorted(CASES))
def test_fp32_matches_torch_on_the_gpu(case):
    name, kwargs = CASES[case]
    params, opt = run(name, kwargs)
    assert opt._plan.engine.backend == "cuda"
    ref_params = make(0)
    ref = TORCH_FOR_LOOP[name](grouped(name, ref_params), **kwargs)
    for i in range(5):
        for p, g in zip(ref_params, grads(ref_params, i + 1)):
            p.grad = g
        ref.step()
    for a, b in zip(params, ref_params):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=2e-5, atol=2e-6)
    for p in params:
        if "step" in opt.state[p]:
            assert opt.state[p]["step"].device == p.device


@pytest.mark.parametrize("state_dtype", [torch.float32, "param"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("case", ONE_CASE_EACH)
def test_low_precision_matches_the_cpu_engine(case, dtype, state_dtype):
    """Same functors, no FMA contraction: equal up to the device's pow in the per-tensor scalars."""
    name, kwargs = CASES[case]
    gpu, _ = run(name, kwargs, dtype=dtype, state_dtype=state_dtype)
    cpu, _ = run(name, kwargs, device=torch.device("cpu"), dtype=dtype, state_dtype=state_dtype)
    for a, b in zip(gpu, cpu):
        assert a.dtype == dtype
        torch.testing.assert_close(
            a.detach().cpu().float(), b.detach().float(), rtol=1e-2, atol=1e-3
        )


@pytest.mark.parametrize("case", ["sgd_momentum", "adamw"])
def test_elementwise_update_is_bitwise_the_cpu_engine(case):
    """Without norms and with powers of two, no scalar depends on a device math function."""
    name, kwargs = CASES[case]
    kwargs = dict(kwargs, lr=0.125)
    gpu, _ = run(name, kwargs, steps=1)
    cpu, _ = run(name, kwargs, device=torch.device("cpu"), steps=1)
    if name == "FusedSGD":
        for a, b in zip(gpu, cpu):
            assert torch.equal(a.detach().cpu(), b.detach())
    else:
        for a, b in zip(gpu, cpu):
            torch.testing.assert_close(a.detach().cpu(), b.detach(), rtol=1e-6, atol=1e-7)


def _misaligned(t):
    buf = torch.empty(t.numel() + 1, dtype=t.dtype, device=t.device)
    view = buf[1:].view(t.shape)
    view.copy_(t)
    return view


@pytest.mark.parametrize("case", ["sgd_nesterov", "adamw_amsgrad", "lars"])
def test_misaligned_views_take_the_scalar_path(case):
    name, kwargs = CASES[case]
    aligned, opt = run(name, kwargs)
    scalar, opt2 = run(name, kwargs, make=_misaligned)
    records = [r for r in opt2._plan.engine.launches() if r["kernel"].startswith("update")]
    assert sum(r["scalar_chunks"] for r in records) > 0
    for a, b in zip(aligned, scalar):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-6, atol=1e-7)


def test_multi_launch_plans_on_the_gpu():
    saved = _C.cuda_launch_limits()
    _C.set_cuda_launch_limits(max_tensors=2, max_blocks=3)
    try:
        split, opt = run("FusedAdamW", CASES["adamw"][1])
    finally:
        _C.set_cuda_launch_limits(**saved)
    assert len([r for r in opt._plan.engine.launches() if r["kernel"].startswith("update")]) >= 3
    whole, _ = run("FusedAdamW", CASES["adamw"][1])
    for a, b in zip(split, whole):
        assert torch.equal(a.detach(), b.detach())


@pytest.mark.parametrize("norm_type", [2.0, math.inf])
@pytest.mark.parametrize("case", ["sgd_momentum", "adamw", "lars"])
def test_pipeline_on_the_gpu_without_host_sync(case, norm_type):
    name, kwargs = CASES[case]
    results = []
    for device in (DEV, torch.device("cpu")):
        params = make(0, device=device)
        opt = getattr(fastopt, name)(params, **kwargs)
        norm = torch.zeros((), device=device)
        found = torch.zeros((), device=device)
        scale = torch.tensor(4096.0, device=device)
        gs = [[g * 4096 for g in grads(params, i)] for i in range(4)]
        gs[2][1][0] = math.inf  # step 2 is skipped
        norms = []
        for i in range(4):
            for p, g in zip(params, gs[i]):
                p.grad = g
            if i == 1 and device.type == "cuda":
                torch.cuda.set_sync_debug_mode("error")  # any synchronising torch op raises
            try:
                opt.fused_step(max_norm=1.0, norm_type=norm_type, loss_scale=scale,
                               found_inf=found, norm_out=norm)  # fmt: skip
            finally:
                torch.cuda.set_sync_debug_mode("default")
            norms.append(norm.clone())
        results.append(
            ([p.detach().cpu() for p in params], [n.item() for n in norms], found.item())
        )
    (gpu, gnorms, gfound), (cpu, cnorms, cfound) = results
    assert gfound == cfound == 0.0
    assert math.isinf(gnorms[2]) and math.isinf(cnorms[2])
    assert [gnorms[i] for i in (0, 1, 3)] == pytest.approx([cnorms[i] for i in (0, 1, 3)], rel=1e-5)
    for a, b in zip(gpu, cpu):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["FusedSGD", "FusedAdamW", "FusedLARS"])
def test_cuda_graph_capture_and_replay(name):
    """A captured step (pipeline included) replays with new grads and an lr tensor in place."""
    kwargs = dict(lr=torch.tensor(0.01, device=DEV))
    if name == "FusedAdamW":
        kwargs["capturable"] = True
    else:
        kwargs["momentum"] = 0.9
    lrs = [0.01, 0.02, 0.005, 0.005, 0.001]
    all_grads = [grads(make(0), i) for i in range(len(lrs) + 3)]

    def eager():
        params = make(0)
        opt = getattr(fastopt, name)(params, **{**kwargs, "lr": torch.tensor(0.01, device=DEV)})
        for i, g in enumerate(all_grads):
            opt.param_groups[0]["lr"].fill_(lrs[i - 3] if i >= 3 else 0.01)
            for p, gi in zip(params, g):
                p.grad = gi.clone()
            opt.fused_step(max_norm=10.0)
        return params, opt

    params = make(0)
    opt = getattr(fastopt, name)(params, **kwargs)
    static = [g.clone() for g in all_grads[0]]
    for p, g in zip(params, static):
        p.grad = g
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up: states and the plan are built before capture
        for g in all_grads[:3]:
            for s, gi in zip(static, g):
                s.copy_(gi)
            opt.fused_step(max_norm=10.0)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        opt.fused_step(max_norm=10.0)
    for i, g in enumerate(all_grads[3:]):
        for s, gi in zip(static, g):
            s.copy_(gi)
        opt.param_groups[0]["lr"].fill_(lrs[i])
        graph.replay()
    torch.cuda.synchronize()
    ref_params, ref_opt = eager()
    for a, b in zip(params, ref_params):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-6, atol=1e-7)
    if name == "FusedAdamW":
        for p in params:
            assert opt.state[p]["step"].item() == len(all_grads)


def test_non_default_stream():
    name, kwargs = CASES["adam_l2_amsgrad"]
    expected, _ = run(name, kwargs)
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        params = make(0)
        opt = getattr(fastopt, name)(grouped(name, params), **kwargs)
        for i in range(5):
            for p, g in zip(params, grads(params, i + 1)):
                p.grad = g
            opt.step()
    stream.synchronize()
    for a, b in zip(params, expected):
        assert torch.equal(a.detach(), b.detach())


def test_second_device():
    if torch.cuda.device_count() < 2:
        pytest.skip("needs two GPUs")
    name, kwargs = CASES["lars"]
    torch.cuda.set_device(0)
    on_one, _ = run(name, kwargs, device=torch.device("cuda", 1))
    assert torch.cuda.current_device() == 0  # the engine restores the caller's device
    on_zero, _ = run(name, kwargs)
    for a, b in zip(on_one, on_zero):
        assert a.device.index == 1
        torch.testing.assert_close(a.detach().cpu(), b.detach().cpu(), rtol=1e-6, atol=1e-7)


def test_a_tensor_of_more_than_2_31_elements():
    n = 2**31 + 3 * 65536 + 17
    if torch.cuda.mem_get_info()[0] < 4 * n * 2 + (1 << 30):
        pytest.skip("needs about 18 GB of free GPU memory")
    p = torch.nn.Parameter(torch.zeros(n, dtype=torch.float16, device=DEV))
    p.grad = torch.ones(n, dtype=torch.float16, device=DEV)
    p.grad[-1] = 2.0
    opt = fastopt.FusedSGD([p], lr=1.0)
    opt.step()
    assert p[-1].item() == -2.0 and p[-2].item() == -1.0 and p[0].item() == -1.0
    assert (p.detach() == -1.0).sum().item() == n - 1
