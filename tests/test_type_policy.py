"""Config data cannot run code (issue 19 §3): dotted ``type`` paths name only classes that
belong in the registry being built, from JSON/YAML files, ``--cfg-options`` and Python alike;
``--allow-dotted-types`` (``.py`` configs only) or ``allow_dotted_types()`` widens the rule.

"Nothing runs" is proven: every target is replaced by a recorder that would log a call, and
the shell cases would create a marker file.
"""

from __future__ import annotations

import builtins
import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fastopt.cli import main
from fastopt.registry import (
    DATASETS,
    FUNCTIONS,
    HOOKS,
    MODELS,
    OPTIMIZERS,
    PARAM_SCHEDULERS,
    DisallowedTypeError,
    Registry,
    UnknownTypeError,
    allow_dotted_types,
)

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "cnn_sgd_cosine.py"

# (module, attribute): code execution, file access, deserialisation
DANGEROUS = [
    (os, "system"),
    (os, "remove"),
    (builtins, "eval"),
    (builtins, "exec"),
    (builtins, "open"),
    (subprocess, "run"),
    (subprocess, "Popen"),
    (subprocess, "check_output"),
    (pickle, "loads"),
    (shutil, "rmtree"),
    (torch, "load"),
]
REGISTRIES = [HOOKS, OPTIMIZERS, MODELS, DATASETS, PARAM_SCHEDULERS, FUNCTIONS]


def _recorder(name: str, calls: list[str]) -> object:
    """Something that logs its call: a class where the target is a class, else a function."""
    if name.endswith("Popen"):
        return type("Popen", (), {"__init__": lambda self, *a, **k: calls.append(name)})
    return lambda *args, **kwargs: calls.append(name)


@pytest.mark.parametrize("registry", REGISTRIES, ids=lambda r: r.name)
@pytest.mark.parametrize("target", DANGEROUS, ids=lambda t: f"{t[0].__name__}.{t[1]}")
def test_dangerous_paths_are_refused_and_not_called(monkeypatch, registry, target):
    module, attr = target
    path = f"{module.__name__}.{attr}"
    calls: list[str] = []
    with monkeypatch.context() as patch:  # patched only while building
        patch.setattr(module, attr, _recorder(path, calls))
        with pytest.raises(DisallowedTypeError) as exc:
            registry.build(dict(type=path, args="touch hacked"))
        contained = path in registry
    assert calls == []
    message = str(exc.value)
    assert message.startswith(f"{path} names ")
    assert f"does not belong in the fastopt::{registry.name} registry" in message
    assert "Nothing was called" in message and "--allow-dotted-types" in message
    assert isinstance(exc.value, UnknownTypeError)  # handled like an unknown type
    assert not contained


@pytest.mark.parametrize("path", ["importlib.import_module", "builtins.__import__"])
def test_import_functions_are_refused(path):
    # these cannot be replaced by recorders (the lookup imports too): the module they were
    # asked to import stays unimported instead
    assert "tabnanny" not in sys.modules
    with pytest.raises(DisallowedTypeError, match=f"{path} names a"):
        FUNCTIONS.build(dict(type=path, name="tabnanny"))
    assert "tabnanny" not in sys.modules


def test_a_shell_command_does_not_run_unless_allowed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = dict(type="os.system", command="touch marker")
    with pytest.raises(DisallowedTypeError, match="os.system names a builtin function"):
        HOOKS.build(cfg)
    assert not (tmp_path / "marker").exists()
    # the same config does run under the explicit opt-in: the check above is what stopped it
    with allow_dotted_types():
        assert HOOKS.build(cfg) == 0
    assert (tmp_path / "marker").exists()
    with pytest.raises(DisallowedTypeError):  # the opt-in ends with its block
        HOOKS.build(cfg)


def test_what_belongs_is_resolved():
    assert OPTIMIZERS.get("torch.optim.AdamW") is torch.optim.AdamW
    assert MODELS.get("torch.nn.Conv2d") is torch.nn.Conv2d
    assert DATASETS.get("torch.utils.data.TensorDataset") is torch.utils.data.TensorDataset
    assert HOOKS.get("fastopt.hooks.iter_timer_hook.IterTimerHook").__name__ == "IterTimerHook"
    # a registered object may be named by its path, even in a registry without member types
    from fastopt.dataset.collate import pseudo_collate

    assert FUNCTIONS.get("fastopt.dataset.collate.pseudo_collate") is pseudo_collate
    # a class of another registry does not belong
    with pytest.raises(DisallowedTypeError, match="a subclass of torch.optim.optimizer.Optimizer"):
        OPTIMIZERS.get("torch.nn.Linear")


def test_member_types_are_inherited_and_declared_per_registry():
    child = Registry("model", parent=MODELS, scope="policy_child_scope")
    try:
        assert child.member_types == (torch.nn.Module,)
        assert child.get("torch.nn.ReLU") is torch.nn.ReLU
        with pytest.raises(DisallowedTypeError, match="fastopt::model registry|policy_child"):
            child.get("os.system")
    finally:
        del MODELS.children["policy_child_scope"]
    plain = Registry("thing", scope="t")
    assert plain.member_types == ()
    with pytest.raises(DisallowedTypeError, match="declares no member types"):
        plain.get("collections.OrderedDict")
    with pytest.raises(TypeError, match="member type 'os.system' of the thing registry"):
        _ = Registry("thing", scope="t", member_types=["os.system"]).member_types


def test_type_names_under_other_keys_follow_the_same_rule():
    # constructor, optimizer_type of ZeroRedundancyOptimizer, collate_fn, train_cfg/runner
    # type: every key that names a type goes through a registry, so through the same rule
    from fastopt.constructor import build_optim_wrapper
    from fastopt.dataset import build_dataloader
    from fastopt.optim.zero_redundancy import _local_optimizer_class
    from fastopt.registry import LOOPS, RUNNERS

    model = torch.nn.Linear(2, 2)
    sgd = dict(type="SGD", lr=0.1)
    constructors = r"^os.system .*names .*::optimizer wrapper constructor registry"
    with pytest.raises(DisallowedTypeError, match=constructors):
        build_optim_wrapper(model, dict(constructor="os.system", optimizer=sgd))
    with pytest.raises(DisallowedTypeError, match=r"^builtins.exec .*names .*::optimizer registry"):
        _local_optimizer_class("builtins.exec")  # ZeroRedundancyOptimizer's optimizer_type
    with pytest.raises(DisallowedTypeError, match=r"^builtins.exec .*names .*::function registry"):
        build_dataloader(
            dict(
                batch_size=1,
                dataset=torch.utils.data.TensorDataset(torch.zeros(2, 1)),
                sampler=dict(type="DefaultSampler", shuffle=False),
                collate_fn=dict(type="builtins.exec", source="1"),
            )
        )
    with pytest.raises(DisallowedTypeError, match=r"^subprocess.run .*names .*::loop registry"):
        LOOPS.build(dict(type="subprocess.run", args="true"))
    with pytest.raises(DisallowedTypeError, match=r"^os.system .*names .*::runner registry"):
        RUNNERS.build(dict(runner_type="os.system"))


def test_objects_given_directly_are_code_and_not_restricted():
    # a class object (from a .py config or Python) is used as given
    assert isinstance(HOOKS.build(dict(type=type("Plain", (), {}))), object)


# ------------------------------------------------------------------------------ the commands
def _error(capsys) -> str:
    lines = [li for li in capsys.readouterr().err.splitlines() if "error:" in li]
    assert len(lines) == 1, lines
    return lines[0]


def _json_config(tmp_path: Path, **top) -> Path:
    path = tmp_path / "downloaded.json"
    path.write_text(json.dumps({"_base_": [str(CONFIG)], **top}))
    return path


def test_json_config_naming_os_system_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    timer = {"type": "os.system", "command": "touch marker"}
    config = _json_config(tmp_path, default_hooks={"timer": timer})
    assert main(["train", str(config)]) == 1
    line = _error(capsys)
    assert f"os.system (config file {config}, key default_hooks.timer.type) names a builtin" in line
    assert not (tmp_path / "marker").exists()
    # a data file cannot opt in
    assert main(["train", str(config), "--allow-dotted-types"]) == 1
    assert "--allow-dotted-types is only for .py configs" in _error(capsys)
    assert main(["test", str(config), "x.pth", "--allow-dotted-types"]) == 1
    assert "--allow-dotted-types is only for .py configs" in _error(capsys)
    assert not (tmp_path / "marker").exists()


def test_cfg_options_naming_os_system_are_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    options = [
        "default_hooks.timer.type=os.system",
        "default_hooks.timer.command=touch${IFS}marker",  # --cfg-options removes spaces
    ]
    assert main(["train", str(CONFIG), "--cfg-options", *options]) == 1
    # the type came from --cfg-options, and the error says so (not the config file)
    assert "(--cfg-options default_hooks.timer.type) names a builtin function" in _error(capsys)
    assert not (tmp_path / "marker").exists()
    assert main(["train", str(CONFIG), "--cfg-options", "model.type=builtins.eval"]) == 1
    assert "builtins.eval (--cfg-options model.type)" in _error(capsys)


def test_a_py_config_may_opt_in(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "mine.py"
    config.write_text(
        f"_base_ = [{str(CONFIG)!r}]\n"
        "default_hooks = dict(timer=dict(type='os.system', command='touch marker'))\n"
    )
    assert main(["train", str(config)]) == 1
    assert "key default_hooks.timer.type) names a builtin function" in _error(capsys)
    assert not (tmp_path / "marker").exists()
    # with the flag the dotted path resolves as in MMEngine: the command runs (and its
    # return value is then refused as a hook)
    assert main(["train", str(config), "--allow-dotted-types"]) == 1
    assert "not a Hook" in _error(capsys)
    assert (tmp_path / "marker").exists()
