"""Runner: construction and its errors, from_cfg (files, MMCV 1.x keys), logs, TensorBoard,
progress bar, plain modules, auto_scale_lr, accumulation counts, lazy grad_norm."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import sys
import textwrap
from pathlib import Path

import pytest
import runner_toys as toys
import torch
from runner_toys import build, log_text

from fastopt.config import Config  # noqa: E402
from fastopt.hooks import CheckpointHook, Hook, LoggerHook  # noqa: E402
from fastopt.logging import MessageHub, print_log  # noqa: E402
from fastopt.logging.progress import ProgressDisplay, is_interactive  # noqa: E402
from fastopt.runner import Runner  # noqa: E402
from fastopt.wrapper import OptimWrapper, OptimWrapperDict  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


NO_VAL = dict(val_cfg=None, val_dataloader=None, val_evaluator=None)


# --------------------------------------------------------------------------- construction
@pytest.mark.parametrize(
    ("overrides", "error", "text"),
    [
        (
            dict(train_cfg=None),
            ValueError,
            "train_dataloader, train_cfg, optim_wrapper should be either all None",
        ),
        (dict(val_evaluator=None), ValueError, "val_dataloader, val_cfg, val_evaluator should be"),
        (dict(launcher="slurm"), ValueError, "launcher should be one of"),
        (dict(resume=1), TypeError, "resume should be a bool or a checkpoint path"),
        (dict(model=3), TypeError, "model should be an nn.Module or a dict"),
        (dict(cfg=3), TypeError, "cfg should be a Config, a dict or None"),
        (dict(param_scheduler=3), TypeError, "param_scheduler should be a scheduler, a config"),
        (dict(log_level="LOUD"), ValueError, "unknown log_level 'LOUD'"),
    ],
)
def test_constructor_errors(tmp_path, overrides, error, text):
    with pytest.raises(error, match=text):
        build(tmp_path, **overrides)


def test_scheduler_without_optimizer_and_phase_without_loop(tmp_path):
    with pytest.raises(
        ValueError, match="param_scheduler should be None when optim_wrapper is None"
    ):
        Runner(
            model=toys.RunnerToyModel(),
            work_dir=str(tmp_path),
            param_scheduler=dict(type="StepLR", step_size=1),
        )
    runner = Runner(model=toys.RunnerToyModel(), work_dir=str(tmp_path), log_level="WARNING")
    for phase in ("train", "val", "test"):
        with pytest.raises(RuntimeError, match=f"self._{phase}_loop` should not be None"):
            getattr(runner, phase)()
    assert (runner.epoch, runner.iter) == (0, 0)


def test_two_runners_in_the_same_second_do_not_share_logs(tmp_path):
    a = build(tmp_path, log_level="INFO")
    b = build(tmp_path, log_level="INFO")
    assert a.experiment_name != b.experiment_name and a.log_dir != b.log_dir
    assert a.message_hub is not b.message_hub and a.logger is not b.logger
    b.logger.info("only in b")
    assert "only in b" not in log_text(a) and "only in b" in log_text(b)


def test_build_message_hub(tmp_path):
    runner = build(tmp_path, **NO_VAL)
    assert runner.message_hub is MessageHub.get_instance(runner.experiment_name)
    assert runner.build_message_hub() is runner.message_hub
    assert runner.build_message_hub(dict(name="test_runner::hub")).instance_name == (
        "test_runner::hub"
    )
    with pytest.raises(TypeError, match="message_hub should be a dict or None, but got str"):
        runner.build_message_hub("hub")  # type: ignore[arg-type]


class _LibraryRecord(Hook):
    def before_train(self, runner):
        logging.getLogger("fastopt.wrapper").warning("library record during the run")

    def after_train_epoch(self, runner):
        runner.test()  # a phase inside a phase: the run stays active until train() ends

    def after_train(self, runner):
        logging.getLogger("fastopt.wrapper").warning("library record after a nested test")


def test_the_log_file_gets_library_records_only_during_a_phase(tmp_path, monkeypatch, capsys):
    work = tmp_path / "work"
    runner = build(
        work,
        train_cfg=dict(by_epoch=True, max_epochs=1),
        custom_hooks=[_LibraryRecord()],
        test_dataloader=toys.loader(shuffle=False),
        test_cfg=dict(),
        test_evaluator=dict(type="RunnerToyAccuracy"),
        **NO_VAL,
    )
    runner.train()
    path = Path(runner.log_dir, f"{runner.timestamp}.log")
    monkeypatch.setattr(logging.getLogger(), "handlers", [])  # as without pytest's capture
    library = logging.getLogger("fastopt.wrapper")
    library.warning("library record after the run")
    runner.flush_logs()
    text = path.read_text()
    assert "library record during the run" in text and "after a nested test" in text
    assert "after the run" not in text
    # outside runs, library warnings still reach the terminal (logging's last resort)
    assert "library record after the run" in capsys.readouterr().err

    # the work dir is deleted and the file closed (as logging.shutdown does): nothing raises
    shutil.rmtree(work)
    for handler in runner.logger.handlers:
        handler.close()
    library.warning("library record after the work dir is gone")
    runner.logger.warning("run record after the work dir is gone")
    assert "run record after the work dir is gone" in capsys.readouterr().out  # the terminal


class _PrintLogHook(Hook):
    def before_train(self, runner):
        print_log("print_log to the current run", logger="current")


def test_print_log_targets(tmp_path, capsys, caplog):
    runner = build(
        tmp_path,
        log_level="INFO",
        train_cfg=dict(by_epoch=True, max_epochs=1),
        custom_hooks=[_PrintLogHook()],
        **NO_VAL,
    )
    runner.train()
    print_log("to the run by its name", logger=runner.experiment_name, level=logging.WARNING)
    assert "print_log to the current run" in log_text(runner)
    assert "to the run by its name" in log_text(runner)
    capsys.readouterr()
    print_log("no run is active", logger="current")
    print_log("plain", logger=None)
    print_log("dropped", logger="silent")
    assert capsys.readouterr().out == "no run is active\nplain\n"
    with caplog.at_level(logging.INFO, logger="test_runner.print_log"):
        print_log("to a logger", logger=logging.getLogger("test_runner.print_log"))
    assert "to a logger" in caplog.text
    with pytest.raises(TypeError, match="logger should be a logging.Logger"):
        print_log("x", logger=3)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------- from_cfg
def test_from_cfg_with_a_config_file_dumps_it_and_names_the_run(tmp_path):
    path = tmp_path / "toy_exp.py"
    path.write_text(
        textwrap.dedent(
            f"""
            model = dict(type='RunnerToyModel')
            work_dir = {str(tmp_path / "work")!r}
            train_dataloader = dict(batch_size=4, dataset=dict(type='RunnerToyDataset'),
                                    sampler=dict(type='DefaultSampler', shuffle=True))
            train_cfg = dict(by_epoch=True, max_epochs=2)
            optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.1))
            param_scheduler = dict(type='StepLR', step_size=1, gamma=0.5)
            default_hooks = dict(checkpoint=dict(type='CheckpointHook', interval=1))
            randomness = dict(seed=3)
            log_level = 'WARNING'
            """
        )
    )
    runner = Runner.from_cfg(Config.fromfile(path))
    runner.train()
    work = tmp_path / "work"
    assert runner.experiment_name.startswith("toy_exp_")
    assert Config.fromfile(work / "toy_exp.py")["train_cfg"] == dict(by_epoch=True, max_epochs=2)
    assert (
        "train_cfg = dict(by_epoch=True, max_epochs=2)"
        in Path(runner.log_dir, "vis_data", "config.py").read_text()
    )
    meta = torch.load(work / "epoch_1.pth", weights_only=True)["meta"]
    assert "RunnerToyModel" in meta["cfg"] and meta["seed"] == 3
    assert runner.optim_wrapper.get_lr()["lr"] == [0.05]
    with pytest.raises(KeyError, match="the config has no `work_dir`"):
        Runner.from_cfg(dict(model=dict(type="RunnerToyModel")))


def test_from_cfg_honours_mmcv1_keys(tmp_path):
    cfg = dict(
        model=dict(type="RunnerToyModel"),
        work_dir=str(tmp_path),
        train_dataloader=toys.loader(),
        val_dataloader=toys.loader(shuffle=False),
        val_evaluator=dict(type="RunnerToyAccuracy", scores=[0.3, 0.6]),
        optimizer=dict(type="SGD", lr=0.1, momentum=0.9),
        optimizer_config=dict(grad_clip=dict(max_norm=1.0)),
        lr_config=dict(policy="step", step=[1]),
        runner=dict(type="EpochBasedRunner", max_epochs=2),
        checkpoint_config=dict(interval=1, max_keep_ckpts=1),
        log_config=dict(
            interval=2, hooks=[dict(type="TextLoggerHook"), dict(type="TensorboardLoggerHook")]
        ),
        evaluation=dict(interval=1, save_best="auto"),
        log_level="WARNING",
    )
    with pytest.warns(Warning, match="MMCV 1.x key"):
        runner = Runner.from_cfg(cfg)
    runner.train()
    logger = next(h for h in runner.hooks if isinstance(h, LoggerHook))
    checkpoint = next(h for h in runner.hooks if isinstance(h, CheckpointHook))
    assert logger.interval == 2 and checkpoint.max_keep_ckpts == 1
    assert sorted(p.name for p in tmp_path.glob("*.pth")) == ["best_acc_epoch_2.pth", "epoch_2.pth"]
    assert "TensorboardVisBackend" in runner.visualizer.backends
    assert runner.message_hub.get_scalar("train/grad_norm").current() > 0
    assert runner.optim_wrapper.get_lr()["lr"][0] == pytest.approx(0.01)  # step at epoch 1


# ------------------------------------------------------------------------ logs and files
def test_log_lines_and_json_scalars_follow_mmengine_format(tmp_path):
    runner = build(
        tmp_path,
        log_level="INFO",
        optim_wrapper=dict(optimizer=dict(type="SGD", lr=0.1), clip_grad=dict(max_norm=10.0)),
        default_hooks=dict(logger=dict(type="LoggerHook", interval=2), checkpoint=None),
    )
    runner.train()
    log = log_text(runner)
    num = r"\d+\.\d{4}"
    train = re.compile(
        rf"^\d{{4}}/\d\d/\d\d \d\d:\d\d:\d\d - fastopt - INFO - Epoch\(train\) \[1\]\[2/4\]  lr: 1\.0000e-01  "
        rf"eta: \d:\d\d:\d\d  time: {num}  data_time: {num}  (memory: \d+  )?grad_norm: {num}  "
        rf"loss: {num}  acc: {num}$",
        re.M,
    )
    assert train.search(log), log
    assert re.search(
        rf"Epoch\(val\) \[1\]\[4/4\]    acc: {num}  data_time: {num}  time: {num}$", log, re.M
    )
    assert f"Exp name: {runner.experiment_name}" in log
    vis = Path(runner.log_dir, "vis_data")
    records = [json.loads(line) for line in (vis / "scalars.json").read_text().splitlines()]
    assert list(records[0]) == [
        "lr",
        "data_time",
        "grad_norm",
        "loss",
        "acc",
        "time",
        "epoch",
        "iter",
        "step",
    ]
    assert (records[0]["epoch"], records[0]["iter"], records[0]["step"]) == (1, 2, 2)
    assert [r["step"] for r in records if "acc" in r and "loss" not in r] == [1, 2]  # val by epoch
    per_run = (vis / f"{runner.timestamp}.json").read_text().splitlines()
    assert [json.loads(x) for x in per_run] == records


def test_iteration_based_log_lines(tmp_path):
    runner = build(
        tmp_path,
        log_level="INFO",
        train_cfg=dict(by_epoch=False, max_iters=10, val_interval=5),
        log_processor=dict(by_epoch=False),
        default_hooks=dict(logger=dict(type="LoggerHook", interval=3), checkpoint=None),
    )
    runner.train()
    log = log_text(runner)
    assert re.search(r"Iter\(train\) \[ 3/10\]  lr: 1\.0000e-01  eta: ", log)
    assert re.search(r"Iter\(train\) \[ 6/10\]  lr: ", log)
    assert re.search(r"Iter\(val\) \[4/4\]    acc: \d\.\d{4}  data_time: ", log)


def test_tensorboard_backend_writes_real_event_files(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    runner = build(
        tmp_path,
        visualizer=dict(
            type="Visualizer",
            vis_backends=[dict(type="LocalVisBackend"), dict(type="TensorboardVisBackend")],
        ),
        default_hooks=dict(logger=dict(type="LoggerHook", interval=1), checkpoint=None),
        cfg=dict(note="recorded as text"),
    )
    runner.train()
    events = EventAccumulator(str(Path(runner.log_dir, "vis_data")))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert {"loss", "lr", "acc", "time", "data_time"} <= set(tags)
    assert [e.step for e in events.Scalars("loss")] == list(range(1, 9))
    assert [round(e.value, 4) for e in events.Scalars("lr")] == [0.1] * 8
    assert "config/text_summary" in events.Tags()["tensors"]


def test_visualizer_from_a_scoped_config_is_the_current_instance(tmp_path):
    """A visualizer dict brought in by a pkg:: base carries _scope_ (as MMEngine's loader
    marks it): it builds through the registry, as a ManagerMixin with get_instance."""
    from fastopt.visualization import Visualizer

    runner = build(
        tmp_path,
        visualizer=dict(
            type="Visualizer", _scope_="fastopt", vis_backends=[dict(type="LocalVisBackend")]
        ),
    )
    assert Visualizer.get_current_instance() is runner.visualizer


def test_progress_bar_only_on_an_interactive_terminal(tmp_path, monkeypatch):
    master, slave = os.openpty()
    with open(slave, "w") as tty, open(os.devnull, "w") as null:
        monkeypatch.setenv("TERM", "xterm")
        assert is_interactive(tty) and not is_interactive(null)
        monkeypatch.setenv("TERM", "dumb")
        assert not is_interactive(tty)
        monkeypatch.setenv("TERM", "xterm")
        bar = ProgressDisplay(stream=tty)
        bar.start("train", "train", total=8, completed=2)
        bar.start("val", "val", total=4)
        bar.advance("train", 3)
        bar.finish("val")
        bar.finish("train")
        tty.flush()
    drawn = os.read(master, 65536).decode(errors="replace")
    os.close(master)
    assert "\x1b[" in drawn and "train" in drawn and "2/8" in drawn  # a live, coloured bar
    runner = build(tmp_path, default_hooks=dict(checkpoint=None))  # pytest's stdout is no tty
    runner.train()
    assert next(h for h in runner.hooks if isinstance(h, LoggerHook))._progress is None


# ------------------------------------------------------------------------------ training
def test_a_plain_module_trains_and_validates(tmp_path):
    model = toys.PlainToyModule()
    before = model.fc.weight.detach().clone()
    runner = build(
        tmp_path,
        model=model,
        train_dataloader=toys.loader(collate_fn=dict(type="default_collate")),
        val_dataloader=toys.loader(shuffle=False, collate_fn=dict(type="default_collate")),
        default_hooks=dict(checkpoint=None),
    )
    runner.train()
    assert not torch.equal(model.fc.weight, before)
    assert 0 <= runner.message_hub.get_scalar("val/acc").current() <= 1
    assert len(runner.message_hub.get_scalar("train/loss")) == 8


def test_auto_scale_lr(tmp_path):
    runner = build(
        tmp_path,
        auto_scale_lr=dict(enable=True, base_batch_size=8),
        **NO_VAL,
        default_hooks=dict(checkpoint=None),
    )
    runner.train()
    assert runner.optim_wrapper.get_lr()["lr"] == [0.05]  # 0.1 * 1 process * 4 / 8
    runner = build(
        tmp_path,
        auto_scale_lr=dict(enable=False, base_batch_size=8),
        **NO_VAL,
        default_hooks=dict(checkpoint=None),
    )
    runner.train()
    assert runner.optim_wrapper.get_lr()["lr"] == [0.1]
    runner = build(tmp_path, auto_scale_lr=dict(enable=True), **NO_VAL)
    with pytest.raises(ValueError, match="positive int base_batch_size"):
        runner.train()


def test_train_initializes_accumulation_so_the_last_window_steps(tmp_path):
    model = toys.RunnerToyModel()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    steps = []
    optimizer.register_step_post_hook(lambda *_: steps.append(1))
    runner = build(
        tmp_path,
        model=model,
        optim_wrapper=OptimWrapper(optimizer, accumulative_counts=3),
        train_cfg=dict(by_epoch=True, max_epochs=2),
        default_hooks=dict(checkpoint=None),
        **NO_VAL,
    )
    runner.train()
    assert len(steps) == 3  # after iterations 3, 6 and the shorter last window (8)


def test_grad_norm_is_read_only_at_log_intervals(tmp_path):
    class PendingAtIter(Hook):
        priority = "LOWEST"

        def __init__(self):
            self.pending = []

        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
            self.pending.append(runner.message_hub.get_scalar("train/grad_norm")._n_pending)

    probe = PendingAtIter()
    runner = build(
        tmp_path,
        optim_wrapper=dict(optimizer=dict(type="SGD", lr=0.1), clip_grad=dict(max_norm=10.0)),
        default_hooks=dict(logger=dict(type="LoggerHook", interval=4), checkpoint=None),
        custom_hooks=[probe],
        **NO_VAL,
    )
    runner.train()
    # tensors pile up between log lines; the logger converts them at iterations 4 and 8
    assert probe.pending == [1, 2, 3, 0, 1, 2, 3, 0]


def test_optim_wrapper_dict_and_per_optimizer_schedulers(tmp_path):
    model = toys.RunnerToyModel()
    runner = Runner(model=model, work_dir=str(tmp_path), log_level="WARNING")
    wrappers = runner.build_optim_wrapper(
        dict(
            fc=OptimWrapper(torch.optim.SGD(model.fc.parameters(), lr=0.1)),
            bn=OptimWrapper(torch.optim.SGD(model.bn.parameters(), lr=0.2)),
        )
    )
    assert isinstance(wrappers, OptimWrapperDict)
    runner.optim_wrapper = wrappers
    schedulers = runner.build_param_scheduler(
        dict(fc=[dict(type="StepLR", step_size=1, gamma=0.5)])
    )
    assert list(schedulers) == ["fc"] and len(schedulers["fc"]) == 1
    with pytest.raises(ValueError, match="each item must be an optimizer wrapper"):
        runner.build_optim_wrapper(dict(fc=dict(lr=0.1)))


def test_default_scope_is_optional(tmp_path):
    runner = build(tmp_path, default_scope="fastopt", default_hooks=dict(checkpoint=None), **NO_VAL)
    runner.train()
    assert runner.default_scope.scope_name == "fastopt"
    assert build(tmp_path, **NO_VAL).default_scope is None


def test_randomness_seed_deterministic_and_drawn_seeds(tmp_path):
    previous = torch.are_deterministic_algorithms_enabled()
    try:
        runner = build(tmp_path, randomness=dict(seed=7, deterministic=True), **NO_VAL)
        assert runner.seed == 7 and runner.deterministic
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    finally:
        torch.use_deterministic_algorithms(previous)
        torch.backends.cudnn.deterministic = False
    # seed=None draws one; the run records it so a resume can restore it
    drawn = build(
        tmp_path,
        randomness=dict(seed=None),
        **NO_VAL,
        default_hooks=dict(checkpoint=dict(type="CheckpointHook", interval=1)),
    )
    drawn.train()
    assert isinstance(drawn.seed, int)
    assert torch.load(tmp_path / "epoch_2.pth", weights_only=True)["meta"]["seed"] == drawn.seed
    resumed = build(
        tmp_path,
        randomness=dict(seed=None),
        resume=True,
        train_cfg=dict(by_epoch=True, max_epochs=3),
        **NO_VAL,
    )
    resumed.train()
    assert resumed.seed == drawn.seed
    with pytest.raises(TypeError, match="randomness seed must be an int or None"):
        build(tmp_path, randomness=dict(seed="7"))


def test_runners_registry_builds_a_runner(tmp_path):
    from fastopt.registry import RUNNERS

    runner = RUNNERS.build(toys.make_cfg(tmp_path, **NO_VAL))
    assert isinstance(runner, Runner) and runner.work_dir == str(tmp_path)


def test_registry_locations_find_runner_layer_types_in_a_fresh_interpreter():
    import subprocess

    code = (
        "from fastopt.registry import HOOKS, LOOPS, RUNNERS, DATA_SAMPLERS, VISBACKENDS, LOG_PROCESSORS\n"
        "names = [(HOOKS, 'EMAHook'), (LOOPS, 'IterBasedTrainLoop'), (RUNNERS, 'Runner'),\n"
        "         (DATA_SAMPLERS, 'InfiniteSampler'), (VISBACKENDS, 'TensorboardVisBackend'),\n"
        "         (LOG_PROCESSORS, 'LogProcessor')]\n"
        "missing = [n for r, n in names if r.get(n) is None]\n"
        "assert not missing, missing\n"
    )
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(root) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
