"""launcher='pytorch': two processes on gloo, started the way torchrun starts them."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).parent / "data" / "runner" / "dist_worker.py"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.dist
def test_two_process_training_with_ddp_and_gloo(tmp_path):
    work, out = tmp_path / "work", tmp_path / "out"
    out.mkdir()
    port = _free_port()
    procs = []
    for rank in range(2):
        env = dict(
            os.environ,
            RANK=str(rank),
            LOCAL_RANK=str(rank),
            WORLD_SIZE="2",
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(port),
            OMP_NUM_THREADS="1",
            PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
        )
        procs.append(
            subprocess.Popen(
                [sys.executable, str(WORKER), str(work), str(out)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    outputs = [p.communicate(timeout=240)[0] for p in procs]
    for proc, output in zip(procs, outputs):
        assert proc.returncode == 0, output
    r0, r1 = (torch.load(out / f"rank{r}.pth", weights_only=True) for r in range(2))

    assert (r0["world_size"], r0["wrapper"]) == (2, "MMDistributedDataParallel")
    # DDP keeps the parameters identical; SyncBuffersHook averages the BN statistics
    for key, value in r0["state"].items():
        assert torch.equal(value, r1["state"][key]), key
    # each epoch the ranks share the 16 samples, without overlap (DefaultSampler split)
    for epoch in range(2):
        a = r0["seen"][epoch * 8 : (epoch + 1) * 8]
        b = r1["seen"][epoch * 8 : (epoch + 1) * 8]
        assert len(set(a) | set(b)) == 16
    # metrics are computed over the whole validation set and shared
    assert r0["metrics"] == r1["metrics"]
    # one experiment: the same name and log dir on both ranks; only rank 0 writes files
    assert r0["experiment_name"] == r1["experiment_name"] and r0["log_dir"] == r1["log_dir"]
    assert sorted(p.name for p in work.glob("*.pth")) == ["epoch_1.pth", "epoch_2.pth"]
    ckpt = torch.load(work / "epoch_2.pth", weights_only=True)
    assert len(ckpt["rng_state"]) == 2  # every rank's generators, for an exact resume
    assert not any(k.startswith("module.") for k in ckpt["state_dict"])
    logs = list(Path(r0["log_dir"]).glob("*.log"))
    assert len(logs) == 1 and "World size: 2" in logs[0].read_text()
    assert "Epoch(train)" in outputs[0] and "Epoch(train)" not in outputs[1]
    assert "broadcast_buffers` is deprecated" not in outputs[0]
