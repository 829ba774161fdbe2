"""The host emulation of the CUDA execution model (csrc/simt/) on its self-test kernels.

fastopt._C_simt compiles the CUDA engine's sources with the host compiler; these tests check the
emulated execution model itself: indices, barriers and shared memory, warp shuffles and votes,
the engine's block reduction, atomics, launch errors, and misuse that is undefined on a GPU.
"""

from __future__ import annotations

import math

import pytest
import torch

simt = pytest.importorskip("fastopt._C_simt", reason="fastopt._C_simt is not built")


def run(kernel, out, grid=(1, 1, 1), block=(32, 1, 1), n=0, param=0):
    simt.simt_selftest(kernel, grid, block, out.data_ptr(), n, param)
    return out


def test_thread_and_block_indices_in_3d():
    grid, block = (3, 2, 2), (4, 3, 2)
    threads = math.prod(block)
    out = run(
        "ids", torch.full((math.prod(grid) * threads, 12), -1, dtype=torch.int32), grid, block
    )
    rows = iter(out.tolist())
    for bz in range(grid[2]):
        for by in range(grid[1]):
            for bx in range(grid[0]):
                for tz in range(block[2]):
                    for ty in range(block[1]):
                        for tx in range(block[0]):
                            assert next(rows) == [tx, ty, tz, bx, by, bz, *block, *grid]


@pytest.mark.parametrize("threads", [32, 96, 1024])
def test_barriers_and_shared_memory_scan(threads):
    blocks = 3
    out = run(
        "scan", torch.zeros(blocks * threads, dtype=torch.int32), (blocks, 1, 1), (threads, 1, 1)
    )
    for b in range(blocks):
        expected = torch.cumsum(torch.arange(threads) + 1 + b, 0)
        assert torch.equal(out[b * threads : (b + 1) * threads].long(), expected)


@pytest.mark.parametrize("param", [0, 1, 3, 16, 31])
def test_shuffles(param):
    threads = 64
    out = run("shuffle", torch.zeros(threads, 5), block=(threads, 1, 1), param=param).tolist()
    for t in range(threads):
        lane, base = t % 32, t - t % 32

        def v(src_lane, t=t, base=base):
            return float((base + src_lane) * 3 + 1)

        down = v(lane + param) if lane + param < 32 else v(lane)
        up = v(lane - param) if lane >= param else v(lane)
        xor = v(lane ^ param)
        idx = v(param % 32)
        down8 = v(lane + param) if (lane & 7) + param < 8 else v(lane)
        assert out[t] == [down, up, xor, idx, down8], f"thread {t}"


def test_double_shuffles_sum_a_warp():
    out = run("warp_sum", torch.zeros(64, dtype=torch.float64), block=(64, 1, 1))
    expected = [sum(t + 0.5 for t in range(w * 32, w * 32 + 32)) for w in (0, 1)]
    assert out.tolist() == [expected[0]] * 32 + [expected[1]] * 32


@pytest.mark.parametrize("param", [1, 2, 5, 33])
def test_votes(param):
    out = run("vote", torch.zeros(64, 3, dtype=torch.int64), block=(64, 1, 1), param=param).tolist()
    for t in range(64):
        lanes = range(t - t % 32, t - t % 32 + 32)
        ballot = sum(1 << (u % 32) for u in lanes if u % param == 0)
        assert out[t] == [ballot, int(ballot != 0), int(ballot == 0)]


def test_partial_mask_shuffle():
    out = run("partial_mask", torch.zeros(64), block=(64, 1, 1)).tolist()
    for t in range(64):
        lane = t % 32
        want = -1.0 if lane >= 16 else float(t + 1 if lane < 15 else t)
        assert out[t] == want


@pytest.mark.parametrize("threads", [32, 64, 512])
@pytest.mark.parametrize("norm", [0, 1, 2])
def test_block_reduce_of_the_engine(threads, norm):
    g = torch.Generator().manual_seed(threads)
    n = 5000
    data = torch.cat(
        [torch.randint(-50, 50, (n,), generator=g).double(), torch.zeros(2, dtype=torch.float64)]
    )
    run("reduce", data, grid=(2, 1, 1), block=(threads, 1, 1), n=n, param=norm)
    x = data[:n]
    want = {0: (x * x).sum(), 1: x.abs().sum(), 2: x.abs().max()}[norm].item()
    assert data[n:].tolist() == [want, want]  # integers: exact in any order


def test_block_reduce_propagates_nan_for_the_inf_norm():
    data = torch.tensor([1.0, float("nan"), 3.0, 0.0], dtype=torch.float64)
    run("reduce", data, block=(64, 1, 1), n=3, param=2)
    assert math.isnan(data[3].item())


def test_atomics():
    out = torch.zeros(4, dtype=torch.int32)
    run("atomic", out, grid=(3, 1, 1), block=(128, 1, 1))
    assert out[:3].tolist() == [384, 383, 768]
    assert out[3:].view(torch.float32).item() == 192.0


@pytest.mark.parametrize(
    "kernel,message",
    [
        ("divergent_barrier", "deadlock: 32 of 64 threads wait at __syncthreads()"),
        ("exited_barrier", "1 have exited"),
        ("divergent_shuffle", "divergent warp operations"),
        ("inactive_lane", "reads inactive lane 20"),
        ("outside_mask", "is not in its mask"),
    ],
)
def test_misuse_is_reported_with_the_kernel_name(kernel, message):
    with pytest.raises(RuntimeError) as err:
        run(kernel, torch.zeros(64, dtype=torch.int32), block=(64, 1, 1))
    text = str(err.value)
    assert f"CUDA kernel '{kernel}' failed" in text and message in text and "block (0,0,0)" in text


@pytest.mark.parametrize("block", [(0, 1, 1), (2048, 1, 1), (32, 32, 2), (1, 1, 65)])
def test_invalid_launch_configuration(block):
    with pytest.raises(RuntimeError, match="invalid configuration argument"):
        run("ids", torch.zeros(12 * 4096, dtype=torch.int32), block=block)


def test_launch_after_an_error_works():
    with pytest.raises(RuntimeError):
        run("divergent_barrier", torch.zeros(64, dtype=torch.int32), block=(64, 1, 1))
    out = run("scan", torch.zeros(64, dtype=torch.int32), block=(64, 1, 1))
    assert out[-1].item() == 64 * 65 // 2
