"""``fastopt train``: train a model from a config file (MMEngine ``tools/train.py`` conventions).

``fastopt train CONFIG [--work-dir DIR] [--resume [PATH]] [--amp] [--cfg-options K=V ...]
[--launcher none|pytorch]``. The work dir defaults to ``./work_dirs/<config name>``. Under
``torchrun --nproc_per_node N -m fastopt train CONFIG --launcher pytorch`` every process runs
this command; rank 0 writes the files and prints.

Bad input is reported as one line on stderr (``--debug`` shows the traceback) with a non-zero
exit status, and is found before anything in the work dir changes: the config (file, syntax,
``--cfg-options``), a missing, unreadable or mismatched checkpoint, a work dir that cannot be
written, and a work dir that already holds another run's checkpoints (pass ``--resume`` to
continue that run). The config is written into the work dir only once the model, data,
optimizer and checkpoint have all been built and loaded.

At the end the command prints the final validation metrics and where the log, the scalars,
the checkpoints and the plot of the training curves (``fastopt plot``) are.
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
import tempfile
import time
import warnings
import zipfile
from collections.abc import Mapping
from typing import Any

from fastopt.config.options import DictAction
from fastopt.config.shipped import resolve_config
from fastopt.registry.type_policy import dotted_types_for_config

HELP = "train a model from a config file (MMEngine tools/train.py conventions)"

PLOT_NAME = "curves.png"
CONFIG_HELP = (
    "config file (.py, .json or .yaml), or the name of a config shipped with fastopt "
    "(e.g. cnn_sgd_cosine; `fastopt list-configs` lists them)"
)


class CommandError(Exception):
    """Bad input found by a command; its message is shown as is, on one line."""


# ------------------------------------------------------------------------- shared helpers
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


def existing_checkpoints(work_dir: str) -> list[str]:
    """Checkpoint files (``*.pth``) and the ``last_checkpoint`` marker in ``work_dir``."""
    if not os.path.isdir(work_dir):
        return []
    found = sorted(os.path.basename(p) for p in glob.glob(os.path.join(work_dir, "*.pth")))
    if os.path.isfile(os.path.join(work_dir, "last_checkpoint")):
        found.append("last_checkpoint")
    return found


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


def _literal_config(text: str) -> dict[str, Any]:
    """The top-level keys of a config dumped as Python source (a checkpoint's ``meta['cfg']``),
    read without running it: a checkpoint is data, so only literals and ``dict(...)`` count;
    anything else reads as its source text."""
    import ast

    def value(node: ast.AST) -> Any:
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
            return [value(e) for e in node.elts]
        if isinstance(node, ast.Dict) and all(k is not None for k in node.keys):
            return {value(k): value(v) for k, v in zip(node.keys, node.values)}  # type: ignore[arg-type]
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "dict"
            and not node.args
            and all(k.arg is not None for k in node.keywords)
        ):
            return {k.arg: value(k.value) for k in node.keywords}
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            inner = value(node.operand)
            if isinstance(inner, (int, float)):
                return -inner if isinstance(node.op, ast.USub) else inner
        return ast.unparse(node)

    out: dict[str, Any] = {}
    for stmt in ast.parse(text).body:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
            target = stmt.targets[0]
            if isinstance(target, ast.Name):
                out[target.id] = value(stmt.value)
    return out


def _flat(obj: Any, prefix: str = "") -> dict[str, Any]:
    """``{'a.b': 1, 'c.0.d': 2}`` for nested dicts and lists (tuples read as lists)."""
    if isinstance(obj, Mapping):
        items = [(str(k), v) for k, v in obj.items()]
    elif isinstance(obj, (list, tuple)):
        items = [(str(i), v) for i, v in enumerate(obj)]
    else:
        return {prefix: obj}
    out: dict[str, Any] = {}
    for k, v in items:
        out.update(_flat(v, f"{prefix}.{k}" if prefix else k))
    if not items:
        out[prefix] = type(obj)()
    return out


# What a resume does with a key whose value changed since the checkpoint was written: the first
# matching prefix decides; keys that match none are honoured and not reported.
RESUME_DRIFT = (
    (
        "optim_wrapper.optimizer.type",
        "breaks exactness: the optimizer state was saved by another type",
    ),
    (
        "optim_wrapper.optimizer.",
        "ignored: resume restores the optimizer's param groups, this value included, from the "
        "checkpoint",
    ),
    ("optim_wrapper.paramwise_cfg", "ignored: the param groups are restored from the checkpoint"),
    (
        "optim_wrapper.",
        "breaks exactness: the update (clipping, accumulation, loss scale) differs from the "
        "interrupted run's",
    ),
    (
        "param_scheduler",
        "ignored: the schedulers' state (lengths, steps, base values) is restored from the "
        "checkpoint",
    ),
    (
        "train_dataloader.",
        "breaks exactness: the data order and the epoch length change, while schedules "
        "converted to iterations keep the checkpoint's epoch length",
    ),
    ("randomness.", "breaks exactness: the random streams differ from the interrupted run's"),
    ("model.", "breaks exactness: the model differs from the one that was trained"),
    (
        "train_cfg.max_",
        "the loop runs to the new length, but schedulers restored from the checkpoint keep the "
        "length they were built with",
    ),
)


def resume_drift(checkpoint: Mapping[str, Any], cfg: Any) -> list[str]:
    """One note per config key whose change a resume ignores or that makes it inexact, and
    one for a checkpoint without optimizer state."""
    notes = []
    if "optimizer" not in checkpoint:
        notes.append(
            "--resume: the checkpoint holds no optimizer state (saved with save_optimizer=False): "
            "the optimizer starts afresh, so the run does not continue exactly"
        )
    text = checkpoint.get("meta", {}).get("cfg")
    if not isinstance(text, str):
        return notes
    try:
        old = _flat(_literal_config(text))
        new = _flat(_literal_config(cfg.pretty_text))  # the same formatting on both sides
    except Exception:  # a config holding objects may have no source form
        old = new = {}
    if not old or not new:
        return notes + ["--resume: the checkpoint's config cannot be compared with this one"]
    missing = object()
    for key in sorted(set(old) | set(new)):
        before, now = old.get(key, missing), new.get(key, missing)
        if repr(before) == repr(now):
            continue
        reason = next((why for prefix, why in RESUME_DRIFT if key.startswith(prefix)), None)
        if reason is None:
            continue
        was = "unset" if before is missing else repr(before)
        is_ = "unset" if now is missing else repr(now)
        notes.append(f"--resume: {key} is {is_} (the checkpoint's config: {was}): {reason}")
    return notes


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


def make_runner_class(base: type, dump_config: bool) -> type:
    """A subclass of ``base`` (the ``Runner``) that records the metrics of each evaluation and
    writes the config into the work dir only after the checkpoint has been loaded (so a run
    that fails on bad input leaves an existing run's config dump alone), or never."""

    class CommandRunner(base):  # type: ignore[misc, valid-type]
        last_metrics: dict[str, dict[str, Any]]

        def dump_config(self) -> None:
            if getattr(self, "_config_dump_due", False) and dump_config:
                super().dump_config()

        def load_or_resume(self) -> None:
            super().load_or_resume()
            self._config_dump_due = True
            self.dump_config()

        def resume(self, filename: str, *args: Any, **kwargs: Any) -> None:
            from fastopt.fileio.checkpoint import CorruptCheckpointError

            try:
                super().resume(filename, *args, **kwargs)
            except CorruptCheckpointError as e:
                raise CommandError(str(e)) from e
            except (ValueError, KeyError, RuntimeError, TypeError) as e:
                raise CommandError(
                    f"cannot resume from {filename}: the checkpoint does not fit the config "
                    f"({error_line(e)})"
                ) from e

        iterations_run = 0  # training iterations this process ran (a failed start has none)

        def call_hook(self, fn_name: str, **kwargs: Any) -> None:
            if fn_name == "after_train_iter":
                self.iterations_run += 1
            if fn_name in ("after_val_epoch", "after_test_epoch"):
                if not hasattr(self, "last_metrics"):
                    self.last_metrics = {}
                self.last_metrics[fn_name[6:-6]] = dict(kwargs.get("metrics") or {})
            super().call_hook(fn_name, **kwargs)

    CommandRunner.__name__ = CommandRunner.__qualname__ = base.__name__
    return CommandRunner


def build_runner(cfg: Any, dump_config: bool) -> Any:
    """``Runner.from_cfg(cfg)`` with :func:`make_runner_class`'s behaviour."""
    from fastopt.registry import RUNNERS

    runner_type = cfg.get("runner_type", "Runner")
    base = RUNNERS.get(runner_type) if isinstance(runner_type, str) else runner_type
    if base is None:
        raise CommandError(f"runner_type {runner_type!r} is not in the runner registry")
    return make_runner_class(base, dump_config).from_cfg(cfg)


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


def warn_unknown_keys(cfg: Mapping[str, Any]) -> None:
    """Note top-level keys that nothing reads (``optim_wraper``; see
    :mod:`fastopt.config.known_keys`)."""
    from fastopt.config.known_keys import unused_key_warnings

    for message in unused_key_warnings(cfg):
        note(message)


# --------------------------------------------------------------------------- the command
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help=CONFIG_HELP)
    parser.add_argument(
        "--resume",
        nargs="?",
        const="auto",
        metavar="PATH",
        help="continue a run: from PATH, or (no PATH) from the latest checkpoint in the work dir",
    )
    parser.add_argument(
        "--amp",
        action="store_true",
        help="mixed precision: AmpOptimWrapper with bfloat16 on CPU, float16 on GPU",
    )
    add_common_arguments(parser)


def enable_amp(cfg: Any) -> None:
    """Switch ``optim_wrapper`` to ``AmpOptimWrapper`` (dynamic loss scale; bf16 on CPU,
    fp16 on GPU unless the config sets ``dtype``)."""
    import torch

    wrapper = cfg.get("optim_wrapper")
    if not isinstance(wrapper, Mapping):
        raise CommandError("--amp needs an optim_wrapper dict in the config")
    kind = wrapper.get("type", "OptimWrapper")
    if kind == "AmpOptimWrapper":
        note("AMP is already enabled in the config (optim_wrapper type AmpOptimWrapper)")
        return
    if kind != "OptimWrapper":
        raise CommandError(
            f"--amp works with optim_wrapper type OptimWrapper, but the config uses {kind!r}"
        )
    wrapper["type"] = "AmpOptimWrapper"
    wrapper.setdefault("loss_scale", "dynamic")
    wrapper.setdefault("dtype", "float16" if torch.cuda.is_available() else "bfloat16")


def prepare(args: argparse.Namespace) -> tuple[Any, str | None, str, str | None]:
    """Config with the command line applied, the checkpoint to load (or None), how, and the
    checksum ``last_checkpoint`` recorded for it (or None)."""
    if args.launcher == "pytorch" and "LOCAL_RANK" not in os.environ:
        os.environ["LOCAL_RANK"] = str(args.local_rank)
    check_launcher(args.launcher)
    cfg = load_config(args.config, args.cfg_options)
    warn_unknown_keys(cfg)
    cfg["work_dir"] = args.work_dir or cfg.get("work_dir") or default_work_dir(args.config)
    cfg["launcher"] = args.launcher
    if args.amp:
        enable_amp(cfg)
    if args.resume == "auto":
        cfg["resume"], cfg["load_from"] = True, None
    elif args.resume is not None:
        cfg["resume"], cfg["load_from"] = True, args.resume
    work_dir = os.path.abspath(cfg["work_dir"])
    check_writable_dir(work_dir)

    resume, load_from = bool(cfg.get("resume")), cfg.get("load_from")
    if resume and load_from is None:
        from fastopt.fileio.checkpoint import read_last_checkpoint

        record = read_last_checkpoint(work_dir)
        path = None if record is None else record.path
        found = [f for f in existing_checkpoints(work_dir) if f.endswith(".pth")]
        if path is None and found:
            raise CommandError(
                f"--resume: {shown_path(work_dir)} has no usable last_checkpoint record but "
                f"holds {', '.join(found[:4])}; name the one to continue: --resume PATH"
            )
        if path is None and args.resume == "auto":
            note(f"no checkpoint in {shown_path(work_dir)} to resume from; training from scratch")
        return cfg, path, "resume", None if record is None else record.sha256
    if not resume:
        found = existing_checkpoints(work_dir)
        if found:
            shown = ", ".join(found[:4]) + (" ..." if len(found) > 4 else "")
            raise CommandError(
                f"work dir {shown_path(work_dir)} already holds a run's checkpoints ({shown}); "
                "continue it with --resume, or start a new run with --work-dir NEW_DIR "
                "(nothing was changed)"
            )
    return cfg, load_from, "resume" if resume else "load", None


def run(args: argparse.Namespace) -> int:
    try:
        args.config = resolve_config(args.config)
        with dotted_types_for_config(args.config, args.allow_dotted_types):
            return _train(args)
    except Exception as e:
        if args.debug:
            raise
        return report_error("train", e)


def _train(args: argparse.Namespace) -> int:
    from fastopt.commands import work_dir as hold

    cfg, checkpoint_path, mode, sha256 = prepare(args)
    checkpoint = read_checkpoint(checkpoint_path, sha256, mode) if checkpoint_path else None
    complete = None
    if checkpoint is not None and mode == "resume":
        assert checkpoint_path is not None
        # still resumed: the hooks finish what a kill after the last save left undone
        complete = completed_run(checkpoint_path, checkpoint, cfg)
    work_dir = os.path.abspath(cfg["work_dir"])
    rank = hold.writer_rank(cfg)
    runner: Any = None

    def trained() -> bool:
        return bool(getattr(runner, "iterations_run", 0))

    # one run per work dir; a run that fails before its first iteration leaves no trace in it
    created = hold.first_missing(work_dir)
    with hold.exclusive(work_dir, rank), hold.undo_on_failure(work_dir, trained, created, rank):
        start = time.perf_counter()
        runner = build_runner(cfg, dump_config=True)
        try:
            if checkpoint is not None:
                from fastopt.model import unwrap_model

                assert checkpoint_path is not None
                for warning in check_checkpoint_fits(
                    checkpoint_path, checkpoint, unwrap_model(runner.model), mode
                ):
                    runner.logger.warning(warning)
                if mode == "resume":
                    for warning in resume_drift(checkpoint, cfg):
                        runner.logger.warning(warning)
                del checkpoint
            runner.train()
            elapsed = time.perf_counter() - start
            if runner.rank == 0 and complete is not None:
                print(complete, flush=True)
            elif runner.rank == 0:
                summarize(runner, elapsed)
        finally:
            runner.close()
    finish_distributed()
    return 0


def completed_run(path: str, checkpoint: Mapping[str, Any], cfg: Any) -> str | None:
    """What to say instead of the summary when ``--resume`` finds a run that already trained
    to the config's length (None when there is training left)."""
    from fastopt.runner.header import plural

    meta = checkpoint.get("meta") or {}
    train_cfg = cfg.get("train_cfg") or {}
    iter_based = train_cfg.get("type") == "IterBasedTrainLoop" or train_cfg.get("by_epoch") is False
    key = "max_iters" if iter_based else "max_epochs"
    done = meta.get("iter" if iter_based else "epoch")
    target = train_cfg.get(key)
    if not isinstance(done, int) or not isinstance(target, int) or done < target:
        return None
    unit = "iteration" if iter_based else "epoch"
    return (
        f"fastopt train: the run in {shown_path(cfg['work_dir'])} is complete: "
        f"{shown_path(path)} was saved after {plural(done, unit)}, and train_cfg.{key} is "
        f"{target}. Nothing to train. To train it further, resume with --cfg-options "
        f"train_cfg.{key}=N (N > {done}; the schedules keep the length they were built with)."
    )


def summarize(runner: Any, elapsed: float) -> None:
    """Print the final metrics and where the logs, checkpoints and plot are; draw the plot."""
    from fastopt.runner.header import plural

    from . import plot

    hub = runner.message_hub
    if runner.train_loop.__class__.__name__ == "IterBasedTrainLoop":
        length = plural(runner.iter, "iteration")
    else:
        length = f"{plural(runner.epoch, 'epoch')} ({plural(runner.iter, 'iteration')})"
    lines = [f"fastopt train: finished {length} in {elapsed:.1f} s"]
    metrics = getattr(runner, "last_metrics", {}).get("val")
    if metrics:
        lines.append(f"  final val:   {format_metrics(metrics)}")
    else:
        lines.append("  final val:   (no validation ran)")
    for hook in runner.hooks:
        keys = getattr(hook, "key_indicators", None) or []
        for key in keys:
            suffix = "" if len(keys) == 1 else f"_{key}"
            score, ckpt = hub.get_info(f"best_score{suffix}"), hub.get_info(f"best_ckpt{suffix}")
            if score is not None:
                where = f" ({shown_path(ckpt)})" if ckpt else ""
                lines.append(f"  best:        {key}: {float(score):.2f}{where}")
    log_file = os.path.join(runner.log_dir, f"{runner.timestamp}.log")
    scalars = os.path.join(runner.log_dir, "vis_data", "scalars.json")
    lines.append(f"  log:         {shown_path(log_file)}")
    if os.path.isfile(scalars):  # a run that logged nothing has none
        lines.append(f"  scalars:     {shown_path(scalars)}")
    from fastopt.fileio.checkpoint import read_last_checkpoint

    record = read_last_checkpoint(runner.work_dir)
    if record is not None:
        lines.append(f"  checkpoint:  {shown_path(record.path)} (resume with --resume)")
    else:
        lines.append(f"  checkpoints: none written (work dir {shown_path(runner.work_dir)})")
    out = os.path.join(runner.log_dir, PLOT_NAME)
    try:
        plot.plot_work_dir(runner.work_dir, out)
        lines.append(f"  plot:        {shown_path(out)}")
    except Exception as e:  # the run itself succeeded; a plot problem must not hide that
        lines.append(f"  plot:        not drawn ({error_line(e)})")
    sys.stdout.flush()
    print("\n".join(lines), flush=True)
