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
import time
from collections.abc import Mapping
from typing import Any

from fastopt.config.shipped import resolve_config
from fastopt.registry.type_policy import dotted_types_for_config

from .common import (
    CONFIG_HELP,
    CommandError,
    add_common_arguments,
    build_runner,
    check_checkpoint_fits,
    check_launcher,
    check_writable_dir,
    default_work_dir,
    error_line,
    finish_distributed,
    format_metrics,
    load_config,
    note,
    read_checkpoint,
    report_error,
    shown_path,
)

# CONFIG_HELP and CommandError are this module's too (fastopt plot-schedule, the tests)
__all__ = ["CONFIG_HELP", "CommandError", "add_arguments", "run"]

HELP = "train a model from a config file (MMEngine tools/train.py conventions)"

PLOT_NAME = "curves.png"


def existing_checkpoints(work_dir: str) -> list[str]:
    """Checkpoint files (``*.pth``) and the ``last_checkpoint`` marker in ``work_dir``."""
    if not os.path.isdir(work_dir):
        return []
    found = sorted(os.path.basename(p) for p in glob.glob(os.path.join(work_dir, "*.pth")))
    if os.path.isfile(os.path.join(work_dir, "last_checkpoint")):
        found.append("last_checkpoint")
    return found


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
    record: Any = None

    def trained() -> bool:
        return record is not None and record.iterations_run > 0

    # one run per work dir; a run that fails before its first iteration leaves no trace in it
    created = hold.first_missing(work_dir)
    with hold.exclusive(work_dir, rank), hold.undo_on_failure(work_dir, trained, created, rank):
        start = time.perf_counter()
        # the config is dumped once the checkpoint is loaded: a run that fails on bad input
        # leaves an existing run's dump alone
        runner, record = build_runner(cfg, config_dump="after_load")
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
            train(runner, record, checkpoint_path if mode == "resume" else None)
            elapsed = time.perf_counter() - start
            if runner.rank == 0 and complete is not None:
                print(complete, flush=True)
            elif runner.rank == 0:
                summarize(runner, record, elapsed)
        finally:
            runner.close()
    finish_distributed()
    return 0


def train(runner: Any, record: Any, resumed: str | None) -> None:
    """``runner.train()``; when it resumes from ``resumed``, an error while the checkpoint is
    restored (between loading it and training) means it does not fit the config."""
    from fastopt.fileio.checkpoint import CorruptCheckpointError

    try:
        runner.train()
    except CorruptCheckpointError as e:
        if resumed is None or record.training_started:
            raise
        raise CommandError(str(e)) from e
    except (ValueError, KeyError, RuntimeError, TypeError) as e:
        if resumed is None or not record.restoring:
            raise
        raise CommandError(
            f"cannot resume from {resumed}: the checkpoint does not fit the config "
            f"({error_line(e)})"
        ) from e


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


def summarize(runner: Any, record: Any, elapsed: float) -> None:
    """Print the final metrics and where the logs, checkpoints and plot are; draw the plot."""
    from fastopt.runner.header import plural

    from . import plot

    hub = runner.message_hub
    if runner.train_loop.__class__.__name__ == "IterBasedTrainLoop":
        length = plural(runner.iter, "iteration")
    else:
        length = f"{plural(runner.epoch, 'epoch')} ({plural(runner.iter, 'iteration')})"
    lines = [f"fastopt train: finished {length} in {elapsed:.1f} s"]
    metrics = record.last_metrics.get("val")
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
