"""MMCV 1.x ``lr_config`` / ``momentum_config``, reproduced value for value.

MMCV 1.x drove the learning rate with ``LrUpdaterHook`` subclasses chosen by
``lr_config['policy']`` (and the momentum with ``MomentumUpdaterHook`` ones). Those hooks
are not chainable: every iteration they recompute an absolute value from the base value,
the epoch or iteration counter and the run length (``max_epochs`` / ``max_iters``), and a
warm-up rescales that value during the first ``warmup_iters`` iterations. MMEngine's
migration guide maps them to ``LinearLR`` + ``CosineAnnealingLR`` & co., which draw
*similar* curves; here each policy becomes one scheduler that draws *the same* one:

* :class:`LegacyLRScheduler` / :class:`LegacyMomentumScheduler` (registered in
  ``PARAM_SCHEDULERS``) compute MMCV's formula for iteration ``i`` (epoch ``i //
  epoch_length``) exactly, warm-up included, and are stepped once per iteration.
* :func:`translate_legacy_schedules` turns ``lr_config`` / ``momentum_config`` into
  ``param_scheduler`` entries for them; the config loader calls it.

The run length comes from ``end`` (minus ``begin``), which the runner fills in exactly as
for any scheduler: ``max_epochs`` for an epoch-based entry (then multiplied by
``epoch_length`` by ``convert_to_iter_based=True``), ``max_iters`` otherwise.

Two MMCV quirks are kept on purpose so that a migrated run reproduces the old logs: a
momentum warm-up divides the momentum by the warm-up factor (MMCV's choice), and a
``'constant'`` momentum warm-up changes nothing (MMCV reads an attribute that is never
filled, so the momentum stays where it was until the warm-up ends).
"""

from __future__ import annotations

import copy
import difflib
import math
import numbers
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from fastopt.registry import PARAM_SCHEDULERS

from .base import INF, HasParamGroups, _ParamScheduler, per_group_values
from .lr_scheduler import LRSchedulerMixin
from .momentum_scheduler import MomentumSchedulerMixin

_REQUIRED = object()
_WARMUPS = ("constant", "linear", "exp")
# keys every policy accepts (MMCV's LrUpdaterHook / MomentumUpdaterHook base arguments)
_COMMON_KEYS = ("by_epoch", "warmup", "warmup_iters", "warmup_ratio", "warmup_by_epoch")

# kind -> policy -> accepted keyword -> default. Names and defaults are MMCV 1.7's.
_POLICY_ARGS: dict[str, dict[str, dict[str, Any]]] = {
    "lr": {
        "Fixed": {},
        "Step": {"step": _REQUIRED, "gamma": 0.1, "min_lr": None},
        "Exp": {"gamma": _REQUIRED},
        "Poly": {"power": 1.0, "min_lr": 0.0},
        "Inv": {"gamma": _REQUIRED, "power": 1.0},
        "CosineAnnealing": {"min_lr": None, "min_lr_ratio": None},
        "FlatCosineAnnealing": {"start_percent": 0.75, "min_lr": None, "min_lr_ratio": None},
        "CosineRestart": {
            "periods": _REQUIRED,
            "restart_weights": [1],
            "min_lr": None,
            "min_lr_ratio": None,
        },
        "Cyclic": {
            "target_ratio": (10, 1e-4),
            "cyclic_times": 1,
            "step_ratio_up": 0.4,
            "anneal_strategy": "cos",
            "gamma": 1,
        },
        "OneCycle": {
            "max_lr": _REQUIRED,
            "total_steps": None,
            "pct_start": 0.3,
            "anneal_strategy": "cos",
            "div_factor": 25,
            "final_div_factor": 1e4,
            "three_phase": False,
        },
        "LinearAnnealing": {"min_lr": None, "min_lr_ratio": None},
    },
    "momentum": {
        "Step": {"step": _REQUIRED, "gamma": 0.5, "min_momentum": None},
        "CosineAnnealing": {"min_momentum": None, "min_momentum_ratio": None},
        "LinearAnnealing": {"min_momentum": None, "min_momentum_ratio": None},
        "Cyclic": {
            "target_ratio": (0.85 / 0.95, 1),
            "cyclic_times": 1,
            "step_ratio_up": 0.4,
            "anneal_strategy": "cos",
            "gamma": 1,
        },
        "OneCycle": {
            "base_momentum": 0.85,
            "max_momentum": 0.95,
            "pct_start": 0.3,
            "anneal_strategy": "cos",
            "three_phase": False,
        },
    },
}
# policies that only update per iteration (MMCV asserts by_epoch=False and defaults to it)
_ITER_ONLY = ("Cyclic", "OneCycle")
# policies whose formula needs the run length (max_epochs / max_iters)
_NEEDS_LENGTH = ("Poly", "CosineAnnealing", "FlatCosineAnnealing", "LinearAnnealing", "Cyclic")
_DEFAULT_WARMUP_RATIO = {"lr": 0.1, "momentum": 0.9}


def annealing_cos(start: float, end: float, factor: float, weight: float = 1.0) -> float:
    """Cosine from ``weight * start + (1 - weight) * end`` (factor 0) to ``end`` (factor 1)."""
    cos_out = math.cos(math.pi * factor) + 1
    return end + 0.5 * weight * (start - end) * cos_out


def annealing_linear(start: float, end: float, factor: float) -> float:
    """Straight line from ``start`` (factor 0) to ``end`` (factor 1)."""
    return start + (end - start) * factor


_ANNEAL: dict[str, Callable[[float, float, float], float]] = {
    "cos": annealing_cos,
    "linear": annealing_linear,
}


def normalize_policy(kind: str, policy: Any, where: str) -> str:
    """MMCV's policy naming: all-lowercase names are title-cased (``'poly'`` -> ``'Poly'``).

    Anything else must match the hook name exactly (``'CosineAnnealing'``); the error
    lists the valid names, since ``'cosine_annealing'`` never worked in MMCV either.
    """
    policies = _POLICY_ARGS[kind]
    if not isinstance(policy, str):
        raise TypeError(f"{where}: policy should be a string, got {type(policy).__name__}")
    name = policy.title() if policy == policy.lower() else policy
    if name in policies:
        return name
    hook = "LrUpdaterHook" if kind == "lr" else "MomentumUpdaterHook"
    close = difflib.get_close_matches(name.replace("_", ""), list(policies), n=1, cutoff=0.5)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ValueError(
        f"{where}: unknown policy {policy!r} (MMCV would look for {name}{hook}). "
        f"Valid policies: {', '.join(repr(p) for p in policies)}; lower-case names are "
        f"title-cased, others must match exactly.{hint}"
    )


def _number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _parse_policy_args(kind: str, policy: str, given: Mapping[str, Any], where: str) -> dict:
    """Check one policy's arguments like MMCV's hook constructors; return them complete."""
    spec = _POLICY_ARGS[kind][policy]
    unknown = sorted(k for k in given if k not in spec)
    if unknown:
        raise TypeError(
            f"{where}: policy {policy!r} got unexpected keyword "
            f"{', '.join(repr(k) for k in unknown)}; it accepts: "
            f"{', '.join([*spec, *_COMMON_KEYS]) or 'nothing'}"
        )
    missing = [k for k, default in spec.items() if default is _REQUIRED and k not in given]
    if missing:
        raise TypeError(f"{where}: policy {policy!r} needs {', '.join(missing)}")
    args = {k: copy.deepcopy(given[k] if k in given else default) for k, default in spec.items()}
    if isinstance(args.get("restart_weights"), tuple):
        args["restart_weights"] = list(args["restart_weights"])

    min_key = f"min_{kind}"
    if f"{min_key}_ratio" in spec:
        if (args[min_key] is None) == (args[f"{min_key}_ratio"] is None):
            raise ValueError(
                f"{where}: policy {policy!r} needs exactly one of {min_key} and "
                f"{min_key}_ratio, got {min_key}={args[min_key]}, "
                f"{min_key}_ratio={args[f'{min_key}_ratio']}"
            )
    if "step" in spec:
        step = args["step"]
        steps = step if isinstance(step, (list, tuple)) else [step]
        if not steps or any(not isinstance(s, int) or isinstance(s, bool) or s <= 0 for s in steps):
            raise ValueError(
                f"{where}: step should be a positive int or a list of them, got {step!r}"
            )
        if isinstance(step, tuple):
            args["step"] = list(step)
    if policy == "FlatCosineAnnealing" and not (
        _number(args["start_percent"]) and 0 <= args["start_percent"] < 1
    ):
        raise ValueError(
            f"{where}: expected start_percent between 0 and 1, got {args['start_percent']!r}"
        )
    if policy == "CosineRestart":
        periods, weights = list(args["periods"]), list(args["restart_weights"])
        if not periods or any(not isinstance(p, int) or p <= 0 for p in periods):
            raise ValueError(f"{where}: periods should be positive ints, got {periods!r}")
        if len(periods) != len(weights):
            raise ValueError(
                f"{where}: periods and restart_weights should have the same length, got "
                f"{len(periods)} and {len(weights)}"
            )
        args["periods"], args["restart_weights"] = periods, weights
    if "anneal_strategy" in spec and args["anneal_strategy"] not in _ANNEAL:
        raise ValueError(
            f"{where}: anneal_strategy must be 'cos' or 'linear', got {args['anneal_strategy']!r}"
        )
    if policy == "Cyclic":
        ratio = args["target_ratio"]
        if _number(ratio):
            ratio = (ratio, ratio / 1e5)
        elif isinstance(ratio, (list, tuple)) and len(ratio) == 1:
            ratio = (ratio[0], ratio[0] / 1e5)
        if not isinstance(ratio, (list, tuple)) or len(ratio) != 2:
            raise ValueError(
                f"{where}: target_ratio should be a float or a tuple of two floats, got {ratio!r}"
            )
        args["target_ratio"] = (float(ratio[0]), float(ratio[1]))
        if not 0 <= args["step_ratio_up"] < 1:
            raise ValueError(
                f"{where}: step_ratio_up must be in range [0, 1), got {args['step_ratio_up']}"
            )
        if not 0 < args["gamma"] <= 1:
            raise ValueError(f"{where}: gamma must be in range (0, 1], got {args['gamma']}")
        if not isinstance(args["cyclic_times"], int) or args["cyclic_times"] <= 0:
            raise ValueError(
                f"{where}: cyclic_times must be a positive int, got {args['cyclic_times']!r}"
            )
    if policy == "OneCycle":
        if not _number(args["pct_start"]) or not 0 <= args["pct_start"] <= 1:
            raise ValueError(
                f"{where}: expected pct_start between 0 and 1, got {args['pct_start']!r}"
            )
        total = args.get("total_steps")
        if total is not None and (not isinstance(total, int) or total <= 0):
            raise ValueError(f"{where}: total_steps should be a positive int, got {total!r}")
        for key in ("max_lr", "base_momentum", "max_momentum"):
            value = args.get(key)
            if key in spec and not (_number(value) or isinstance(value, (list, tuple))):
                raise ValueError(
                    f"{where}: {key} should be a number or a list (one per param group), "
                    f"got {type(value).__name__}"
                )
    return args


def _check_warmup(warmup: Any, warmup_iters: Any, warmup_ratio: Any, where: str) -> None:
    if warmup is None:
        return
    if warmup not in _WARMUPS:
        raise ValueError(
            f"{where}: {warmup!r} is not a supported type for warming up; valid types are "
            f"'constant', 'linear' and 'exp'"
        )
    if not _number(warmup_iters) or warmup_iters <= 0:
        raise ValueError(f"{where}: warmup_iters must be a positive integer, got {warmup_iters!r}")
    if not _number(warmup_ratio) or not 0 < warmup_ratio <= 1:
        raise ValueError(f"{where}: warmup_ratio must be in range (0, 1], got {warmup_ratio!r}")


def _policy_by_epoch(policy: str, by_epoch: bool | None, where: str) -> bool:
    if policy in _ITER_ONLY:
        if by_epoch:
            raise ValueError(
                f"{where}: policy {policy!r} only supports by_epoch=False (it updates every "
                "iteration), as in MMCV"
            )
        return False
    return True if by_epoch is None else bool(by_epoch)


# ---------------------------------------------------------------------------- formulas
# f(args, base, progress, max_progress, group_index) -> regular value (before warm-up)


def _fixed(args: dict, base: float, p: int, m: int | None, i: int) -> float:
    return base


def _step(args: dict, base: float, p: int, m: int | None, i: int) -> float:
    step = args["step"]
    if isinstance(step, int):
        exp = p // step
    else:
        exp = next((k for k, s in enumerate(step) if p < s), len(step))
    value = base * (args["gamma"] ** exp)
    floor = args.get("min_lr", args.get("min_momentum"))
    return value if floor is None else max(value, floor)


def _exp(args: dict, base: float, p: int, m: int | None, i: int) -> float:
    return base * args["gamma"] ** p


def _poly(args: dict, base: float, p: int, m: int | None, i: int) -> float:
    coeff = (1 - p / m) ** args["power"]
    return (base - args["min_lr"]) * coeff + args["min_lr"]


def _inv(args: dict, base: float, p: int, m: int | None, i: int) -> float:
    return base * (1 + args["gamma"] * p) ** (-args["power"])


def _target(args: dict, base: float) -> float:
    for kind in ("lr", "momentum"):
        ratio = args.get(f"min_{kind}_ratio")
        if ratio is not None:
            return base * ratio
        if f"min_{kind}" in args:
            return args[f"min_{kind}"]
    raise KeyError("no minimum in policy arguments")


def _cosine(args: dict, base: float, p: int, m: int | None, i: int) -> float:
    return annealing_cos(base, _target(args, base), p / m)


def _flat_cosine(args: dict, base: float, p: int, m: int | None, i: int) -> float:
    start = round(m * args["start_percent"])
    if p - start < 0:
        return base
    return annealing_cos(base, _target(args, base), (p - start) / (m - start))


def _cosine_restart(args: dict, base: float, p: int, m: int | None, i: int) -> float:
    periods = args["periods"]
    cumulative = [sum(periods[: k + 1]) for k in range(len(periods))]
    idx = next((k for k, c in enumerate(cumulative) if p < c), None)
    if idx is None:
        raise ValueError(
            f"CosineRestart: progress {p} exceeds the cumulative periods {cumulative}; the "
            "periods must cover the whole training"
        )
    restart = 0 if idx == 0 else cumulative[idx - 1]
    alpha = min((p - restart) / periods[idx], 1)
    return annealing_cos(base, _target(args, base), alpha, args["restart_weights"][idx])


def _linear_annealing(args: dict, base: float, p: int, m: int | None, i: int) -> float:
    return annealing_linear(base, _target(args, base), p / m)


def _cyclic(args: dict, base: float, p: int, m: int | None, i: int) -> float:
    per_cycle = args["iters_per_cycle"]
    curr = p % per_cycle
    scale = args["gamma"] ** (p // per_cycle)
    anneal = _ANNEAL[args["anneal_strategy"]]
    for start, end, start_ratio, end_ratio in args["phases"]:
        if start <= curr < end:
            # Each cycle shrinks the swing between the base value and the peak by gamma.
            if start == 0:
                end_ratio = 1 - scale + end_ratio * scale
            else:
                start_ratio = 1 - scale + start_ratio * scale
            return anneal(base * start_ratio, base * end_ratio, (curr - start) / (end - start))
    raise AssertionError("cyclic phases cover every iteration of a cycle")


def _one_cycle_lr(args: dict, base: float, p: int, m: int | None, i: int) -> float:
    anneal = _ANNEAL[args["anneal_strategy"]]
    start = 0.0
    for end, start_mult, end_mult in args["phases"]:
        if p <= end:
            return anneal(base * start_mult, base * end_mult, (p - start) / (end - start))
        start = end
    raise ValueError(
        f"OneCycle: iteration {p} is past total_steps={args['phases'][-1][0] + 1}; "
        "total_steps must cover the whole training"
    )


def _one_cycle_momentum(args: dict, base: float, p: int, m: int | None, i: int) -> float:
    anneal = _ANNEAL[args["anneal_strategy"]]
    bounds = {"base": args["base_momentum"][i], "max": args["max_momentum"][i]}
    start = 0.0
    last = len(args["phases"]) - 1
    for k, (end, start_key, end_key) in enumerate(args["phases"]):
        if p <= end or k == last:
            return anneal(bounds[start_key], bounds[end_key], (p - start) / (end - start))
        start = end
    raise AssertionError("unreachable: the last phase takes every later iteration")


_FORMULAS: dict[str, Callable[[dict, float, int, Any, int], float]] = {
    "Fixed": _fixed,
    "Step": _step,
    "Exp": _exp,
    "Poly": _poly,
    "Inv": _inv,
    "CosineAnnealing": _cosine,
    "FlatCosineAnnealing": _flat_cosine,
    "CosineRestart": _cosine_restart,
    "LinearAnnealing": _linear_annealing,
    "Cyclic": _cyclic,
}


class _LegacyScheduler(_ParamScheduler):
    """One MMCV 1.x updater policy as a scheduler stepped once per iteration.

    Args:
        optimizer: The optimizer or OptimWrapper.
        param_name: ``'lr'`` or ``'momentum'`` (fixed by the subclasses).
        policy: MMCV's policy name (``'step'``, ``'poly'``, ``'CosineAnnealing'``, ...).
        policy_by_epoch: MMCV's ``by_epoch``: the formula's progress counts epochs
            (True; the default except for ``cyclic`` / ``OneCycle``) or iterations.
        warmup: ``None``, ``'constant'``, ``'linear'`` or ``'exp'``.
        warmup_iters: Warm-up length in iterations (epochs with ``warmup_by_epoch``).
        warmup_ratio: Warm-up starting factor (MMCV: 0.1 for lr, 0.9 for momentum).
        warmup_by_epoch: Count ``warmup_iters`` in epochs.
        epoch_length: Iterations per epoch; ``convert_to_iter_based=True`` passes it.
        begin, end: The run, in iterations (``end - begin`` is MMCV's ``max_iters``).
        last_step, by_epoch, verbose: As in every scheduler. ``by_epoch=True`` (stepped
            per epoch) is allowed only for an epoch policy without warm-up.
        **policy_args: The policy's own arguments, with MMCV's names and defaults.
    """

    _takes_epoch_length: ClassVar[bool] = True
    _kind: ClassVar[str]

    def __init__(
        self,
        optimizer: HasParamGroups,
        param_name: str,
        policy: str,
        *,
        policy_by_epoch: bool | None = None,
        warmup: str | None = None,
        warmup_iters: int = 0,
        warmup_ratio: float | None = None,
        warmup_by_epoch: bool = False,
        epoch_length: int | None = None,
        begin: int = 0,
        end: int = INF,
        last_step: int = -1,
        by_epoch: bool = True,
        verbose: bool = False,
        **policy_args: Any,
    ) -> None:
        kind = self._kind
        owner = type(self).__name__
        self.policy = normalize_policy(kind, policy, owner)
        self.policy_args = _parse_policy_args(kind, self.policy, policy_args, owner)
        self.policy_by_epoch = _policy_by_epoch(self.policy, policy_by_epoch, owner)
        if warmup_ratio is None:
            warmup_ratio = _DEFAULT_WARMUP_RATIO[kind]
        _check_warmup(warmup, warmup_iters, warmup_ratio, owner)
        if epoch_length is not None and (not isinstance(epoch_length, int) or epoch_length <= 0):
            raise ValueError(f"{owner}: epoch_length must be a positive int, got {epoch_length!r}")
        needs_epoch_length = self.policy_by_epoch or (warmup is not None and warmup_by_epoch)
        if by_epoch:
            if not self.policy_by_epoch or warmup is not None:
                raise ValueError(
                    f"{owner}: by_epoch=True (stepped once per epoch) only suits an epoch "
                    "policy without warm-up; MMCV warm-ups and iteration policies update every "
                    "iteration -- use by_epoch=False, or by_epoch=True with "
                    "convert_to_iter_based=True"
                )
        elif needs_epoch_length and epoch_length is None:
            raise ValueError(
                f"{owner}: policy {self.policy!r} with by_epoch=True (or a warm-up counted in "
                "epochs) needs the epoch length: build it with by_epoch=True and "
                "convert_to_iter_based=True (the runner then passes epoch_length), or pass "
                "epoch_length="
            )
        self.warmup = warmup
        self.warmup_ratio = warmup_ratio
        self.warmup_by_epoch = warmup_by_epoch
        self.warmup_iters = (
            warmup_iters * epoch_length if warmup_by_epoch and epoch_length else warmup_iters
        )
        self.epoch_length = epoch_length
        run = None if end == INF else end - begin
        unit = "epochs" if by_epoch else "iterations"
        if (self.policy in _NEEDS_LENGTH or self.policy == "OneCycle") and run is None:
            if not (self.policy == "OneCycle" and self.policy_args.get("total_steps")):
                raise ValueError(
                    f"{owner}: policy {self.policy!r} needs the run length: set end (in "
                    f"{unit}; a runner fills in max_epochs / max_iters when end is missing)"
                )
        self.policy_bases: list[float] | None = None
        self._prepare_policy(optimizer, run, last_step)
        super().__init__(optimizer, param_name, begin, end, last_step, by_epoch, verbose)

    def _prepare_policy(self, optimizer: HasParamGroups, run: int | None, last_step: int) -> None:
        """Precompute what MMCV's ``before_run`` derives from ``max_iters`` and the groups."""
        args = self.policy_args
        if self.policy == "Cyclic":
            args["iters_per_cycle"] = run // args["cyclic_times"]
            if args["iters_per_cycle"] <= 0:
                raise ValueError(
                    f"{type(self).__name__}: cyclic_times={args['cyclic_times']} is more than "
                    f"the {run} iterations of the run"
                )
            up = int(args["step_ratio_up"] * args["iters_per_cycle"])
            r0, r1 = args["target_ratio"]
            args["phases"] = [[0, up, 1, r0], [up, args["iters_per_cycle"], r0, r1]]

    def _progress(self) -> tuple[int | None, int, int | None]:
        """(iteration or None when stepped per epoch, progress, max progress)."""
        t = self.last_step
        run = None if self.end == INF else self.end - self.begin
        if self.by_epoch:
            return None, t, run
        if self.policy_by_epoch:
            length = self.epoch_length
            return t, t // length, None if run is None else run // length
        return t, t, run

    def _regular(self, progress: int, max_progress: int | None) -> list[float]:
        formula = _FORMULAS[self.policy]
        bases = self.policy_bases or self.base_values
        return [
            formula(self.policy_args, b, progress, max_progress, i) for i, b in enumerate(bases)
        ]

    def _warm(self, regular: list[float], it: int) -> list[float]:
        raise NotImplementedError

    def _get_value(self) -> list[Any]:
        it, progress, max_progress = self._progress()
        regular = self._regular(progress, max_progress)
        if self.warmup is None or it is None or it >= self.warmup_iters:
            return regular
        return self._warm(regular, it)


@PARAM_SCHEDULERS.register_module()
class LegacyLRScheduler(LRSchedulerMixin, _LegacyScheduler):
    """An MMCV 1.x ``lr_config`` policy (``*LrUpdaterHook``), exact to MMCV's values.

    Example: ``dict(type='LegacyLRScheduler', policy='poly', power=0.9, min_lr=1e-4,
    policy_by_epoch=False, warmup='linear', warmup_iters=500, by_epoch=False)``.
    See :class:`_LegacyScheduler` for the arguments.
    """

    _kind = "lr"

    def _prepare_policy(self, optimizer: HasParamGroups, run: int | None, last_step: int) -> None:
        super()._prepare_policy(optimizer, run, last_step)
        if self.policy != "OneCycle":
            return
        args = self.policy_args
        total = args["total_steps"] or run
        if run is not None and total < run:
            raise ValueError(
                f"{type(self).__name__}: the total steps must be greater than or equal to the "
                f"max iterations {run} of the run, but total_steps is {total}"
            )
        pct, div = args["pct_start"], args["div_factor"]
        final = 1 / args["final_div_factor"]
        if args["three_phase"]:
            args["phases"] = [
                [float(pct * total) - 1, 1, div],
                [float(2 * pct * total) - 2, div, 1],
                [total - 1, 1, final],
            ]
        else:
            args["phases"] = [[float(pct * total) - 1, 1, div], [total - 1, div, final]]
        # MMCV's base is max_lr / div_factor, whatever the group's lr was.
        max_lrs = per_group_values(optimizer, args["max_lr"], "max_lr")
        self.policy_bases = [lr / div for lr in max_lrs]
        if last_step == -1:
            for group, base in zip(optimizer.param_groups, self.policy_bases):
                group.setdefault("initial_lr", base)

    def _regular(self, progress: int, max_progress: int | None) -> list[float]:
        if self.policy != "OneCycle":
            return super()._regular(progress, max_progress)
        args = self.policy_args
        return [
            _one_cycle_lr(args, b, progress, max_progress, i)
            for i, b in enumerate(self.policy_bases)
        ]

    def _warm(self, regular: list[float], it: int) -> list[float]:
        ratio, length = self.warmup_ratio, self.warmup_iters
        if self.warmup == "constant":
            return [lr * ratio for lr in regular]
        if self.warmup == "linear":
            k = (1 - it / length) * (1 - ratio)
            return [lr * (1 - k) for lr in regular]
        k = ratio ** (1 - it / length)
        return [lr * k for lr in regular]


@PARAM_SCHEDULERS.register_module()
class LegacyMomentumScheduler(MomentumSchedulerMixin, _LegacyScheduler):
    """An MMCV 1.x ``momentum_config`` policy (``*MomentumUpdaterHook``), exact to MMCV.

    Schedules ``momentum`` or, for Adam-style optimizers, ``betas[0]``.
    See :class:`_LegacyScheduler` for the arguments.
    """

    _kind = "momentum"

    def _prepare_policy(self, optimizer: HasParamGroups, run: int | None, last_step: int) -> None:
        super()._prepare_policy(optimizer, run, last_step)
        if self.policy != "OneCycle":
            return
        args = self.policy_args
        args["base_momentum"] = per_group_values(optimizer, args["base_momentum"], "base_momentum")
        args["max_momentum"] = per_group_values(optimizer, args["max_momentum"], "max_momentum")
        pct = args["pct_start"]
        if args["three_phase"]:
            args["phases"] = [
                [float(pct * run) - 1, "max", "base"],
                [float(2 * pct * run) - 2, "base", "max"],
                [run - 1, "max", "max"],
            ]
        else:
            args["phases"] = [[float(pct * run) - 1, "max", "base"], [run - 1, "base", "max"]]
        if last_step == -1:
            # MMCV's before_run starts the cycle at max_momentum.
            for group, top in zip(optimizer.param_groups, args["max_momentum"]):
                group["momentum"] = top
                if "betas" in group:
                    group["betas"] = (top, group["betas"][1])

    def _regular(self, progress: int, max_progress: int | None) -> list[float]:
        if self.policy != "OneCycle":
            return super()._regular(progress, max_progress)
        args = self.policy_args
        n = len(self.optimizer.param_groups)
        return [_one_cycle_momentum(args, 0.0, progress, max_progress, i) for i in range(n)]

    def _warm(self, regular: list[float], it: int) -> list[float]:
        ratio, length = self.warmup_ratio, self.warmup_iters
        if self.warmup == "constant":
            # MMCV's constant momentum warm-up sets nothing: keep the value in place (the
            # epoch's regular value when updating by epoch, else the previous value).
            return regular if self.policy_by_epoch else self._current_values()
        if self.warmup == "linear":
            k = (1 - it / length) * (1 - ratio)
            return [m / (1 - k) for m in regular]
        k = ratio ** (1 - it / length)
        return [m / k for m in regular]


def translate_legacy_schedules(
    lr_config: Mapping[str, Any] | None, momentum_config: Mapping[str, Any] | None
) -> list[dict[str, Any]]:
    """Translate MMCV 1.x ``lr_config`` / ``momentum_config`` into ``param_scheduler`` configs.

    Contract:

    * Returns a new list with at most two dicts: the lr entry (``type='LegacyLRScheduler'``)
      when ``lr_config`` is not None, then the momentum entry
      (``type='LegacyMomentumScheduler'``) when ``momentum_config`` is not None. The inputs
      are not modified. ``[]`` means no schedule: the values stay constant, as in MMCV.
    * Each entry keeps MMCV's keys (``policy`` and its arguments, ``warmup``,
      ``warmup_iters``, ``warmup_ratio``, ``warmup_by_epoch``); MMCV's ``by_epoch`` becomes
      ``policy_by_epoch``.
    * Each entry has no ``begin``/``end``: build it like any ``param_scheduler`` entry, as
      MMEngine's runner does -- ``end`` defaults to ``max_epochs`` when ``by_epoch`` is True
      else ``max_iters``, then ``PARAM_SCHEDULERS.build(entry, default_args=dict(
      optimizer=optim_wrapper, epoch_length=len(train_dataloader)))``.
    * An entry that needs the epoch length (an epoch policy, or a warm-up counted in epochs)
      has ``by_epoch=True, convert_to_iter_based=True`` (so it becomes iteration-based and
      receives ``epoch_length``; it needs an epoch-based train loop, as in MMCV); any other
      has ``by_epoch=False``. Either way the built scheduler is stepped after every
      iteration and gives the lr/momentum MMCV 1.x used in each iteration.

    Raises:
        TypeError / ValueError: A bad policy name, argument or warm-up, naming the config
            key, when the config is loaded rather than when training starts.
    """
    entries: list[dict[str, Any]] = []
    for kind, cfg, type_name in (
        ("lr", lr_config, "LegacyLRScheduler"),
        ("momentum", momentum_config, "LegacyMomentumScheduler"),
    ):
        if cfg is None:
            continue
        where = f"{kind}_config"
        if not isinstance(cfg, Mapping):
            raise TypeError(f"{where} should be a dict or None, got {type(cfg).__name__}")
        args = copy.deepcopy(dict(cfg))
        if "policy" not in args:
            raise ValueError(
                f"{where} needs a 'policy' key (e.g. policy='step'), got {sorted(args)}"
            )
        policy = normalize_policy(kind, args.pop("policy"), where)
        policy_by_epoch = _policy_by_epoch(policy, args.pop("by_epoch", None), where)
        common = {k: args.pop(k) for k in _COMMON_KEYS[1:] if k in args}
        _parse_policy_args(kind, policy, args, where)
        _check_warmup(
            common.get("warmup"),
            common.get("warmup_iters", 0),
            common.get("warmup_ratio", _DEFAULT_WARMUP_RATIO[kind]),
            where,
        )
        entry: dict[str, Any] = {"type": type_name, "policy": policy}
        entry.update(args)
        entry["policy_by_epoch"] = policy_by_epoch
        entry.update(common)
        warm_in_epochs = common.get("warmup") is not None and common.get("warmup_by_epoch", False)
        if policy_by_epoch or warm_in_epochs:
            entry.update(by_epoch=True, convert_to_iter_based=True)
        else:
            entry["by_epoch"] = False
        entries.append(entry)
    return entries


__all__ = [
    "LegacyLRScheduler",
    "LegacyMomentumScheduler",
    "annealing_cos",
    "annealing_linear",
    "normalize_policy",
    "translate_legacy_schedules",
]
