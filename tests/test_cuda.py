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
from cuda_cases import SHAPES
from optim_reference import CASES, ONE_CASE_EACH, TORCH_FOR_LOOP, grouped

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


# ---- issue 17: what the emulation cannot show --------------------------------------------------


def _step_adamw(params, **kw):
    opt = fastopt.FusedAdamW(params, lr=0.01, **kw)
    for p, g in zip(params, grads(params, 1)):
        p.grad = g
    return opt


@pytest.mark.parametrize("pipeline", [False, True])
def test_a_step_never_waits_for_the_device(pipeline):
    """Seen from outside: with the stream busy (torch.cuda._sleep), the step returns before the
    stream drains, so neither torch nor the engine's own runtime synchronised."""
    params = make(0)
    opt = _step_adamw(params)
    found, norm = torch.zeros((), device=DEV), torch.zeros((), device=DEV)
    kw = dict(max_norm=1.0, found_inf=found, norm_out=norm) if pipeline else {}
    opt.fused_step(**kw) if pipeline else opt.step()  # the plan is built (that may sync)
    torch.cuda.synchronize()
    stream = torch.cuda.current_stream()
    for _ in range(3):
        torch.cuda._sleep(200_000_000)  # ~0.1 s of device time on any current GPU
        opt.fused_step(**kw) if pipeline else opt.step()
        assert not stream.query(), "the step returned only after the device was idle"
        torch.cuda.synchronize()


def _current_context():
    import ctypes

    cuda = ctypes.CDLL("libcuda.so.1")
    ctx = ctypes.c_void_p()
    assert cuda.cuCtxGetCurrent(ctypes.byref(ctx)) == 0
    return ctx.value


def test_a_thread_without_a_context_gets_none_back():
    """DeviceGuard restores the driver context the thread had: none, not device 0's primary
    context (which cudaSetDevice(0) would create)."""
    import threading

    params = make(0)
    opt = _step_adamw(params)
    opt.step()
    torch.cuda.synchronize()
    seen = {}

    def worker():
        seen["before"] = _current_context()
        for p, g in zip(params, grads(params, 2)):
            p.grad = g
        opt.step()
        seen["after"] = _current_context()

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert seen["before"] is None and seen["after"] is None
    torch.cuda.synchronize()


def test_the_caller_context_is_restored_on_a_second_device():
    if torch.cuda.device_count() < 2:
        pytest.skip("needs two GPUs")
    torch.cuda.set_device(0)
    before = _current_context()
    params = make(0, device=torch.device("cuda", 1))
    _step_adamw(params).step()
    assert _current_context() == before and torch.cuda.current_device() == 0


def test_two_streams_use_the_workspace_safely():
    """A plan built on one stream and stepped on another: the step waits for the build's work,
    the allocator knows the buffers are used there, and the results are the default stream's."""
    expected, _ = run("FusedAdamW", CASES["adamw"][1], steps=4)
    params = make(0)
    opt = fastopt.FusedAdamW(params, **CASES["adamw"][1])
    build, other = torch.cuda.Stream(), torch.cuda.Stream()
    build.wait_stream(torch.cuda.current_stream())  # the params' and grads' initial values
    for i in range(4):
        if i == 1:
            other.wait_stream(build)  # the caller orders its own tensors; the plan its buffers
        with torch.cuda.stream(build if i == 0 else other):
            for p, g in zip(params, grads(params, i + 1)):
                p.grad = g
            if i == 3:
                torch.cuda._sleep(100_000_000)  # the last step still queued below
            opt.step()
    use = opt._plan.device_use
    assert use.build_stream == build.cuda_stream and other.cuda_stream in use.streams
    nbytes = opt._plan.workspace.numel()
    del use, opt  # freed while the last step still waits on `other`
    with torch.cuda.stream(build):  # the stream the workspace was allocated on
        scratch = [torch.full((nbytes,), 255, dtype=torch.uint8, device=DEV) for _ in range(4)]
    torch.cuda.synchronize()
    for a, b in zip(params, expected):
        assert torch.equal(a.detach(), b.detach())
    assert all(s.eq(255).all() for s in scratch)  # no block of the workspace handed out early


def test_a_captured_step_survives_load_state_dict():
    """After a capture, load_state_dict drops the plan: its buffers stay alive with the optimizer
    (a replay writes no freed memory) and a warning says to capture again."""
    params = make(0)
    opt = fastopt.FusedAdamW(params, lr=torch.tensor(0.01, device=DEV), capturable=True)
    static = grads(params, 1)
    for p, g in zip(params, static):
        p.grad = g
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        opt.step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        opt.step()
    captured = opt._plan
    workspace = captured.workspace.data_ptr()
    with pytest.warns(RuntimeWarning, match="capture the step again"):
        opt.load_state_dict(opt.state_dict())
    assert any(captured in held for held in opt._graph_held)
    for _ in range(3):
        graph.replay()
    torch.cuda.synchronize()
    assert captured.workspace.data_ptr() == workspace  # still the graph's memory
    assert all(torch.isfinite(p).all() for p in params)


def test_graph_capture_with_a_skipped_inf_step():
    """A captured pipeline step replayed with an inf grad skips that step on the device."""
    params = make(0)
    opt = fastopt.FusedAdamW(params, lr=torch.tensor(0.01, device=DEV), capturable=True)
    found = torch.zeros((), device=DEV)
    static = grads(params, 1)
    for p, g in zip(params, static):
        p.grad = g
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        opt.fused_step(max_norm=1.0, found_inf=found)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        opt.fused_step(max_norm=1.0, found_inf=found)
    before = [p.detach().clone() for p in params]
    static[1][0] = math.inf
    graph.replay()
    torch.cuda.synchronize()
    assert found.item() == 1.0
    for a, b in zip(params, before):
        assert torch.equal(a.detach(), b)
    static[1][0] = 0.0
    graph.replay()
    torch.cuda.synchronize()
    assert found.item() == 0.0 and not torch.equal(params[1].detach(), before[1])
    assert opt.state[params[0]]["step"].item() == 2  # warm-up and one replay, not the skip
