"""``CheckpointHook``: periodic, last and best checkpoints, with retention.

Behaviour and file names are MMEngine's (``epoch_{n}.pth`` / ``iter_{n}.pth``,
``best_{metric}_{epoch|iter}_{n}.pth``, ``work_dir/last_checkpoint``), with two fixes:

* every file is written atomically (see :mod:`fastopt.fileio.checkpoint`) and loads with
  ``torch.load(weights_only=True)``;
* a best checkpoint keeps the optimizer and scheduler states (per ``save_optimizer`` /
  ``save_param_scheduler``), so training can resume from it (open-mmlab/mmengine#1409);
* a checkpoint is removed only after its successor is in place: written, fsynced, renamed
  and recorded in ``last_checkpoint`` (MMEngine removes the oldest one first, so a process
  killed during the save of ``epoch_2.pth`` with ``max_keep_ckpts=1`` has no checkpoint
  left). A checkpoint names the files still to be removed (``keep_ckpt_ids`` longer than
  ``max_keep_ckpts``, ``stale_best_ckpts``), so a run resumed after a kill between the
  record and the removal removes them.
"""

from __future__ import annotations

import glob
import math
import os
import re
import shutil
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Callable

from fastopt import dist
from fastopt.dist import is_main_process
from fastopt.evaluator.metric import is_finite_number
from fastopt.fileio.checkpoint import load_checkpoint_file, save_checkpoint_as
from fastopt.model.fsdp import SHARDED_STATE, read_sharded_model_state, sharded_state_dir
from fastopt.registry import HOOKS

from .hook import DATA_BATCH, Hook

if TYPE_CHECKING:
    from fastopt.runner import Runner


_RULES: dict[str, Callable[[float, float], bool]] = {
    "greater": lambda x, y: x > y,
    "less": lambda x, y: x < y,
}
_INIT = {"greater": -math.inf, "less": math.inf}
DEFAULT_GREATER_KEYS = (
    "acc",
    "top",
    "AR@",
    "auc",
    "precision",
    "mAP",
    "mDice",
    "mIoU",
    "mAcc",
    "aAcc",
)
DEFAULT_LESS_KEYS = ("loss",)


def infer_rule(key: str, greater_keys: Sequence[str], less_keys: Sequence[str]) -> str:
    """'greater' or 'less' for metric ``key`` (exact match first, then substring; any case)."""
    lower = key.lower()
    greater = {k.lower() for k in greater_keys}
    less = {k.lower() for k in less_keys}
    if lower in greater:
        return "greater"
    if lower in less:
        return "less"
    if any(k in lower for k in greater):
        return "greater"
    if any(k in lower for k in less):
        return "less"
    raise ValueError(
        f"Cannot infer the rule for key {key}, thus a specific rule must be specified."
    )


def _str_list(value: Any, name: str) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return list(value)
    raise TypeError(f'"{name}" should be a str or list of str or None, but got {type(value)}')


@HOOKS.register_module()
class CheckpointHook(Hook):
    """Save checkpoints every ``interval`` epochs/iterations, at the end, and on new bests.

    Args:
        interval: save every ``interval`` epochs (``by_epoch``) or iterations; -1: never
            periodically (only ``save_last`` / ``save_best``).
        by_epoch: count in epochs (True) or iterations.
        save_optimizer: include the optimizer (wrapper) state.
        save_param_scheduler: include the schedulers' states.
        out_dir: save under ``out_dir/<work_dir name>`` instead of the work dir.
        max_keep_ckpts: keep only the newest this many periodic checkpoints (-1: all).
        save_last: always save after the last epoch/iteration.
        save_best: metric name(s) whose best value gets its own checkpoint; ``'auto'`` = the
            first metric.
        rule: ``'greater'``/``'less'`` per ``save_best`` key (None: inferred from the name).
        greater_keys, less_keys: names used to infer the rule.
        filename_tmpl: file name template (default ``epoch_{}.pth`` / ``iter_{}.pth``).
        published_keys: after training, also write ``<ckpt>-<sha256[:8]>.pth`` with only these
            keys (e.g. ``['meta', 'state_dict']``).
        save_begin: first epoch/iteration counted for ``interval``.
        file_client_args, backend_args: only local storage is supported.
    """

    priority = "VERY_LOW"

    def __init__(
        self,
        interval: int = -1,
        by_epoch: bool = True,
        save_optimizer: bool = True,
        save_param_scheduler: bool = True,
        out_dir: str | None = None,
        max_keep_ckpts: int = -1,
        save_last: bool = True,
        save_best: str | list[str] | None = None,
        rule: str | list[str] | None = None,
        greater_keys: str | Sequence[str] | None = None,
        less_keys: str | Sequence[str] | None = None,
        file_client_args: dict | None = None,
        filename_tmpl: str | None = None,
        backend_args: dict | None = None,
        published_keys: str | list[str] | None = None,
        save_begin: int = 0,
    ) -> None:
        if not isinstance(interval, int) or isinstance(interval, bool):
            raise TypeError(f"interval must be an int, but got {interval!r}")
        if save_begin < 0:
            raise ValueError(f"save_begin should not be less than 0, but got {save_begin}")
        if file_client_args is not None and backend_args is not None:
            raise ValueError(
                '"file_client_args" and "backend_args" cannot be set at the same time.'
            )
        for name, args in (("file_client_args", file_client_args), ("backend_args", backend_args)):
            if args is not None and args.get("backend", "local") not in ("local", "disk"):
                raise ValueError(
                    f"{name}={args} selects a remote storage backend; checkpoints are written "
                    "to local paths only"
                )
        self.interval = interval
        self.by_epoch = by_epoch
        self.save_optimizer = save_optimizer
        self.save_param_scheduler = save_param_scheduler
        self.out_dir = out_dir
        self._out_dir_cfg = out_dir
        self.max_keep_ckpts = max_keep_ckpts
        self.save_last = save_last
        self.save_begin = save_begin
        self.filename_tmpl = filename_tmpl or ("epoch_{}.pth" if by_epoch else "iter_{}.pth")
        # a str is one key, as in MMEngine (not its characters); other non-str items raise
        greater = _str_list(greater_keys, "greater_keys")
        less = _str_list(less_keys, "less_keys")
        self.greater_keys = list(DEFAULT_GREATER_KEYS) if greater is None else greater
        self.less_keys = list(DEFAULT_LESS_KEYS) if less is None else less

        best = _str_list(save_best, "save_best")
        if best is not None:
            if "auto" in best and len(best) != 1:
                raise ValueError('Only support one "auto" in "save_best" list.')
            if len(best) != len(set(best)):
                raise ValueError('Find duplicate element in "save_best".')
        self.save_best = best
        rules = _str_list(rule, "rule") if rule is not None else None
        if rules is None:
            rules = [None] * (len(best) if best else 1)  # type: ignore[list-item]
        elif best is not None and len(rules) not in (1, len(best)):
            raise ValueError(
                f'Number of "rule" must be 1 or the same as number of "save_best", but got {len(rules)}.'
            )
        for r in rules:
            if r is not None and r not in _RULES:
                raise KeyError(f"rule must be greater, less or None, but got {r}.")
        self._rules_cfg = rules
        self.key_indicators: list[str] = []
        self.rules: list[str | None] = []
        if best is not None:
            self._init_rule(rules, best)
        self.best_ckpt_paths: dict[str, str | None] = {}

        published = _str_list(published_keys, "published_keys")
        if published is not None and len(published) != len(set(published)):
            raise ValueError('Find duplicate elements in "published_keys".')
        self.published_keys = published
        self.last_ckpt: str | None = None
        self.keep_ckpt_ids: deque[int] = deque()

    def _init_rule(self, rules: list[str | None], keys: list[str]) -> None:
        if len(rules) == 1:
            rules = rules * len(keys)
        self.rules = []
        for r, key in zip(rules, keys):
            if r is None and key != "auto":
                r = infer_rule(key, self.greater_keys, self.less_keys)
            self.rules.append(r)
        self.key_indicators = list(keys)

    # ------------------------------------------------------------------- training points
    def before_train(self, runner: Runner) -> None:
        # resolved from the configured value each time: train() may run more than once
        if self._out_dir_cfg is None:
            self.out_dir = runner.work_dir
        elif os.path.abspath(self._out_dir_cfg) != runner.work_dir:
            name = os.path.basename(runner.work_dir.rstrip(os.sep))
            self.out_dir = os.path.join(self._out_dir_cfg, name)
        runner.logger.info(f"Checkpoints will be saved to {self.out_dir}.")
        self._remove_torn_files(runner)
        hub = runner.message_hub
        if self.save_best is not None:
            for key in self.key_indicators:
                self.best_ckpt_paths[key] = hub.get_info(self._best_ckpt_info_key(key))
        if self.max_keep_ckpts > 0:
            kept = list(hub.get_info("keep_ckpt_ids", []))
            # longer than max_keep_ckpts: a save was interrupted before it removed its
            # predecessors (or the budget shrank)
            while len(kept) > self.max_keep_ckpts:
                self._remove_unless_current(
                    os.path.join(self.out_dir, self.filename_tmpl.format(kept.pop(0))),
                    [os.path.join(self.out_dir, self.filename_tmpl.format(k)) for k in kept],
                )
            self.keep_ckpt_ids = deque(kept)
            hub.update_info("keep_ckpt_ids", kept)
        stale = list(hub.get_info("stale_best_ckpts", None) or [])
        if stale:  # previous bests whose removal was interrupted
            current = [p for p in self.best_ckpt_paths.values() if p]
            for path in stale:
                self._remove_unless_current(path, current)
            hub.update_info("stale_best_ckpts", [])
        self._adopt_interrupted_bests(runner)

    def _adopt_interrupted_bests(self, runner: Runner) -> None:
        """A best checkpoint written just before a kill, before the regular checkpoint of its
        step was rewritten to name it, is unknown to the resumed run (which does not repeat
        that validation): adopt it when its score beats the recorded best (removing that
        one), else remove it as superseded. Only files this hook wrote as bests (their message
        hub names them so) of a step not after the resumed one are considered. Rank 0 looks
        at the files and tells the other ranks (they must agree on the best score)."""
        if not self.save_best or runner.iter == 0:
            return
        adopted = self._find_interrupted_bests(runner) if is_main_process() else []
        if dist.is_distributed():
            adopted = dist.broadcast_object(adopted)
        hub = runner.message_hub
        for key, path, score in adopted:
            self.best_ckpt_paths[key] = path
            hub.update_info(self._best_ckpt_info_key(key), path)
            hub.update_info(self._best_score_info_key(key), score)

    def _find_interrupted_bests(self, runner: Runner) -> list[tuple[str, str, float]]:
        assert self.out_dir is not None
        hub = runner.message_hub
        single = len(self.key_indicators) == 1
        adopted = []
        for key, rule in zip(self.key_indicators, self.rules):
            if rule is None:  # 'auto' before the first evaluation names the metric
                continue
            tracked = self.best_ckpt_paths.get(key)
            best = hub.get_info(self._best_score_info_key(key), _INIT[rule])
            pattern = "best_*.pth" if single else f"best_{key}_*.pth".replace("/", "_")
            for path in sorted(glob.glob(os.path.join(self.out_dir, pattern))):
                if tracked and os.path.basename(tracked) == os.path.basename(path):
                    continue
                if re.search(r"-[0-9a-f]{8}\.pth$", path):  # published
                    continue
                try:
                    ckpt = load_checkpoint_file(path)
                    info = ckpt["message_hub"]["runtime_info"]
                    step = int(ckpt["meta"]["iter"])
                except Exception:
                    continue
                named = info.get(self._best_ckpt_info_key(key))
                if not named or os.path.basename(named) != os.path.basename(path):
                    continue
                if step > runner.iter:  # a later step: it is reached (and rewritten) again
                    continue
                score = info.get(self._best_score_info_key(key))
                if is_finite_number(score) and _RULES[rule](score, best):
                    runner.logger.warning(
                        f"adopted {path} as the best checkpoint ({key}={score}): it was "
                        "written just before the previous run stopped"
                    )
                    if tracked:
                        self._remove_unless_current(tracked, [path])
                    tracked, best = path, float(score)
                    adopted.append((key, path, best))
                elif self._remove_unless_current(path, [tracked or ""]):
                    runner.logger.warning(
                        f"removed {path}, a superseded best checkpoint left by the previous run"
                    )
        return adopted

    def after_train_epoch(self, runner: Runner) -> None:
        if not self.by_epoch:
            return
        if self.every_n_epochs(runner, self.interval, self.save_begin) or (
            self.save_last and self.is_last_train_epoch(runner)
        ):
            runner.logger.info(f"Saving checkpoint at {runner.epoch + 1} epochs")
            self._save_checkpoint(runner)

    def after_train_iter(
        self,
        runner: Runner,
        batch_idx: int,
        data_batch: DATA_BATCH = None,
        outputs: dict | None = None,
    ) -> None:
        if self.by_epoch:
            return
        if self.every_n_train_iters(runner, self.interval, self.save_begin) or (
            self.save_last and self.is_last_train_iter(runner)
        ):
            runner.logger.info(f"Saving checkpoint at {runner.iter + 1} iterations")
            self._save_checkpoint(runner)

    def after_val_epoch(self, runner: Runner, metrics: dict[str, Any] | None = None) -> None:
        if not metrics:
            if self.save_best:
                runner.logger.warning(
                    "Since `metrics` is an empty dict, the behavior to save the best checkpoint "
                    "will be skipped in this evaluation."
                )
            return
        if self.out_dir is None:  # runner.val() outside training: no run state to checkpoint
            return
        self._save_best_checkpoint(runner, metrics)

    def after_train(self, runner: Runner) -> None:
        if self.published_keys is None:
            return
        if self.save_last and self.last_ckpt is not None:
            self._publish_model(runner, self.last_ckpt)
        for path in self.best_ckpt_paths.values():
            if path is not None:
                self._publish_model(runner, path)

    # ------------------------------------------------------------------------- saving
    def _save_checkpoint(self, runner: Runner) -> None:
        if self.by_epoch:
            step = runner.epoch + 1
            meta = dict(epoch=step, iter=runner.iter)
        else:
            step = runner.iter + 1
            meta = dict(epoch=runner.epoch, iter=step)
        self._save_checkpoint_with_step(runner, step, meta)

    def _save_checkpoint_with_step(self, runner: Runner, step: int, meta: dict) -> None:
        assert self.out_dir is not None
        filename = self.filename_tmpl.format(step)
        path = os.path.join(self.out_dir, filename)
        hub = runner.message_hub
        stale: list[int] = []
        if self.max_keep_ckpts > 0 and not (self.keep_ckpt_ids and self.keep_ckpt_ids[-1] == step):
            self.keep_ckpt_ids.append(step)
            stale = list(self.keep_ckpt_ids)[: -self.max_keep_ckpts]
            # the checkpoint lists its predecessors still to be removed: a run resumed from it
            # after a kill before the removal below removes them (before_train)
            hub.update_info("keep_ckpt_ids", list(self.keep_ckpt_ids))
        self.last_ckpt = path
        hub.update_info("last_ckpt", path)
        sha256 = runner.save_checkpoint(
            self.out_dir,
            filename,
            save_optimizer=self.save_optimizer,
            save_param_scheduler=self.save_param_scheduler,
            meta=meta,
            by_epoch=self.by_epoch,
        )
        if is_main_process():
            runner.write_last_checkpoint(path, sha256)
        # only now, with the new checkpoint written, fsynced, renamed and recorded
        for old in stale:
            self.keep_ckpt_ids.popleft()
            self._remove_unless_current(
                os.path.join(self.out_dir, self.filename_tmpl.format(old)), [path]
            )
        if stale:
            hub.update_info("keep_ckpt_ids", list(self.keep_ckpt_ids))

    def _best_ckpt_info_key(self, key: str) -> str:
        return "best_ckpt" if len(self.key_indicators) == 1 else f"best_ckpt_{key}"

    def _best_score_info_key(self, key: str) -> str:
        return "best_score" if len(self.key_indicators) == 1 else f"best_score_{key}"

    def _save_best_checkpoint(self, runner: Runner, metrics: dict[str, Any]) -> None:
        if not self.save_best:
            return
        if self.by_epoch:
            current, unit = runner.epoch, "epoch"
        else:
            current, unit = runner.iter, "iter"
        filename = self.filename_tmpl.format(current)
        meta = dict(epoch=runner.epoch, iter=runner.iter)
        if "auto" in self.key_indicators:
            self._init_rule(self.rules, [next(iter(metrics))])
        updated = False
        hub = runner.message_hub
        superseded: list[str] = []
        for key, rule in zip(self.key_indicators, self.rules):
            if key not in metrics:
                raise KeyError(
                    f"save_best={key!r} is not among the evaluation metrics {sorted(metrics)}"
                )
            score = metrics[key]
            assert rule is not None
            best = hub.get_info(self._best_score_info_key(key), _INIT[rule])
            if score is None:
                continue
            # a nan/inf metric (a diverged model) is never the best: nan compares False
            # with everything, and inf would stay best for ever
            if not is_finite_number(score):
                runner.logger.warning(
                    f"save_best: {key}={score} at {current} {unit} is not finite; no best "
                    "checkpoint is saved for it"
                )
                continue
            if not _RULES[rule](score, best):
                continue
            updated = True
            hub.update_info(self._best_score_info_key(key), float(score))
            # a resumed 'auto' run restored its path before the metric name was known
            previous = self.best_ckpt_paths.get(key) or hub.get_info(self._best_ckpt_info_key(key))
            best_name = f"best_{key}_{filename}".replace("/", "_")
            assert self.out_dir is not None
            path = os.path.join(self.out_dir, best_name)
            if previous and previous != path:
                superseded.append(previous)  # removed once the new best is in place
            self.best_ckpt_paths[key] = path
            hub.update_info(self._best_ckpt_info_key(key), path)
            runner.save_checkpoint(
                self.out_dir,
                filename=best_name,
                save_optimizer=self.save_optimizer,
                save_param_scheduler=self.save_param_scheduler,
                meta=meta,
                by_epoch=False,
            )
            runner.logger.info(
                f"The best checkpoint with {score:0.4f} {key} at {current} {unit} is saved to "
                f"{best_name}."
            )
        # The regular checkpoint of this step was written before the new best was known;
        # write it again so that its message hub names the current best (a resumed run must
        # be able to delete it when a better one comes). MMEngine also does this when the
        # last regular checkpoint is of an earlier step, creating an unscheduled one; not here.
        # The previous bests go only after the new ones are written and, when this step has a
        # regular checkpoint, after it is rewritten and recorded naming them as stale.
        if superseded:
            hub.update_info("stale_best_ckpts", superseded)
        if updated and self.last_ckpt == os.path.join(self.out_dir, filename):
            self._save_checkpoint_with_step(runner, current, meta)
        current_bests = [self.best_ckpt_paths.get(k) or "" for k in self.key_indicators]
        for previous in superseded:
            if self._remove_unless_current(previous, current_bests):
                runner.logger.info(f"The previous best checkpoint {previous} is removed")
        if superseded:
            hub.update_info("stale_best_ckpts", [])

    def _remove_torn_files(self, runner: Runner) -> None:
        """Delete temporary files that a killed save left behind (``.<name>.<random>.tmp``):
        checkpoints, ``last_checkpoint`` and the dumped config."""
        assert self.out_dir is not None
        if not is_main_process() or not os.path.isdir(self.out_dir):
            return
        for directory, pattern in (
            (self.out_dir, ".*.pth.*.tmp"),
            (runner.work_dir, ".last_checkpoint.*.tmp"),
            *((runner.work_dir, f".*.{ext}.*.tmp") for ext in ("py", "json", "yaml", "yml")),
        ):
            for path in glob.glob(os.path.join(directory, pattern)):
                os.remove(path)
                runner.logger.warning(f"removed {path}, left by an interrupted checkpoint save")

    @staticmethod
    def _remove_unless_current(path: str, current: Sequence[str]) -> bool:
        """Remove ``path`` unless it is one of the ``current`` checkpoints (a template without
        ``{}``, or a best that kept its name, makes a successor share its predecessor's name)."""
        if any(os.path.abspath(path) == os.path.abspath(c) for c in current):
            return False
        if is_main_process() and os.path.isfile(path):
            os.remove(path)
            # its FSDP2 sharded state directory goes with it (after: an orphan is harmless)
            shards = sharded_state_dir(path)
            if os.path.isdir(shards):
                shutil.rmtree(shards)
            return True
        return False

    def _publish_model(self, runner: Runner, ckpt_path: str) -> None:
        if not is_main_process():
            return
        checkpoint = load_checkpoint_file(ckpt_path)  # verified: never publish a corrupt file
        assert self.published_keys is not None
        shards = checkpoint.get("meta", {}).get(SHARDED_STATE)
        if shards is not None and "state_dict" in self.published_keys:  # FSDP2, sharded
            shards = os.path.join(os.path.dirname(ckpt_path), shards)
            checkpoint["state_dict"] = read_sharded_model_state(shards)
        removed = [k for k in list(checkpoint) if k not in self.published_keys]
        for key in removed:
            checkpoint.pop(key)
        if removed:
            runner.logger.info(
                f"Key {removed} will be removed because they are not found in published_keys. "
                f"If you want to keep them, please set `{removed}` in published_keys"
            )
        # named after the SHA-256 of the bytes torch.save wrote (as MMEngine's), which is also
        # the checksum stored in the file; written once, atomically
        stem = os.path.splitext(os.path.basename(ckpt_path))[0]
        final_path, _ = save_checkpoint_as(
            checkpoint, os.path.dirname(ckpt_path), lambda sha: f"{stem}-{sha[:8]}.pth"
        )
        runner.logger.info(f"The checkpoint ({ckpt_path}) is published to {final_path}.")
