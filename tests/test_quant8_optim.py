"""state_dtype='8bit' on the fused optimizers: every step equals dequantize -> the float32-state
step -> the paper's quantizer (tests/quant8_reference.py), bit for bit, for every op with moment
states, param dtype, precision mode and the gradient pipeline; the CPU engine equals the CUDA
engine's emulation; thread counts do not matter; state dicts convert both ways."""

from __future__ import annotations

import copy
import io

import numpy as np
import pytest
import quant8_reference as ref
import torch
from optim_reference import CASES, ONE_CASE_EACH, engine, grouped

import fastopt
from fastopt import _C as CPU
from fastopt.ops import catalog as op_catalog
from fastopt.ops import quant8

try:  # the host emulation of the CUDA kernels: absent from a CUDA build without SIMT
    from fastopt import _C_simt as SIMT
except ImportError:
    SIMT = None
needs_simt = pytest.mark.skipif(SIMT is None, reason="fastopt._C_simt is not built")

# sizes around the 4096-element threshold and the 256-element blocks (a short last block)
SHAPES = [(64, 64), (4095,), (4096 + 100,), (7, 3), (33, 130)]
CASES_8BIT = ONE_CASE_EACH
LAMB_CASES = [c for c in CASES if CASES[c][0] == "FusedLAMB"]


def make_params(seed=0, dtype=torch.float32, shapes=SHAPES):
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s, generator=g).to(dtype)) for s in shapes]


def set_grads(params, seed, dtype=None):
    g = torch.Generator().manual_seed(seed)
    for p in params:
        p.grad = torch.randn(p.shape, generator=g).to(dtype or p.dtype)


def build(name, params, kwargs, **precision):
    return getattr(fastopt, name)(grouped(name, params), **kwargs, **precision)


def clone_params(params):
    return [torch.nn.Parameter(p.detach().clone()) for p in params]


def check_step_is_quantized_fp32_step(opt8, params8, name, kwargs, precision, seed, pipeline):
    """One step of opt8 against a float32-state optimizer holding opt8's dequantized states."""
    params32 = clone_params(params8)
    opt32 = build(name, params32, kwargs, **{**precision, "state_dtype": torch.float32})
    # (a copy: a loaded float32 state tensor would otherwise be opt8's own)
    opt32.load_state_dict(copy.deepcopy(quant8.dequantize_state_dict(opt8.state_dict())))
    for ps in (params8, params32):
        set_grads(ps, seed)
    for opt in (opt8, opt32):
        if pipeline:
            opt.fused_step(**{k: v() if callable(v) else v for k, v in pipeline.items()})
        else:
            opt.step()
    op = op_catalog.op(opt8._kind)
    for p8, p32 in zip(params8, params32):
        assert torch.equal(p8, p32)
        s8, s32 = opt8.state[p8], opt32.state[p32]
        for key, v32 in s32.items():
            if key == "step" or key not in s8:
                continue
            if key in op_catalog.MODE_STATE_KEYS.values():  # master copy, compensation
                assert torch.equal(s8[key], v32), key
                continue
            if p8.numel() < quant8.min_elems():  # small tensors keep float32 states
                assert s8[key].dtype == torch.float32 and torch.equal(s8[key], v32), key
                continue
            signed = key not in op.unsigned_states
            codes, absmax = ref.quantize(v32.reshape(-1).numpy(), signed)
            assert s8[key].dtype == torch.uint8 and s8[key].shape == p8.shape
            np.testing.assert_array_equal(s8[key + "_absmax"].numpy(), absmax, err_msg=key)
            np.testing.assert_array_equal(s8[key].reshape(-1).numpy(), codes, err_msg=key)
            assert torch.equal(s8[key + "_qmap"], quant8.qmap(signed))


@pytest.mark.parametrize("case", CASES_8BIT)
def test_every_op_steps_as_dequantize_step_quantize(case):
    name, kwargs = CASES[case]
    params = make_params()
    opt = build(name, params, kwargs, state_dtype="8bit")
    for seed in range(3):
        check_step_is_quantized_fp32_step(opt, params, name, kwargs, {}, seed, {})


PRECISIONS = {
    "fp32": (torch.float32, {}),
    "bf16": (torch.bfloat16, {}),
    "fp16_master": (torch.float16, {"master_weights": True}),
    "bf16_stochastic": (torch.bfloat16, {"bf16_rounding": "stochastic", "rounding_seed": 5}),
    "bf16_kahan": (torch.bfloat16, {"kahan_summation": True}),
}
PIPELINES = {
    "none": {},
    "clip": {"max_norm": 0.5},
    "unscale_clip_inf": {
        "max_norm": 1.0,
        "loss_scale": lambda: torch.tensor(4.0),
        "found_inf": lambda: torch.zeros(1),
    },
}


@pytest.mark.parametrize("precision", list(PRECISIONS))
@pytest.mark.parametrize("pipeline", list(PIPELINES))
def test_adamw_precisions_and_pipeline(precision, pipeline):
    dtype, extra = PRECISIONS[precision]
    name, kwargs = "FusedAdamW", dict(lr=1e-2, weight_decay=0.1)
    params = make_params(dtype=dtype)
    opt = build(name, params, kwargs, state_dtype="8bit", **extra)
    for seed in range(3):
        check_step_is_quantized_fp32_step(
            opt, params, name, kwargs, extra, seed, PIPELINES[pipeline]
        )


def test_inf_grad_skips_the_step():
    params = make_params()
    opt = fastopt.FusedAdamW(params, state_dtype="8bit")
    set_grads(params, 0)
    opt.step()
    before = {k: v.clone() for k, v in opt.state[params[0]].items()}
    p0 = [p.detach().clone() for p in params]
    set_grads(params, 1)
    params[0].grad[3, 4] = float("inf")
    found = torch.zeros(1)
    opt.fused_step(found_inf=found)
    assert found.item() == 1.0
    assert all(torch.equal(a, b) for a, b in zip(p0, params))
    for k, v in opt.state[params[0]].items():
        assert torch.equal(v, before[k]), k


def test_small_tensors_and_state_layout():
    params = make_params()
    opt = fastopt.FusedAdamW(params, state_dtype="8bit", amsgrad=True)
    set_grads(params, 0)
    opt.step()
    for p in params:
        s = opt.state[p]
        if p.numel() < 4096:
            assert s["exp_avg"].dtype == torch.float32 and "exp_avg_absmax" not in s
            continue
        for key, signed in (("exp_avg", True), ("exp_avg_sq", False), ("max_exp_avg_sq", False)):
            assert s[key].dtype == torch.uint8 and s[key].shape == p.shape
            assert s[key + "_absmax"].shape == ((p.numel() + 255) // 256,)
            assert s[key + "_qmap"] is quant8.qmap(signed)  # one shared map


@pytest.mark.parametrize("case", LAMB_CASES)
@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16_master"])
@pytest.mark.parametrize("pipeline", ["none", "clip"])
def test_lamb_direction_norm_reads_the_dequantized_states(case, precision, pipeline):
    """LAMB's trust ratio needs the norm of its update direction in a pass before the update:
    that pass dequantizes the codes as the update does (a master copy's values for fp16), so
    the step still equals the float32-state step on the dequantized states, bit for bit."""
    name, kwargs = CASES[case]
    dtype, extra = PRECISIONS[precision]
    params = make_params(dtype=dtype)
    opt = build(name, params, kwargs, state_dtype="8bit", **extra)
    for seed in range(3):
        check_step_is_quantized_fp32_step(
            opt, params, name, kwargs, extra, seed, PIPELINES[pipeline]
        )


@needs_simt
@pytest.mark.parametrize("case", LAMB_CASES)
@pytest.mark.parametrize("precision", ["fp32", "fp16_master"])
def test_lamb_8bit_under_cuda_emulation(case, precision):
    """The CUDA engine's direction pass over 8-bit states (direction_q8_kernel): under the
    emulation a step equals the emulated float32-state step on the dequantized states, bit for
    bit; and it agrees with the CPU engine up to the order of the norm's sums."""
    name, kwargs = CASES[case]
    dtype, extra = PRECISIONS[precision]
    with engine(SIMT):
        params = make_params(dtype=dtype)
        opt = build(name, params, kwargs, state_dtype="8bit", **extra)
        for seed in range(3):
            check_step_is_quantized_fp32_step(
                opt, params, name, kwargs, extra, seed, PIPELINES["clip"]
            )
    cpu_params, _ = run(CPU, case, dtype=dtype, **extra)
    emu_params, _ = run(SIMT, case, dtype=dtype, **extra)
    for a, b in zip(cpu_params, emu_params):
        torch.testing.assert_close(a.float(), b.float(), rtol=1e-5, atol=1e-6)


def run(module, case, steps=3, threads=None, dtype=torch.float32, **extra):
    name, kwargs = CASES[case]
    saved = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        with engine(module):
            params = make_params(dtype=dtype)
            opt = build(name, params, kwargs, state_dtype="8bit", **extra)
            for seed in range(steps):
                set_grads(params, seed)
                opt.step()
    finally:
        torch.set_num_threads(saved)
    return params, opt


def assert_same_run(a, b):
    (pa, oa), (pb, ob) = a, b
    for x, y in zip(pa, pb):
        assert torch.equal(x, y)
        for key, v in oa.state[x].items():
            assert torch.equal(v, ob.state[y][key]), key


@needs_simt
@pytest.mark.parametrize("case", ["adamw", "sgd_momentum"])
def test_cuda_emulation_equals_cpu_engine(case):
    assert_same_run(run(CPU, case), run(SIMT, case))


@needs_simt
def test_cuda_emulation_equals_cpu_engine_16bit_modes():
    for dtype, extra in PRECISIONS.values():
        assert_same_run(
            run(CPU, "adamw", dtype=dtype, **extra), run(SIMT, "adamw", dtype=dtype, **extra)
        )


def test_thread_count_does_not_change_results():
    big = [(300, 700)]  # above the engine's serial threshold: chunks run in parallel

    def go(threads):
        saved = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            params = make_params(shapes=big)
            opt = fastopt.FusedAdamW(params, state_dtype="8bit")
            for seed in range(2):
                set_grads(params, seed)
                opt.step()
            return params, opt
        finally:
            torch.set_num_threads(saved)

    assert_same_run(go(1), go(2))


@needs_simt
def test_chunks_must_hold_whole_blocks():
    params = make_params()
    set_grads(params, 0)
    saved = SIMT.cuda_launch_limits()
    SIMT.set_cuda_launch_limits(chunk_elems=1000)
    try:
        with engine(SIMT):
            opt = fastopt.FusedAdamW(params, state_dtype="8bit")
            with pytest.raises(Exception, match="multiple of 256"):
                opt.step()
    finally:
        SIMT.set_cuda_launch_limits(**saved)
    SIMT.set_cuda_launch_limits(chunk_elems=512)  # several chunks per tensor, whole blocks
    try:
        emulated = run(SIMT, "adamw")
    finally:
        SIMT.set_cuda_launch_limits(**saved)
    assert_same_run(emulated, run(CPU, "adamw"))


# --- state dicts -----------------------------------------------------------------------------


def trained(steps=3, **kw):
    params = make_params()
    opt = fastopt.FusedAdamW(params, lr=1e-2, state_dtype="8bit", **kw)
    for seed in range(steps):
        set_grads(params, seed)
        opt.step()
    return params, opt


def test_state_dict_round_trip_and_weights_only_load():
    params, opt = trained()
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    buf.seek(0)
    sd = torch.load(buf, weights_only=True)
    params2 = clone_params(params)
    opt2 = fastopt.FusedAdamW(params2, lr=1e-2, state_dtype="8bit")
    opt2.load_state_dict(copy.deepcopy(sd))
    for p, q in zip(params, params2):
        for key, v in opt.state[p].items():
            assert opt2.state[q][key].dtype == v.dtype and torch.equal(opt2.state[q][key], v)
    for ps, o in ((params, opt), (params2, opt2)):
        set_grads(ps, 9)
        o.step()
    assert_same_run((params, opt), (params2, opt2))


def test_bf16_params_keep_codes_and_float32_absmax_on_load():
    params, opt = trained()
    params16 = [torch.nn.Parameter(p.detach().to(torch.bfloat16)) for p in params]
    opt16 = fastopt.FusedAdamW(params16, lr=1e-2, state_dtype="8bit")
    opt16.load_state_dict(
        copy.deepcopy(opt.state_dict())
    )  # torch would cast codes and absmax to bfloat16
    s = opt16.state[params16[0]]
    assert s["exp_avg"].dtype == torch.uint8 and s["exp_avg_absmax"].dtype == torch.float32
    assert torch.equal(s["exp_avg_absmax"], opt.state[params[0]]["exp_avg_absmax"])


def test_dequantized_state_dict_loads_into_torch_adamw():
    params, opt = trained()
    sd = quant8.dequantize_state_dict(opt.state_dict())
    assert fastopt.optim.dequantize_state_dict is quant8.dequantize_state_dict
    for state in sd["state"].values():
        assert not any(k.endswith(("_absmax", "_qmap")) for k in state)
        assert all(v.dtype == torch.float32 for k, v in state.items())
    ptorch = clone_params(params)
    topt = torch.optim.AdamW(ptorch, lr=1e-2)
    topt.load_state_dict(copy.deepcopy(sd))
    for p, q in zip(params, ptorch):
        s8 = quant8.dequantized_state(opt.state[p])
        for key in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(topt.state[q][key], s8[key])
    # one more step: torch from the dequantized states agrees with the 8-bit step's params
    set_grads(params, 5)
    set_grads(ptorch, 5)
    opt.step()
    topt.step()
    for p, q in zip(params, ptorch):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_torch_state_dict_loads_quantized():
    ptorch = make_params()
    topt = torch.optim.AdamW(ptorch, lr=1e-2)
    for seed in range(3):
        set_grads(ptorch, seed)
        topt.step()
    params = clone_params(ptorch)
    opt = fastopt.FusedAdamW(params, lr=1e-2, state_dtype="8bit")
    opt.load_state_dict(copy.deepcopy(topt.state_dict()))
    set_grads(params, 7)
    opt.step()  # the plan quantizes the loaded float32 states, then steps
    # the same as an 8-bit optimizer whose states were quantized from torch's, then stepped
    ref_params = clone_params(ptorch)
    ref_opt = fastopt.FusedAdamW(ref_params, lr=1e-2, state_dtype=torch.float32)
    ref_opt.load_state_dict(copy.deepcopy(topt.state_dict()))
    for p, q in zip(ptorch, ref_params):
        if p.numel() >= 4096:
            s = ref_opt.state[q]
            for key, signed in (("exp_avg", True), ("exp_avg_sq", False)):
                codes, absmax = ref.quantize(topt.state[p][key].reshape(-1).numpy(), signed)
                s[key] = torch.from_numpy(ref.dequantize(codes, absmax, signed)).reshape(p.shape)
    set_grads(ref_params, 7)
    ref_opt.step()
    for p, q in zip(params, ref_params):
        assert torch.equal(p, q)


def test_8bit_state_dict_loads_into_float32_optimizer():
    params, opt = trained()
    params32 = clone_params(params)
    opt32 = fastopt.FusedAdamW(params32, lr=1e-2)
    opt32.load_state_dict(
        copy.deepcopy(opt.state_dict())
    )  # codes: dequantized when the plan is built
    set_grads(params32, 4)
    opt32.step()
    s = opt32.state[params32[0]]
    assert s["exp_avg"].dtype == torch.float32 and "exp_avg_absmax" not in s
