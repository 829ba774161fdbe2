"""fastopt bench --states8 at a small scale: what it measures and reports."""

from __future__ import annotations

import pytest
import torch

import fastopt
from fastopt.benchmark import states8


def test_state_bytes_counts_each_storage_once():
    p = [torch.nn.Parameter(torch.randn(64, 64)), torch.nn.Parameter(torch.randn(10))]
    for t in p:
        t.grad = torch.randn_like(t)
    opt = fastopt.FusedAdamW(p, state_dtype="8bit")
    opt.step()
    n8 = 64 * 64
    # codes 2 B/elem + absmax 2 x 16 blocks + one map per kind; float32 states of the small one;
    # the step counts are views of one buffer of 2 float32
    want = 2 * n8 + 2 * 16 * 4 + 2 * 256 * 4 + 2 * 10 * 4 + 2 * 4
    assert states8.state_bytes(opt) == want


@pytest.mark.parametrize("scale", [0.02])
def test_run_states8_reports_bytes_and_times(scale):
    (r,) = states8.run_states8(["gpt2"], scale=scale, repeat=1, warmup=1, min_sample_s=0)
    assert r.bytes_per_param["fastopt fp32 states"] == pytest.approx(8.0, abs=0.01)
    assert r.bytes_per_param["fastopt 8bit"] < 2.6  # small tensors of the scaled set: float32
    assert set(r.median_ms) >= {"fastopt fp32 states", "fastopt 8bit"}
    text = states8.table([r])
    assert "fastopt 8bit" in text and "targets (gpt2)" in text
