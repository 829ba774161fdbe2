"""``fastopt test``: evaluate a checkpoint on a config's test set (MMEngine ``tools/test.py``).

``fastopt test CONFIG CHECKPOINT [--work-dir DIR] [--cfg-options K=V ...] [--launcher ...]``.
The checkpoint must hold every weight of the config's model, with the same shapes; a config
without ``test_dataloader``/``test_evaluator`` is tested on its validation set. The log goes
to a new ``<work_dir>/<timestamp>/`` dir; nothing else in the work dir is written.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
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
    finish_distributed,
    format_metrics,
    load_config,
    read_checkpoint,
    report_error,
    shown_path,
)

HELP = "evaluate a checkpoint on a config's test set (or its validation set)"

_TEST_KEYS = ("test_dataloader", "test_cfg", "test_evaluator")
_VAL_KEYS = ("val_dataloader", "val_cfg", "val_evaluator")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help=CONFIG_HELP)
    parser.add_argument("checkpoint", help="checkpoint file (e.g. work_dirs/<name>/epoch_12.pth)")
    add_common_arguments(parser)


def use_test_set(cfg: Any) -> str:
    """Make sure ``cfg`` has a test loop; fall back to the validation set. Returns which."""
    if all(cfg.get(k) is not None for k in _TEST_KEYS):
        return "test"
    if all(cfg.get(k) is not None for k in _VAL_KEYS):
        for test_key, val_key in zip(_TEST_KEYS, _VAL_KEYS):
            cfg[test_key] = cfg[val_key]
        return "val"
    raise CommandError(
        "the config has neither test_dataloader, test_cfg and test_evaluator nor "
        "val_dataloader, val_cfg and val_evaluator: nothing to test on"
    )


def describe_dataset(dataset: Any) -> str:
    """``SyntheticShapes split 'test', 1000 samples``: the class, its split if it has one, and
    its length."""
    split = getattr(dataset, "split", None)
    parts = [type(dataset).__name__ + (f" split {split!r}" if split is not None else "")]
    try:
        parts.append(f"{len(dataset)} samples")
    except TypeError:  # an iterable dataset has no length
        pass
    return ", ".join(parts)


def evaluated_data(dataset: Any, cfg: Any, split: str) -> str:
    """What was evaluated, and (when it differs) the split training validated on: the two
    accuracies are then of different data."""
    text = describe_dataset(dataset)
    val = ((cfg.get("val_dataloader") or {}).get("dataset") or {}) if split == "test" else {}
    val_split = val.get("split") if isinstance(val, dict) else None
    if val_split is not None and val_split != getattr(dataset, "split", None):
        text += f" (training's validation used split {val_split!r})"
    return text


def run(args: argparse.Namespace) -> int:
    try:
        args.config = resolve_config(args.config)
        with dotted_types_for_config(args.config, args.allow_dotted_types):
            return _test(args)
    except Exception as e:
        if args.debug:
            raise
        return report_error("test", e)


def _test(args: argparse.Namespace) -> int:
    if args.launcher == "pytorch" and "LOCAL_RANK" not in os.environ:
        os.environ["LOCAL_RANK"] = str(args.local_rank)
    check_launcher(args.launcher)
    cfg = load_config(args.config, args.cfg_options)
    cfg["work_dir"] = args.work_dir or cfg.get("work_dir") or default_work_dir(args.config)
    cfg["launcher"] = args.launcher
    cfg["load_from"], cfg["resume"] = args.checkpoint, False
    split = use_test_set(cfg)
    checkpoint = read_checkpoint(args.checkpoint, purpose="test")
    check_writable_dir(cfg["work_dir"])

    from fastopt.commands import work_dir as hold

    work_dir = os.path.abspath(cfg["work_dir"])
    rank = hold.writer_rank(cfg)
    # a failed evaluation leaves the work dir as it was (its log dir is removed)
    with hold.undo_on_failure(work_dir, lambda: False, hold.first_missing(work_dir), rank):
        return _evaluate(args, cfg, checkpoint, split)


def _evaluate(args: argparse.Namespace, cfg: Any, checkpoint: Any, split: str) -> int:
    start = time.perf_counter()
    runner, _ = build_runner(cfg, config_dump="never")
    try:
        from fastopt.model import unwrap_model

        for warning in check_checkpoint_fits(
            args.checkpoint, checkpoint, unwrap_model(runner.model), "test"
        ):
            runner.logger.warning(warning)
        del checkpoint
        metrics = runner.test()
        elapsed = time.perf_counter() - start
        if runner.rank == 0:
            shown = format_metrics(metrics) or "(the evaluator returned no numbers)"
            where = "test set" if split == "test" else "validation set (the config has no test set)"
            print(
                f"fastopt test: {shown_path(args.checkpoint)} on the {where} in {elapsed:.1f} s\n"
                f"  data: {evaluated_data(runner.test_dataloader.dataset, cfg, split)}\n"
                f"  {shown}\n"
                f"  log: {shown_path(os.path.join(runner.log_dir, runner.timestamp + '.log'))}",
                flush=True,
            )
    finally:
        runner.close()
    sys.stdout.flush()
    finish_distributed()
    return 0
