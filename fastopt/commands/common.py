"""What ``fastopt train`` and ``fastopt test`` share: the common arguments, the config and
checkpoint checks that find bad input before the work dir changes, the one-line error report,
and the runner with a :class:`RunRecord` of what it did."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import warnings
import zipfile
from collections.abc import Mapping
from typing import Any

from fastopt.config.options import DictAction

CONFIG_HELP = (
    "config file (.py, .json or .yaml), or the name of a config shipped with fastopt "
    "(e.g. cnn_sgd_cosine; `fastopt list-configs` lists them)"
)


class CommandError(Exception):
    """Bad input found by a command; its message is shown as is, on one line."""


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """``--work-dir``, ``--cfg-options``, ``--launcher``, ``--local-rank`` and ``--debug``."""
    parser.add_argument(
        "--work-dir",
        metavar="DIR",
        help="where logs and checkpoints go (default: the config's work_dir, else "
        "./work_dirs/<config name>)",
    )
    parser.add_argument(
        "--cfg-options",
        nargs="+",
        action=DictAction,
        metavar="KEY=VALUE",
        help="override config settings, e.g. train_cfg.max_epochs=3 "
        "optim_wrapper.optimizer.lr=0.1 (lists: a=[1,2] or a=1,2; tuples: a=(1,2))",
    )
    parser.add_argument(
        "--allow-dotted-types",
        action="store_true",
        help="let dotted `type` paths in a .py config name any object, as in MMEngine "
        "(default: only classes that belong in the registry; see fastopt.registry.type_policy)",
    )
    parser.add_argument(
        "--launcher",
        choices=["none", "pytorch"],
        default="none",
        help="'pytorch' under torchrun: one process per device, gloo on CPU, NCCL on GPU",
    )
    # torch.distributed.launch passes --local-rank (or --local_rank); torchrun sets LOCAL_RANK
    parser.add_argument("--local-rank", "--local_rank", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")


def _input_errors() -> tuple[type[BaseException], ...]:
    """Exceptions whose message already says what is wrong and where (no type name needed)."""
    from fastopt.config import ConfigKeyError, LegacyConfigError
    from fastopt.config.errors import ConfigValueError
    from fastopt.registry import BuildArgumentError, MissingTypeError, UnknownTypeError

    return (
        CommandError,
        FileNotFoundError,
        ConfigKeyError,
        ConfigValueError,
        LegacyConfigError,
        BuildArgumentError,
        MissingTypeError,
        UnknownTypeError,
    )


def error_line(err: BaseException) -> str:
    """``err`` as one line: its message (prefixed with the exception type unless it is an
    input error that names what and where), newlines folded, cut at 800 characters."""
    if isinstance(err, KeyError) and len(err.args) == 1 and isinstance(err.args[0], str):
        message = err.args[0]  # str(KeyError) would add quotes
    else:
        message = str(err)
    message = " ".join(part.strip() for part in message.splitlines() if part.strip())
    if not isinstance(err, _input_errors()):
        message = f"{type(err).__name__}: {message}" if message else type(err).__name__
    if len(message) > 800:
        message = message[:797] + "..."
    return message


def report_error(command: str, err: BaseException) -> int:
    """Print ``fastopt <command>: error: ...`` on stderr; return the exit status (1)."""
    hint = "" if isinstance(err, _input_errors()) else " (run with --debug for the traceback)"
    print(f"fastopt {command}: error: {error_line(err)}{hint}", file=sys.stderr, flush=True)
    return 1


def note(message: str) -> None:
    """``fastopt: note: ...`` on stderr, from rank 0 only (under torchrun every rank runs)."""
    if os.environ.get("RANK", "0") == "0":
        print(f"fastopt: note: {message}", file=sys.stderr)


def load_config(path: str, cfg_options: Mapping[str, Any] | None) -> Any:
    """The config at ``path`` (``_base_`` merged, MMCV 1.x keys translated) with the overrides.

    An override whose top-level key is in the file as written (``optimizer.lr=0.1`` or
    ``runner.max_epochs=3`` in an MMCV 1.x config) is applied before the MMCV 1.x keys are
    translated, any other (``train_cfg.max_epochs=3``) after, so both vocabularies work.
    """
    from fastopt.config import Config, LegacyConfigWarning, translate_legacy_config
    from fastopt.config.known_keys import check_option_keys

    if not os.path.isfile(path):
        what = "is a directory, not a config file" if os.path.isdir(path) else "does not exist"
        raise CommandError(f"config file {path} {what}")
    try:
        cfg = Config.fromfile(path, translate_legacy=False)
    except SyntaxError as e:
        where = f"{e.filename or path}, line {e.lineno}" if e.lineno else (e.filename or path)
        raise CommandError(f"config file {where}: invalid syntax: {e.msg}") from e
    except Exception as e:
        raise CommandError(f"cannot load config file {path}: {error_line(e)}") from e
    options = dict(cfg_options or {})
    for message in check_option_keys(options, cfg):  # a misspelt key raises
        note(message)
    before = {k: v for k, v in options.items() if k.split(".")[0] in cfg}
    after = {k: v for k, v in options.items() if k not in before}
    try:
        if before:
            cfg.merge_from_dict(before)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", LegacyConfigWarning)
            translated = translate_legacy_config(cfg.to_dict(), cfg.filename)
    except Exception as e:
        where = "--cfg-options" if before else f"config file {path}"
        raise CommandError(f"{where}: {error_line(e)}") from e
    for w in caught:  # one line per translated key, not Python's two-line warning format
        if issubclass(w.category, LegacyConfigWarning):
            note(str(w.message))
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    if translated != cfg.to_dict():
        cfg = Config(translated, cfg_text=cfg.text, filename=cfg.filename)
    if after:
        try:
            cfg.merge_from_dict(after)
        except Exception as e:
            raise CommandError(f"--cfg-options: {error_line(e)}") from e
    return cfg


def default_work_dir(config_path: str) -> str:
    """``./work_dirs/<config file name without extension>``."""
    return os.path.join(".", "work_dirs", os.path.splitext(os.path.basename(config_path))[0])


def check_writable_dir(path: str) -> None:
    """Fail unless ``path`` is (or can be created as) a directory this process can write to.

    Nothing is created: an existing directory is probed with a temporary file that is
    removed at once; for a missing one, its nearest existing ancestor is probed.
    """
    path = os.path.abspath(path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise CommandError(f"work dir {path} exists and is not a directory")
    probe_dir = path
    while not os.path.exists(probe_dir):
        parent = os.path.dirname(probe_dir)
        if parent == probe_dir:
            break
        probe_dir = parent
    if not os.path.isdir(probe_dir):
        raise CommandError(f"cannot create work dir {path}: {probe_dir} is not a directory")
    try:
        fd, probe = tempfile.mkstemp(prefix=".fastopt-write-test-", dir=probe_dir)
    except OSError as e:
        what = "is not writable" if probe_dir == path else f"cannot be created in {probe_dir}"
        raise CommandError(f"work dir {path} {what}: {e.strerror or e}") from e
    os.close(fd)
    os.unlink(probe)


def read_checkpoint(path: str, expected_sha256: str | None = None, purpose: str = "load") -> dict:
    """Open a checkpoint for inspection (memory-mapped, ``weights_only``); clear errors.

    Its checksum is verified first (and ``expected_sha256``, ``last_checkpoint``'s record). A
    corrupt file is refused, naming the newest intact checkpoint next to it; ``purpose``
    (``'resume'``, ``'test'``, ``'load'``) words the advice.
    """
    import torch

    from fastopt.fileio.checkpoint import (
        CorruptCheckpointError,
        newest_intact_checkpoint,
        verify_checkpoint,
    )

    if not os.path.exists(path):
        raise CommandError(f"checkpoint {path} does not exist")
    if not os.path.isfile(path):
        raise CommandError(f"checkpoint {path} is not a file")

    def advice(intact: str | None) -> str:
        if intact is None:
            return f"; no other checkpoint in {shown_path(os.path.dirname(path) or '.')} is intact"
        how = {
            "resume": f"continue from it with --resume {shown_path(intact)}",
            "test": "test that one instead",
        }.get(purpose, "load that one instead")
        return f"; the newest intact checkpoint there is {shown_path(intact)} ({how})"

    def corrupt(message: str) -> CommandError:
        return CommandError(
            message
            + advice(newest_intact_checkpoint(path, with_training_state=purpose == "resume"))
        )

    try:
        verify_checkpoint(path, expected_sha256)
    except CorruptCheckpointError as e:
        raise CommandError(e.reason + advice(e.intact)) from e
    with open(path, "rb") as f:
        head = f.read(4)
    if not zipfile.is_zipfile(path):
        if head.startswith(b"PK"):
            raise corrupt(f"checkpoint {path} is corrupt: a truncated or damaged zip archive")
        if not head.startswith(b"\x80"):  # neither torch.save's zip nor its legacy pickle
            raise corrupt(f"checkpoint {path} is not a PyTorch checkpoint")
    try:
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as e:
            if "mmap" not in str(e):
                raise
            ckpt = torch.load(path, map_location="cpu", weights_only=True)  # legacy format
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        first = first.split(". ")[0]
        if "weights_only" in str(e) or "Weights only" in str(e):
            raise CommandError(
                f"checkpoint {path} holds Python objects that torch.load(weights_only=True) "
                f"refuses (not a fastopt checkpoint?): {first}"
            ) from e
        raise corrupt(f"checkpoint {path} is corrupt or not a PyTorch checkpoint: {first}") from e
    if not isinstance(ckpt, dict):
        raise CommandError(f"checkpoint {path} holds a {type(ckpt).__name__}, not a dict")
    return ckpt


def check_checkpoint_fits(
    path: str, checkpoint: Mapping[str, Any], model: Any, mode: str
) -> list[str]:
    """Compare the checkpoint's weights with ``model``'s; return warnings, raise on misfit.

    ``mode``: ``'resume'`` and ``'test'`` need every weight of the model with its shape;
    ``'load'`` (``load_from``: fine-tuning) needs the shapes of shared keys to agree and at
    least one shared key. A resume also needs the checkpoint's ``meta`` counters.
    """
    import re

    import torch

    from fastopt.model.fsdp import SHARDED_STATE, sharded_model_placeholders

    meta = checkpoint.get("meta")
    shards = meta.get(SHARDED_STATE) if isinstance(meta, Mapping) else None
    if shards is not None:  # FSDP2's sharded state: the shapes its metadata records
        state = sharded_model_placeholders(os.path.join(os.path.dirname(path), shards))
    else:
        state = checkpoint.get("state_dict", checkpoint)
    if not isinstance(state, Mapping) or not any(
        isinstance(v, torch.Tensor) for v in state.values()
    ):
        raise CommandError(f"checkpoint {path} has no model weights (no 'state_dict')")
    state = {re.sub(r"^module\.", "", k): v for k, v in state.items()}
    expected = model.state_dict()
    model_name = type(model).__name__
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and isinstance(state[k], torch.Tensor) and state[k].shape != v.shape
    ]
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]

    def some(keys: list[str]) -> str:
        return ", ".join(keys[:4]) + (f" and {len(keys) - 4} more" if len(keys) > 4 else "")

    if shapes:
        raise CommandError(
            f"checkpoint {path} does not fit the config's {model_name}: shape mismatch "
            f"(checkpoint vs model) for {some(shapes)}"
        )
    if len(missing) == len(expected):
        raise CommandError(
            f"checkpoint {path} does not fit the config's {model_name}: none of its "
            f"{len(state)} weights (e.g. {some(list(state)[:2])}) is a weight of the model"
        )
    if missing and mode in ("resume", "test"):
        raise CommandError(
            f"checkpoint {path} does not fit the config's {model_name}: it lacks "
            f"{len(missing)} of the model's weights ({some(missing)})"
        )
    if mode == "resume":
        meta = checkpoint.get("meta")
        if not isinstance(meta, Mapping) or "epoch" not in meta or "iter" not in meta:
            raise CommandError(
                f"cannot resume from {path}: it has no training state (meta epoch/iter); "
                "use load_from to start a new run from its weights"
            )
    warnings = []
    if missing:
        warnings.append(f"{len(missing)} weights of the model are not in {path}: {some(missing)}")
    if unexpected:
        warnings.append(f"{len(unexpected)} weights in {path} are not used: {some(unexpected)}")
    return warnings


def shown_path(path: str) -> str:
    """``path`` relative to the current directory when it is inside it."""
    path = os.path.abspath(path)
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


def format_metrics(metrics: Mapping[str, Any]) -> str:
    """``accuracy/top1: 99.80, accuracy/top2: 100.00`` (non-scalar values left out)."""
    parts = []
    for key, value in metrics.items():
        try:
            parts.append(f"{key}: {float(value):.2f}")
        except (TypeError, ValueError):
            continue
    return ", ".join(parts)


def check_launcher(launcher: str) -> None:
    """Refuse ``--launcher none`` inside a multi-process torchrun job (all ranks would train
    alone and write the same files)."""
    world = os.environ.get("WORLD_SIZE")
    if launcher == "none" and world is not None and world.isdigit() and int(world) > 1:
        raise CommandError(
            f"this process is one of {world} started by torchrun (WORLD_SIZE={world}) but "
            "--launcher is none: pass --launcher pytorch"
        )


def finish_distributed() -> None:
    """After a successful run: wait for every rank (rank 0 may still be writing the plot),
    then tear the process group down (gloo aborts a process whose peer vanished)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def build_runner(cfg: Any, config_dump: str) -> tuple[Any, Any]:
    """``Runner.from_cfg(cfg, config_dump=...)`` (of ``runner_type``) and the
    :class:`~fastopt.commands.run_record.RunRecord` registered into it."""
    from fastopt.registry import RUNNERS

    from .run_record import RunRecord

    runner_type = cfg.get("runner_type", "Runner")
    runner_cls = RUNNERS.get(runner_type) if isinstance(runner_type, str) else runner_type
    if runner_cls is None:
        raise CommandError(f"runner_type {runner_type!r} is not in the runner registry")
    runner = runner_cls.from_cfg(cfg, config_dump=config_dump)
    record = RunRecord()
    runner.register_hook(record)
    return runner, record
