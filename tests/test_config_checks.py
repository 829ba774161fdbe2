"""Mistakes that used to pass silently (issue 19 §5, §6): misspelt or dead top-level keys,
run lengths that leave a schedule empty, overrides into lists, and dumps that changed
string values on reload."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest
import runner_toys as toys

from fastopt.cli import main  # noqa: E402
from fastopt.config import Config, ConfigKeyError  # noqa: E402
from fastopt.config import legacy as legacy_module  # noqa: E402
from fastopt.config.errors import ConfigValueError  # noqa: E402
from fastopt.config.known_keys import (  # noqa: E402
    LEGACY_KEYS,
    RUNNER_KEYS,
    check_option_keys,
    unused_key_warnings,
)
from fastopt.runner import Runner  # noqa: E402
from fastopt.runner import builders as runner_builders  # noqa: E402

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "cnn_sgd_cosine.py"


pytestmark = pytest.mark.usefixtures("one_thread")


def _stderr_lines(capsys) -> list[str]:
    return [li for li in capsys.readouterr().err.splitlines() if li.strip()]


# ------------------------------------------------------------------------- the known keys
def test_runner_keys_are_the_keys_the_runner_reads():
    # from_cfg passes the config's RUNNER_ARGUMENTS as the constructor arguments of the same
    # names: the keys it reads are the constructor's parameters (less the run's own config
    # and the options that are no config keys), and those the model set-up reads from cfg
    assert "RUNNER_ARGUMENTS" in inspect.getsource(Runner.from_cfg)
    read = set(inspect.signature(Runner.__init__).parameters) - {"self", "cfg", "config_dump"}
    read |= set(re.findall(r'self\.cfg\.get\("(\w+)"', inspect.getsource(Runner)))
    read |= set(re.findall(r'\bcfg\.get\("(\w+)"', inspect.getsource(runner_builders.wrap_model)))
    assert read == set(RUNNER_KEYS)


def test_legacy_keys_are_the_ones_the_translation_reads():
    source = inspect.getsource(legacy_module)
    for key in LEGACY_KEYS:
        assert f'"{key}"' in source, key


def test_file_keys_close_to_known_ones_get_a_warning():
    cfg = dict(
        param_scheduler=[],
        param_schedulers=[dict(type="LinearLR")],  # the override that never applies
        optim_wraper=dict(),
        data_root="data/",  # helper variables of real configs: no noise
        dataset_type="X",
        img_scale=(1, 2),
        backend_args=None,
        compile=True,
        sync_bn=False,
        _private=1,
    )
    assert unused_key_warnings(cfg) == [
        "config key 'param_schedulers' is not read by fastopt; did you mean "
        "'param_scheduler' (which the config also sets)?",
        "config key 'optim_wraper' is not read by fastopt; did you mean 'optim_wrapper'?",
        "config key 'compile' is an option of MMEngine's Runner that fastopt does not read: "
        "the model is not compiled (call torch.compile in the model)",
    ]


def test_cfg_options_keys_are_checked_against_the_config_and_the_known_keys():
    cfg = dict(optim_wrapper=dict(), data_root="data/", runner=dict(max_epochs=1))
    with pytest.raises(ConfigKeyError, match="did you mean 'optim_wrapper'") as exc:
        check_option_keys({"optim_wraper.optimizer.lr": 0.1}, cfg)
    assert str(exc.value).startswith(
        "--cfg-options optim_wraper.optimizer.lr: 'optim_wraper' is neither a key of the "
        "config nor a key fastopt reads"
    )
    with pytest.raises(ConfigKeyError, match="'optimizer' is an MMCV 1.x key and this config"):
        check_option_keys({"optimizer.lr": 0.1}, cfg)
    # known keys, keys of the config (legacy ones too) pass; helper variables get a warning
    assert check_option_keys({"train_cfg.max_epochs": 3, "runner.max_epochs": 2}, cfg) == []
    assert check_option_keys({"data_root": "x"}, cfg) == [
        "--cfg-options data_root: 'data_root' is a variable of the config that fastopt does "
        "not read; the values the config computed from it are not changed"
    ]


def test_a_misspelt_option_is_an_error_before_anything_is_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", str(CONFIG), "--cfg-options", "optim_wraper.optimizer.lr=0.1"]) == 1
    assert _stderr_lines(capsys)[-1] == (
        "fastopt train: error: --cfg-options optim_wraper.optimizer.lr: 'optim_wraper' is "
        "neither a key of the config nor a key fastopt reads; did you mean 'optim_wrapper'?"
    )
    assert list(tmp_path.iterdir()) == []


def test_misspelt_file_keys_and_helper_overrides_are_noted(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "mine.py"
    config.write_text(
        f"_base_ = [{str(CONFIG)!r}]\n"
        "num_samples = 64\n"
        "param_schedulers = []  # meant to switch the schedules off\n"
    )
    # max_epochs=0 stops the run before training (see the run-length tests)
    args = ["train", str(config), "--cfg-options", "num_samples=8", "train_cfg.max_epochs=0"]
    assert main(args) == 1
    err = _stderr_lines(capsys)
    assert (
        "fastopt: note: --cfg-options num_samples: 'num_samples' is a variable of the config "
        "that fastopt does not read; the values the config computed from it are not changed"
    ) in err
    assert (
        "fastopt: note: config key 'param_schedulers' is not read by fastopt; did you mean "
        "'param_scheduler' (which the config also sets)?"
    ) in err


# ------------------------------------------------------------------- overrides into lists
def test_override_paths_name_the_option():
    cfg = Config(
        dict(
            param_scheduler=[dict(type="LinearLR"), dict(type="CosineAnnealingLR")],
            optim_wrapper=dict(clip_grad=None, betas=(0.9, 0.99)),
            custom_hooks=[],
        )
    )
    cases = {
        "param_scheduler.x": "param_scheduler.x: param_scheduler is a list of 2 items, so 'x' "
        "must be an index from 0 to 1 (e.g. param_scheduler.0.x, param_scheduler.1.x)",
        "param_scheduler.2.end": "param_scheduler.2.end: Index 2 exceeds the length of list "
        "param_scheduler (2 items)",
        "optim_wrapper.clip_grad.max_norm": "optim_wrapper.clip_grad.max_norm: "
        "optim_wrapper.clip_grad is None, which has no keys; give the whole value of "
        "optim_wrapper.clip_grad instead",
        "optim_wrapper.betas.0": "optim_wrapper.betas.0: optim_wrapper.betas is a tuple, which "
        "cannot be changed item by item; give the whole value of optim_wrapper.betas instead",
        "param_scheduler.0.type.x": "param_scheduler.0.type.x: param_scheduler.0.type is "
        "'LinearLR', which has no keys; give the whole value of param_scheduler.0.type instead",
        "custom_hooks.0": "custom_hooks.0: custom_hooks is an empty list; give the whole value "
        "of custom_hooks instead",
    }
    for option, message in cases.items():
        with pytest.raises(ConfigKeyError) as exc:
            cfg.merge_from_dict({option: 1})
        assert str(exc.value) == message
    # what MMEngine allows still works: list items by index, new keys at any depth
    cfg.merge_from_dict({"param_scheduler.1.end": 5, "optim_wrapper.new.deep": 1})
    assert cfg.param_scheduler[1].end == 5 and cfg.optim_wrapper.new.deep == 1


def test_a_list_option_error_on_the_command_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", str(CONFIG), "--cfg-options", "param_scheduler.x=1"]) == 1
    assert _stderr_lines(capsys)[-1].startswith(
        "fastopt train: error: --cfg-options: param_scheduler.x: param_scheduler is a list of 2 "
        "items, so 'x' must be an index from 0 to 1"
    )


# ------------------------------------------------------------------------------ run length
def _train(tmp_path: Path, scheduler, **overrides) -> Runner:
    runner = Runner(**toys.make_cfg(tmp_path, param_scheduler=scheduler, **overrides))
    runner.train()
    return runner


def _epochs(n: int) -> dict:
    return dict(type="EpochBasedTrainLoop", max_epochs=n)


@pytest.mark.parametrize(
    ("scheduler", "train_cfg", "message"),
    [
        (
            [dict(type="LinearLR", begin=0, end=1, convert_to_iter_based=True)],
            _epochs(0),
            "train_cfg.max_epochs=0 leaves nothing to train, so param_scheduler.0 (LinearLR) "
            "has nothing to schedule",
        ),
        (
            [dict(type="LinearLR", begin=3, end=2)],
            _epochs(4),
            "param_scheduler.0 (LinearLR): end=2 must be larger than begin=3",
        ),
    ],
    ids=["zero-epochs", "end"],
)
def test_schedules_that_cannot_fit_name_the_keys(tmp_path, scheduler, train_cfg, message):
    with pytest.raises(ConfigValueError) as exc:
        _train(tmp_path, scheduler, train_cfg=train_cfg)
    assert str(exc.value).startswith(message)


@pytest.mark.parametrize(
    ("scheduler", "train_cfg", "built", "message"),
    [
        (
            [dict(type="LinearLR", end=1), dict(type="CosineAnnealingLR", begin=6)],
            _epochs(4),
            ["LinearLR"],
            "param_scheduler.1 (CosineAnnealingLR) begins at epoch 6, and training ends at "
            "epoch 4 (train_cfg.max_epochs=4): left out; raise train_cfg.max_epochs above 6 "
            "to train with it",
        ),
        (
            dict(type="CosineAnnealingLR", by_epoch=False, begin=8),
            _epochs(2),
            [],
            "param_scheduler (CosineAnnealingLR) begins at iteration 8, and training ends at "
            "iteration 8 (train_cfg.max_epochs=2 x 4 iterations per epoch): left out",
        ),
        (
            [dict(type="ConstantLR", by_epoch=False, begin=10)],
            dict(type="IterBasedTrainLoop", max_iters=10),
            [],
            "param_scheduler.0 (ConstantLR) begins at iteration 10, and training ends at "
            "iteration 10 (train_cfg.max_iters=10): left out; raise train_cfg.max_iters above 10",
        ),
        (
            [dict(type="LinearLR", end=5), dict(type="CosineAnnealingLR", begin=5)],
            _epochs(1),
            ["LinearLR"],
            "param_scheduler.0 (LinearLR) ends at epoch 5, after training ends at epoch 1 "
            "(train_cfg.max_epochs=1): it is cut short there",
        ),
    ],
    ids=["begin-after-max-epochs", "iterations-of-epochs", "iter-loop", "cut-short"],
)
def test_a_shortened_run_trains_without_the_schedules_it_ends_before(
    tmp_path, scheduler, train_cfg, built, message
):
    """Shortening a run (train_cfg.max_epochs=1) leaves out a scheduler whose default end
    would now be at or before its begin: it would never take effect. A warning names it."""
    runner = _train(tmp_path, scheduler, train_cfg=train_cfg)
    assert [type(s).__name__ for s in runner.param_schedulers] == built
    assert runner.iter == runner.max_iters > 0
    runner.flush_logs()
    assert message in Path(runner.log_dir, f"{runner.timestamp}.log").read_text()


def test_an_empty_train_dataloader_is_named(tmp_path):
    with pytest.raises(ConfigValueError, match=r"^train_dataloader yields no batches \(len 0\)"):
        _train(
            tmp_path,
            dict(type="LinearLR"),
            train_dataloader=toys.loader(batch_size=4, n=2, drop_last=True),
        )


def test_a_schedule_after_the_end_of_training_is_a_warning(tmp_path):
    runner = _train(tmp_path, [dict(type="StepLR", step_size=1, begin=5, end=9)])
    runner.flush_logs()
    log = Path(runner.log_dir, f"{runner.timestamp}.log").read_text()
    assert (
        "param_scheduler.0 (StepLR) begins at epoch 5, and training ends at epoch 2 "
        "(train_cfg.max_epochs=2): it never takes effect"
    ) in log


def test_schedules_that_fit_train_without_a_word(tmp_path):
    runner = _train(
        tmp_path,
        [
            dict(type="LinearLR", end=1, convert_to_iter_based=True),
            dict(type="CosineAnnealingLR", begin=1),
        ],
    )
    assert runner.iter == 8
    runner.flush_logs()
    assert "param_scheduler" not in Path(runner.log_dir, f"{runner.timestamp}.log").read_text()


# ------------------------------------------------------------------------------------ dump
LITERALS = dict(
    work_dir="{{ fileDirname }}/out",
    home="{{$HOME:/root}}",
    quoted="{{'$USER:me'}}",
    refs=["{{_base_.a}}", ("{{fileBasename}}", "{{ fileExtname }}")],
    nested={"k {{ fileBasenameNoExtension }}": "{{{ fileDirname }}}"},
    plain="no braces here",
)


@pytest.mark.parametrize("suffix", [".py", ".json", ".yaml"])
def test_dump_then_load_keeps_substitution_text(tmp_path, suffix):
    cfg = Config(LITERALS)
    path = tmp_path / f"dumped{suffix}"
    cfg.dump(path)
    loaded = Config.fromfile(path).to_dict()
    expected = Config(LITERALS).to_dict()
    if suffix == ".json":  # JSON has no tuples
        expected["refs"][1] = list(expected["refs"][1])
    assert loaded == expected
    assert "no braces here" in path.read_text()


def test_pretty_text_loads_back_equal(tmp_path):
    cfg = Config(LITERALS)
    reloaded = Config.fromstring(cfg.pretty_text, ".py")
    assert reloaded.to_dict() == cfg.to_dict()
