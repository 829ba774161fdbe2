"""``fastopt train --launcher pytorch`` under torchrun: 2 processes on gloo equal 1 process.

Each run is the real command in a child process (``python -m torch.distributed.run
--standalone --nproc_per_node 2 -m fastopt train ...``). Two processes with a per-process
batch of 8 see, at every step, the same 16 samples one process sees with a batch of 16
(``DefaultSampler`` deals the shared permutation out round-robin), and DDP averages their
gradients, so the parameters after training must equal the single-process ones up to float
rounding: with plain DDP, and with ``ZeroRedundancyOptimizer`` sharding a fastopt optimizer's
state, both with gradient-norm clipping active. The model has no BatchNorm (per-process batch
statistics would legitimately differ).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import fastopt_subprocess_env

pytestmark = pytest.mark.dist

GLOBAL_BATCH = 16
MAX_NORM = 0.5

CONFIG = """
model = dict(
    type="TinyViT", num_classes=8, image_size=16, patch_size=4, dim=32, depth=1, heads=2,
    conv_stem=False,
    data_preprocessor=dict(type="ClsDataPreprocessor", mean=[127.5] * 3, std=[64.0] * 3),
)
train_dataloader = dict(
    batch_size={batch_size},
    num_workers=0,
    dataset=dict(type="SyntheticShapes", split="train", num_samples=128, image_size=16),
    sampler=dict(type="DefaultSampler", shuffle=True),
    collate_fn=dict(type="default_collate"),
)
optim_wrapper = dict(
    optimizer={optimizer},
    paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0),
    clip_grad=dict(max_norm={max_norm}),
)
param_scheduler = [dict(type="LinearLR", start_factor=0.1, by_epoch=False, begin=0, end=8)]
train_cfg = dict(type="EpochBasedTrainLoop", max_epochs=2)
default_hooks = dict(
    checkpoint=dict(type="CheckpointHook", interval=1),
    logger=dict(type="LoggerHook", interval=2),
)
randomness = dict(seed=0)
{extra}
"""

# FSDP2: the transformer layer and the rest of the model sharded over the processes
FSDP2 = 'model_wrapper_cfg = dict(type="FullyShard", shard_modules=["layers.*"])'

ADAMW = 'dict(type="FusedAdamW", lr=3e-3, weight_decay=0.05)'
ZERO_ADAMW = (
    'dict(type="ZeroRedundancyOptimizer", optimizer_type="FusedAdamW", lr=3e-3, weight_decay=0.05)'
)


def _env() -> dict:
    env = fastopt_subprocess_env()
    env["OMP_NUM_THREADS"] = "1"  # two processes share the cores; same math in every run
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    return env


def _train(
    tmp: Path, name: str, optimizer: str, nproc: int, extra: str = "", resume: Path | None = None
) -> Path:
    """Run `fastopt train` (under torchrun when nproc > 1); return the work dir."""
    config = tmp / f"{name}.py"
    config.write_text(
        CONFIG.format(
            batch_size=GLOBAL_BATCH // nproc, optimizer=optimizer, max_norm=MAX_NORM, extra=extra
        )
    )
    work = tmp / name
    train = ["-m", "fastopt", "train", str(config), "--work-dir", str(work)]
    if resume is not None:
        train += ["--resume", str(resume)]
    if nproc == 1:
        cmd = [sys.executable, *train]
    else:
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={nproc}",
            *train,
            "--launcher",
            "pytorch",
        ]
    proc = subprocess.run(
        cmd, cwd=tmp, env=_env(), capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, _failure(proc)
    if resume is None:
        assert "fastopt train: finished 2 epochs (16 iterations)" in proc.stdout
    assert os.path.isfile(work / "epoch_2.pth")
    return work


def _failure(proc: subprocess.CompletedProcess) -> str:
    """The error lines of a failed run (each rank prints one), not its whole log."""
    lines = (proc.stdout + proc.stderr).splitlines()
    errors = [li for li in lines if "error:" in li or "Error" in li]
    return "\n".join(errors[-10:]) or "\n".join(lines[-30:])


def _weights(work: Path) -> dict[str, torch.Tensor]:
    ckpt = torch.load(work / "epoch_2.pth", map_location="cpu", weights_only=True)
    return ckpt["state_dict"]


def _grad_norms(work: Path) -> list[float]:
    (scalars,) = work.glob("*/vis_data/scalars.json")
    records = [json.loads(line) for line in scalars.read_text().splitlines()]
    return [r["grad_norm"] for r in records if "grad_norm" in r]


def _assert_same_weights(dist: dict, single: dict) -> None:
    """Equal to float rounding, except the attention's key bias.

    The key bias has no effect on the output (softmax is shift-invariant), so its true
    gradient is zero and what reaches it is rounding noise, which differs between a batch of
    16 and two all-reduced batches of 8. Adam normalises that noise into full-size steps; so
    the key bias may only move as far as the learning rate allows (lr per step).
    """
    assert dist.keys() == single.keys()
    for key, value in single.items():
        got = dist[key]
        if key.endswith("self_attn.in_proj_bias"):
            dim = value.shape[0] // 3
            keys = slice(dim, 2 * dim)
            torch.testing.assert_close(got[keys], value[keys], rtol=0, atol=3e-3 * 16, msg=key)
            got, value = got.clone(), value.clone()
            got[keys] = value[keys] = 0
        torch.testing.assert_close(got, value, rtol=1e-4, atol=1e-6, msg=key)


@pytest.fixture(scope="module")
def single_process(tmp_path_factory) -> Path:
    """The reference: one process, batch 16, FusedAdamW with clipping."""
    return _train(tmp_path_factory.mktemp("single"), "single", ADAMW, nproc=1)


def test_ddp_two_processes_equal_one(tmp_path, single_process):
    work = _train(tmp_path, "ddp", ADAMW, nproc=2)
    reference = _weights(single_process)
    _assert_same_weights(_weights(work), reference)
    # the run really trained and really clipped (the pre-clip norm exceeds max_norm)
    assert torch.load(work / "epoch_2.pth", weights_only=True)["meta"]["iter"] == 16
    norms = _grad_norms(work)
    assert norms and max(norms) > MAX_NORM
    # the logged global norm is the single process's
    assert norms == pytest.approx(_grad_norms(single_process), rel=1e-4)
    # rank 0 alone wrote the files: one log dir, one set of checkpoints
    assert len(list(work.glob("*/vis_data/scalars.json"))) == 1
    assert sorted(p.name for p in work.glob("*.pth")) == ["epoch_1.pth", "epoch_2.pth"]


def test_zero_redundancy_fused_adamw_two_processes_equal_one(tmp_path, single_process):
    work = _train(tmp_path, "zero", ZERO_ADAMW, nproc=2)
    _assert_same_weights(_weights(work), _weights(single_process))
    norms = _grad_norms(work)
    assert norms and max(norms) > MAX_NORM
    assert norms == pytest.approx(_grad_norms(single_process), rel=1e-4)
    # the checkpoint holds the whole optimizer state, gathered from both shards, in the
    # layout of a plain optimizer: a single-process FusedAdamW run resumes from it
    ckpt = torch.load(work / "epoch_2.pth", weights_only=True)
    assert len(ckpt["optimizer"]["state"]) == len(ckpt["state_dict"])  # one per parameter
    assert {"exp_avg", "exp_avg_sq", "step"} <= set(ckpt["optimizer"]["state"][0])
    resumed = _resume_single(tmp_path, work / "epoch_1.pth")
    _assert_same_weights(_weights(resumed), _weights(single_process))


def _resume_single(tmp: Path, checkpoint: Path) -> Path:
    """Finish a 2-process run's second epoch in one process with plain FusedAdamW."""
    return _train(tmp, "resumed", ADAMW, nproc=1, resume=checkpoint)


def test_fsdp2_two_processes_equal_one_and_resume_at_any_world_size(tmp_path, single_process):
    work = _train(tmp_path, "fsdp2", ADAMW, nproc=2, extra=FSDP2)
    _assert_same_weights(_weights(work), _weights(single_process))
    norms = _grad_norms(work)  # clipping by the norm over both processes' shards
    assert norms and max(norms) > MAX_NORM
    assert norms == pytest.approx(_grad_norms(single_process), rel=1e-4)
    # a full checkpoint: plain weights and the optimizer state by parameter name
    ckpt = torch.load(work / "epoch_2.pth", weights_only=True)
    assert ckpt["meta"]["optimizer_state_by_name"] is True
    assert set(ckpt["optimizer"]["state"]) == set(ckpt["state_dict"]) - {
        k for k in ckpt["state_dict"] if "running" in k or "num_batches" in k
    }
    assert all(type(v) is torch.Tensor for v in ckpt["state_dict"].values())
    # resumed with 1 process (no FSDP2) and with 2 (FSDP2): the same end as the whole run
    one = _resume_single(tmp_path, work / "epoch_1.pth")
    _assert_same_weights(_weights(one), _weights(single_process))
    two = _train(
        tmp_path, "fsdp2-resumed", ADAMW, nproc=2, extra=FSDP2, resume=work / "epoch_1.pth"
    )
    resumed = _weights(two)
    for key, value in _weights(work).items():
        assert torch.equal(resumed[key], value), key  # exact on the CPU


FSDP2_SHARDED = FSDP2.replace(")", ', state_dict_type="sharded")')


def _sharded_weights(work: Path) -> dict[str, torch.Tensor]:
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    dcp_to_torch_save(work / "epoch_2.dcp", work / "converted.pth")
    return torch.load(work / "converted.pth", weights_only=True)["model"]


def test_fsdp2_sharded_checkpoints_resume_at_any_world_size(tmp_path, single_process):
    """state_dict_type='sharded': each rank writes its shards into epoch_N.dcp/ (DCP), the
    checkpoint file holds the rest; resumed with 2 processes it ends bitwise equal to the
    uninterrupted run, with 1 process (no FSDP2) equal to the 1-process run."""
    work = _train(tmp_path, "fsdp2-sharded", ADAMW, nproc=2, extra=FSDP2_SHARDED)
    ckpt = torch.load(work / "epoch_1.pth", weights_only=True)
    assert ckpt["meta"]["sharded_state"] == "epoch_1.dcp"
    assert "state_dict" not in ckpt and "state" not in ckpt["optimizer"]
    assert (work / "epoch_1.dcp" / ".metadata").is_file()
    final = _sharded_weights(work)
    _assert_same_weights(final, _weights(single_process))
    two = _train(
        tmp_path,
        "fsdp2-sharded-resumed",
        ADAMW,
        nproc=2,
        extra=FSDP2_SHARDED,
        resume=work / "epoch_1.pth",
    )
    resumed = _sharded_weights(two)
    assert set(resumed) == set(final)
    for key, value in final.items():
        assert torch.equal(resumed[key], value), key  # exact on the CPU
    one = _resume_single(tmp_path, work / "epoch_1.pth")
    _assert_same_weights(_weights(one), _weights(single_process))


def test_vit_fsdp2_example_under_torchrun(tmp_path):
    """configs/vit_adamw_fsdp2.py as the README runs it, shortened with --cfg-options."""
    config = Path(__file__).resolve().parents[1] / "configs" / "vit_adamw_fsdp2.py"
    work = tmp_path / "vit"
    short = [
        "train_cfg.max_iters=400",
        "train_cfg.val_interval=400",
        "train_cfg.dynamic_intervals=[]",
        "train_dataloader.batch_size=16",  # per process: the 1-process test's 32 in all
        "train_dataloader.dataset.num_samples=4000",
        "train_dataloader.dataset.image_size=24",
        "val_dataloader.dataset.image_size=24",
        "val_dataloader.dataset.num_samples=500",
        "model.image_size=24",
        "default_hooks.checkpoint.interval=400",
        "randomness.seed=0",
    ]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    cmd += ["-m", "fastopt", "train", str(config), "--launcher", "pytorch"]
    cmd += ["--work-dir", str(work), "--cfg-options", *short]
    proc = subprocess.run(
        cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=400, check=False
    )
    assert proc.returncode == 0, _failure(proc)
    (scalars,) = work.glob("*/vis_data/scalars.json")
    records = [json.loads(line) for line in scalars.read_text().splitlines()]
    accuracy = [r["accuracy/top1"] for r in records if "accuracy/top1" in r]
    assert accuracy and accuracy[-1] > 25.0  # chance is 12.5%
    ckpt = torch.load(work / "iter_400.pth", weights_only=True)
    assert ckpt["meta"]["optimizer_state_by_name"] is True
    log = next(work.glob("*/*.log")).read_text()
    assert "World size: 2" in log
