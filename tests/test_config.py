"""Config files: inheritance, references, overrides, dump round trip, errors (MMEngine §7)."""

from __future__ import annotations

import argparse
import copy
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import fastopt
from fastopt.config import (
    Config,
    ConfigDict,
    DictAction,
    parse_cfg_options,
    parse_value,
)
from fastopt.config.merge import merge_a_into_b
from fastopt.registry import FUNCTIONS, OPTIMIZERS

CONFIGS = Path(__file__).parent / "data" / "configs"


@pytest.fixture
def child() -> Config:
    return Config.fromfile(CONFIGS / "child.py")


# --------------------------------------------------------------------------- inheritance
def test_base_chain_merge(child, monkeypatch):
    assert child.filename == str(CONFIGS / "child.py")
    # dicts merge key by key; lists replace
    assert child.model.backbone.depth == 50
    assert child.model.backbone.norm_cfg == {"type": "BN", "requires_grad": True}
    assert child.optim_wrapper.optimizer == {
        "type": "SGD",
        "lr": 0.02,
        "momentum": 0.9,
        "weight_decay": 0.0001,
    }
    assert child.param_scheduler == [{"type": "CosineAnnealingLR", "T_max": 24, "by_epoch": True}]
    assert child.train_cfg == {"by_epoch": True, "max_epochs": 24, "val_interval": 1}
    # base keys first (in base order), then the child's new keys
    assert list(child) == [
        "model",
        "optim_wrapper",
        "param_scheduler",
        "train_cfg",
        "work_dir",
        "data_root",
        "default_hooks",
        "heads",
        "base_lr",
        "base_epochs",
        "this_file",
    ]
    # `_base_` variables in a .py config, and {{_base_.x}} references (base values, not child)
    assert child.heads == 160
    assert child.base_lr == 0.1 and child.base_epochs == 12
    # predefined variables refer to the file they are written in
    assert child.work_dir == "./work_dirs/runtime"
    assert child.this_file == "child.py"
    # environment variables with a default
    assert child.data_root == "data/coco/"
    monkeypatch.setenv("FASTOPT_TEST_DATA_ROOT", "/mnt/coco/")
    cfg = Config.fromfile(CONFIGS / "child.py")
    assert cfg.data_root == "/mnt/coco/"
    assert cfg.env_variables == {"FASTOPT_TEST_DATA_ROOT": "/mnt/coco/"}
    # the source text of every file is kept, bases first
    assert cfg.text.index("toy.py") < cfg.text.index("child.py")


def test_delete_replaces_base_value():
    cfg = Config.fromfile(CONFIGS / "child_delete.py")
    assert cfg.optim_wrapper == {
        "type": "OptimWrapper",
        "optimizer": {"type": "AdamW", "lr": 0.001},
    }
    assert cfg.model.backbone.norm_cfg == {"type": "GN", "num_groups": 32}
    assert cfg.model.backbone.depth == 50  # the rest still merges
    # MMEngine keeps `_delete_` in a dict that had nothing to replace (golden g4)
    assert cfg.new_section == {"_delete_": True, "a": 1}


def test_merge_rules_golden():
    base = {"a": {"x": 1, "y": [1, 2]}, "b": None, "c": [1, 2]}
    merged = merge_a_into_b({"a": {"y": [3]}, "c": [9], "d": 4}, base)
    assert merged == {"a": {"x": 1, "y": [3]}, "b": None, "c": [9], "d": 4}
    assert base == {"a": {"x": 1, "y": [1, 2]}, "b": None, "c": [1, 2]}  # not in place
    assert merge_a_into_b({"new": {"_delete_": True, "a": 1}}, {}) == {
        "new": {"_delete_": True, "a": 1}
    }
    assert merge_a_into_b({"b": {"_delete_": True, "k": 1}}, base)["b"] == {"k": 1}


def test_yaml_and_json_configs(monkeypatch):
    cfg = Config.fromfile(CONFIGS / "child.yaml")
    assert cfg.optim_wrapper.optimizer.lr == 0.05
    assert cfg.optim_wrapper.optimizer.betas == (0.9, 0.99)  # !!python/tuple
    assert cfg.epochs == 12 and cfg.milestones == [8, 11] and cfg.name == "child"
    assert cfg.param_scheduler[1].milestones == [8, 11]
    cfg = Config.fromfile(CONFIGS / "child.json")
    assert cfg.model.num_classes == 10 and cfg.model.backbone.depth == 18
    assert cfg.epochs == 12
    monkeypatch.setenv("FASTOPT_TEST_EPOCHS", "3")
    assert Config.fromfile(CONFIGS / "child.json").epochs == 3


def test_python_config_values_package_bases_and_predefined(tmp_path, monkeypatch):
    pkg = tmp_path / "fastopt_cfgpkg_xyz"
    (pkg / "configs" / "_base_").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "configs" / "_base_" / "sched.py").write_text(
        "epochs = 7\nwhere = '{{ fileDirname }}'\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    path = tmp_path / "user.py"
    path.write_text(
        "_base_ = 'fastopt_cfgpkg_xyz::_base_/sched.py'\n"
        "import math\n"
        "from math import sqrt\n"
        "def helper():\n    return 1\n"
        "radius = math.pi\n__private = 1\nhere = '{{ fileDirname }}'\next = '{{fileExtname}}'\n"
    )
    cfg = Config.fromfile(path)
    # modules and functions are dropped, `__` names too; builtins like sqrt are kept as MMEngine
    assert set(cfg) == {"epochs", "where", "sqrt", "radius", "here", "ext"}
    assert cfg.epochs == 7 and cfg.radius == pytest.approx(3.14159265)
    assert cfg.where == str(pkg / "configs" / "_base_") and cfg.here == str(tmp_path)
    assert cfg.ext == ".py"
    path.write_text("_base_ = 'fastopt_no_such_pkg_xyz::a.py'\n")
    with pytest.raises(
        FileNotFoundError, match="package 'fastopt_no_such_pkg_xyz' is not installed"
    ):
        Config.fromfile(path)


def test_fromstring():
    cfg = Config.fromstring("a = dict(b=1)\nc = [1, (2, 3)]\n", ".py")
    assert cfg.to_dict() == {"a": {"b": 1}, "c": [1, (2, 3)]}
    assert Config.fromstring("a: {b: 2}\n", ".yaml").a.b == 2
    with pytest.raises(OSError, match="Only py/yml/yaml/json type are supported now!"):
        Config.fromstring("a=1", ".toml")


# --------------------------------------------------------------------------- errors
def test_dict_over_non_dict_names_file_and_key():
    with pytest.raises(TypeError) as exc:
        Config.fromfile(CONFIGS / "errors" / "dict_over_none.py")
    msg = str(exc.value)
    assert msg.startswith(
        "clip_grad={'max_norm': 35, 'norm_type': 2} in child config cannot inherit from base "
        "because clip_grad is a dict in the child config but is of type <class 'NoneType'> in "
        "base config. You may set `_delete_=True` to ignore the base config."
    )
    assert "dict_over_none.py" in msg and "key optim_wrapper.clip_grad" in msg


def test_duplicate_keys_among_bases():
    with pytest.raises(KeyError) as exc:
        Config.fromfile(CONFIGS / "errors" / "duplicate_bases.py")
    msg = str(exc.value)
    assert msg.startswith("Duplicate key is not allowed among bases. Duplicate keys: {'model'}")
    assert "toy.py" in msg and "toy_copy.py" in msg and "duplicate_bases.py" in msg


def test_bad_base_reference():
    with pytest.raises(KeyError) as exc:
        Config.fromfile(CONFIGS / "errors" / "bad_base_ref.py")
    msg = str(exc.value)
    assert "{{_base_.model.backbone.width}}" in msg and "bad_base_ref.py" in msg
    assert "key depth" in msg


def test_missing_env_var_and_files(tmp_path):
    with pytest.raises(KeyError, match="`FASTOPT_TEST_SURELY_UNSET_VAR` cannot be found"):
        Config.fromfile(CONFIGS / "errors" / "missing_env.py")
    with pytest.raises(OSError, match="Only py/yml/yaml/json type are supported now!"):
        Config.fromfile(tmp_path / "x.toml")
    with pytest.raises(FileNotFoundError):
        Config.fromfile(tmp_path / "missing.py")
    (tmp_path / "a.py").write_text("_base_ = 'nothere.py'\n")
    with pytest.raises(FileNotFoundError, match="nothere.py"):
        Config.fromfile(tmp_path / "a.py")
    (tmp_path / "b.py").write_text("_base_ = 'c.py'\n")
    (tmp_path / "c.py").write_text("_base_ = 'b.py'\n")
    with pytest.raises(RecursionError, match="include each other"):
        Config.fromfile(tmp_path / "b.py")


def test_reserved_keys():
    with pytest.raises(KeyError, match="filename is reserved for config file"):
        Config(dict(filename="x"))


def test_unknown_type_error_names_file_key_and_close_name():
    cfg = Config.fromfile(CONFIGS / "errors" / "unknown_optimizer.py")
    with pytest.raises(KeyError) as exc:
        OPTIMIZERS.build(cfg.optim_wrapper.optimizer, default_args=dict(params=[torch.zeros(1)]))
    msg = str(exc.value)
    assert msg.startswith("FusedAdamWW is not in the fastopt::optimizer registry")
    assert "unknown_optimizer.py" in msg and "key optim_wrapper.optimizer.type" in msg
    assert "Did you mean" in msg


def test_bad_keyword_error_names_type_keyword_file_and_key():
    cfg = Config.fromfile(CONFIGS / "errors" / "bad_keyword.py")
    with pytest.raises(TypeError) as exc:
        OPTIMIZERS.build(
            copy.deepcopy(cfg.optim_wrapper.optimizer),
            default_args=dict(params=[torch.zeros(1, requires_grad=True)]),
        )
    msg = str(exc.value)
    assert "SGD" in msg and "unexpected keyword 'betas'" in msg
    assert "bad_keyword.py" in msg and "key optim_wrapper.optimizer" in msg


# --------------------------------------------------------------------------- custom imports
def test_custom_imports(monkeypatch):
    monkeypatch.syspath_prepend(str(CONFIGS / "custom_modules"))
    cfg = Config.fromfile(CONFIGS / "custom_imports.py")
    assert FUNCTIONS.build(cfg.fn) == 40
    with pytest.warns(
        UserWarning, match="fastopt_no_such_module_xyz failed to import and is ignored"
    ):
        Config.fromfile(CONFIGS / "custom_imports_allowed.py")
    with pytest.raises(ImportError) as exc:
        Config.fromfile(CONFIGS / "errors" / "missing_import.py")
    assert "Failed to import custom modules" in str(exc.value)
    assert "missing_import.py" in str(exc.value) and "sys.path" in str(exc.value)
    # not imported when asked not to
    cfg = Config.fromfile(CONFIGS / "errors" / "missing_import.py", import_custom_modules=False)
    assert cfg.custom_imports.imports == ["fastopt_no_such_module_xyz"]


# --------------------------------------------------------------------------- access
def test_attribute_access_and_conversion(child):
    assert child.optim_wrapper.optimizer.lr == child["optim_wrapper"]["optimizer"]["lr"] == 0.02
    child.optim_wrapper.optimizer.lr = 0.5
    assert child["optim_wrapper"]["optimizer"]["lr"] == 0.5
    child.extra = dict(a=dict(b=1))
    assert isinstance(child.extra.a, ConfigDict) and child.extra.a.b == 1
    with pytest.raises(AttributeError) as exc:
        _ = child.optim_wrapper.optimzer
    msg = str(exc.value)
    assert msg.startswith("'ConfigDict' object has no attribute 'optimzer'")
    assert "key optim_wrapper" in msg and "did you mean 'optimizer'?" in msg
    with pytest.raises(KeyError):
        _ = child.optim_wrapper["nothing"]
    assert "nothing" not in child.optim_wrapper  # no auto-creation
    plain = child.to_dict()
    assert type(plain) is dict and type(plain["model"]["backbone"]) is dict
    assert type(plain["param_scheduler"][0]) is dict
    assert isinstance(child, fastopt.Config)


def test_copy_pickle_keep_values_and_origin(child):
    for other in (copy.deepcopy(child), pickle.loads(pickle.dumps(child)), child.copy()):
        assert other == child and other.filename == child.filename
        assert other.optim_wrapper.optimizer._key_source() == (
            str(CONFIGS / "child.py"),
            "optim_wrapper.optimizer",
        )
    deep = copy.deepcopy(child)
    deep.model.backbone.depth = 1
    assert child.model.backbone.depth == 50


# --------------------------------------------------------------------------- overrides
def test_dict_action_parsing_golden():
    parser = argparse.ArgumentParser()
    parser.add_argument("--cfg-options", nargs="+", action=DictAction)
    args = parser.parse_args(
        [
            "--cfg-options",
            "a=1",
            "b=1.5",
            "c=true",
            "d=None",
            "e=hello world",
            "f=[1,2,(3,4)]",
            "g=1,2,3",
            "h=(a,b)",
            "l=[]",
            "m=False",
            "n='[1, [2, 3]]'",
            "o=(1)",
            "p=x=y",
        ]
    )
    assert args.cfg_options == {
        "a": 1,
        "b": 1.5,
        "c": True,
        "d": None,
        "e": "helloworld",
        "f": [1, 2, (3, 4)],
        "g": [1, 2, 3],
        "h": ("a", "b"),
        "l": [],
        "m": False,
        "n": [1, [2, 3]],
        "o": (1,),
        "p": "x=y",
    }
    with pytest.raises(ValueError, match="Imbalanced brackets"):
        parse_value("[1,2")
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_cfg_options(["novalue"])


def test_merge_from_dict(child):
    child.merge_from_dict(
        parse_cfg_options(
            [
                "optim_wrapper.optimizer.lr=0.5",
                "optim_wrapper.clip_grad=None",
                "param_scheduler.0.T_max=5",
                "train_cfg.max_epochs=3",
                "new.key=[1,2]",
                "model.backbone.norm_cfg.type=SyncBN",
            ]
        )
    )
    assert child.optim_wrapper.optimizer.lr == 0.5
    assert child.param_scheduler[0].T_max == 5
    assert child.train_cfg == {"by_epoch": True, "max_epochs": 3, "val_interval": 1}
    assert child.new == {"key": [1, 2]}
    assert child.model.backbone.norm_cfg == {"type": "SyncBN", "requires_grad": True}
    # a dict value merges into an existing dict
    child.merge_from_dict({"model.head": dict(in_channels=64)})
    assert child.model.head == {"type": "ToyHead", "in_channels": 64}
    with pytest.raises(KeyError, match="Index 5 exceeds the length of list"):
        child.merge_from_dict({"param_scheduler.5.T_max": 1})
    # an override keeps the key origin for later error messages
    assert child.optim_wrapper.optimizer._key_source()[1] == "optim_wrapper.optimizer"


# --------------------------------------------------------------------------- dump
@pytest.mark.parametrize("suffix", [".py", ".yaml", ".json"])
def test_dump_round_trip(child, tmp_path, suffix):
    child.merge_from_dict({"extra": dict(t=(1, 2), s=(3,), f=float("inf"), k={"a b": None})})
    out = tmp_path / f"dumped{suffix}"
    child.dump(out)
    loaded = Config.fromfile(out)
    if suffix == ".json":  # JSON has no tuples: they come back as lists
        assert loaded.to_dict() == json.loads(json.dumps(child.to_dict()))
        assert loaded.extra.t == [1, 2] and loaded.model == child.model
    else:
        assert loaded.to_dict() == child.to_dict()


def test_pretty_text_is_loadable_python(child):
    text = child.pretty_text
    assert text.startswith("model = dict(")
    assert all(len(line) <= 100 for line in text.splitlines())
    assert Config.fromstring(text, ".py") == child
    assert child.dump() == text
    cfg = Config(dict(t=torch.optim.SGD))
    assert cfg.pretty_text == "t = 'torch.optim.sgd.SGD'\n"


# --------------------------------------------------------------------------- package attributes
def test_subpackages_are_attributes_after_import_fastopt():
    # the README's `@fastopt.registry.OPTIMIZERS.register_module()` after a plain `import fastopt`
    code = (
        "import fastopt\n"
        "@fastopt.registry.OPTIMIZERS.register_module()\n"
        "class MyOptimizer(fastopt.FusedSGD):\n"
        "    pass\n"
        "assert fastopt.registry.OPTIMIZERS.get('MyOptimizer') is MyOptimizer\n"
        "assert fastopt.config.Config is fastopt.Config\n"
        "assert {'registry', 'config', 'scheduler'} <= set(dir(fastopt))\n"
        "try:\n"
        "    fastopt.no_such_thing\n"
        "except AttributeError as e:\n"
        "    print(e)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(Path(fastopt.__file__).parent.parent))
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout == "module 'fastopt' has no attribute 'no_such_thing'\n"


def test_overridden_keys_are_remembered(child):
    child.merge_from_dict(
        {
            "optim_wrapper.optimizer.lr": 0.5,
            "model.backbone": dict(depth=18),
            "param_scheduler.0.T_max": 3,
        }
    )
    for cfg in (child, copy.deepcopy(child), pickle.loads(pickle.dumps(child)), child.copy()):
        assert cfg.optim_wrapper.optimizer._overridden("lr")
        assert not cfg.optim_wrapper.optimizer._overridden("type")
        assert cfg.model._overridden("backbone") and cfg.model.backbone._overridden("depth")
        assert not cfg.model.backbone._overridden("norm_cfg")
        assert cfg.param_scheduler[0]._overridden("T_max")
    assert not Config.fromfile(CONFIGS / "child.py").optim_wrapper.optimizer._overridden("lr")
