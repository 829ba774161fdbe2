"""Kill a training process with SIGKILL at random moments of its checkpoint saves, resume it,
and compare the result with an uninterrupted run (used by tests/test_checkpoint_integrity.py).

    python kill_saves.py ROOT TRIALS SEED VIA OUT_JSON

The process imports torch once and forks one child per run (a real process, killed for real):
first an uninterrupted reference run, then for each trial a run that the parent kills with
SIGKILL at a random moment -- during a randomly chosen save (between the start of
``before_save_checkpoint`` and a little after the save's last step), or, in one trial of four,
at any moment of the run -- and then a resumed run (``Runner(resume=True)``, or the
``fastopt train --resume`` command when VIA is ``cli``, every third trial when it is
``mixed``) in a fresh child. Children report
over a pipe: ``save N`` when a save starts, ``saved N`` when iteration N's checkpoint hook is
done (written, fsynced, renamed, recorded, predecessors removed), ``start N`` when a run
starts training at iteration N. Everything observed goes into OUT_JSON; the test asserts.

Test-only machinery: the reporting hook lives here, not in fastopt.
"""

from __future__ import annotations

import json
import os
import random
import select
import signal
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import runner_toys as toys  # noqa: E402

from fastopt.hooks import Hook  # noqa: E402
from fastopt.registry import HOOKS  # noqa: E402
from fastopt.runner import Runner  # noqa: E402
from fastopt.fileio.checkpoint import checkpoint_checksums, read_last_checkpoint  # noqa: E402

MAX_ITERS = 10
REPORT_FD = None  # the pipe's write end, in a child


@HOOKS.register_module()
class SaveReporter(Hook):
    priority = "LOWEST"  # after the CheckpointHook (VERY_LOW)

    def _say(self, text: str) -> None:
        if REPORT_FD is not None:
            os.write(REPORT_FD, (text + "\n").encode())

    def before_train(self, runner) -> None:
        self._say(f"start {runner.iter}")

    def before_save_checkpoint(self, runner, checkpoint) -> None:
        self._say(f"save {runner.iter + 1}")

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        self._say(f"saved {runner.iter + 1}")


def make_cfg(work_dir: str, resume: bool = False) -> dict:
    return toys.make_cfg(
        work_dir,
        model=dict(type="RunnerToyModel", dropout=0.3),  # resuming must restore the RNG
        train_cfg=dict(type="IterBasedTrainLoop", max_iters=MAX_ITERS, val_interval=2),
        default_hooks=dict(
            checkpoint=dict(
                type="CheckpointHook",
                by_epoch=False,
                interval=1,
                max_keep_ckpts=1,
                save_best="acc",
            )
        ),
        custom_hooks=[dict(type="SaveReporter")],
        resume=resume,
    )


def write_config(work_dir: str) -> str:
    path = os.path.join(os.path.dirname(work_dir), os.path.basename(work_dir) + "_cfg.py")
    cfg = make_cfg(work_dir)
    with open(path, "w") as f:
        for key, value in cfg.items():
            f.write(f"{key} = {value!r}\n")
    return path


def fork(target, *args) -> tuple[int, int]:
    """Run ``target(*args)`` in a child; return its pid and the read end of its report pipe."""
    global REPORT_FD
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        REPORT_FD = write
        code = 0
        try:
            target(*args)
        except BaseException:
            import traceback

            traceback.print_exc()
            code = 1
        finally:
            os._exit(code)
    os.close(write)
    return pid, read


def train(work_dir: str) -> None:
    Runner(**make_cfg(work_dir)).train()


def resume(work_dir: str, via: str, result: str) -> None:
    if via == "cli":
        from fastopt.cli import main

        config = write_config(work_dir)
        code = main(["train", config, "--resume", "--work-dir", work_dir])
        if code != 0 and read_last_checkpoint(work_dir) is None:
            # killed between the first rename and its record: the command refuses to guess
            # ("no usable last_checkpoint record but holds iter_1.pth; name the one to
            # continue: --resume PATH"); do as it says
            newest = max(Path(work_dir).glob("iter_*.pth"), key=lambda p: int(p.stem[5:]))
            code = main(["train", config, "--resume", str(newest), "--work-dir", work_dir])
        assert code == 0, code
        record = read_last_checkpoint(work_dir)
        state = torch.load(record.path, weights_only=True)["state_dict"]
    else:
        runner = Runner(**make_cfg(work_dir, resume=True))
        runner.train()
        state = runner.model.state_dict()
    torch.save(state, result)


def read_reports(fd: int, pid: int, on_line=None) -> tuple[list[tuple[str, int, float]], int]:
    """Lines from a child until it exits: (word, iteration, time); and its exit status."""
    reports: list[tuple[str, int, float]] = []
    buffer = b""
    status = None
    while True:
        ready, _, _ = select.select([fd], [], [], 0.0005)
        if ready:
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                word, n = line.decode().split()
                reports.append((word, int(n), time.perf_counter()))
                if on_line is not None:
                    on_line(reports)
        elif on_line is not None:
            on_line(reports)
    os.close(fd)
    _, status = os.waitpid(pid, 0)
    return reports, status


def main() -> None:
    root, trials, seed, via, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), *sys.argv[4:6]
    torch.set_num_threads(1)
    if via != "runner":  # imported once here, not in every forked command
        import matplotlib.pyplot  # noqa: F401

        import fastopt.cli  # noqa: F401
        import fastopt.commands.plot  # noqa: F401
    rng = random.Random(seed)
    os.makedirs(root, exist_ok=True)

    reference = os.path.join(root, "reference")
    pid, fd = fork(train, reference)
    reports, status = read_reports(fd, pid)
    assert status == 0, f"the reference run failed ({status})"
    starts = [t for w, _, t in reports if w == "save"]
    ends = [t for w, _, t in reports if w == "saved"]
    save_time = sorted(e - s for s, e in zip(starts, ends))[len(starts) // 2]
    run_time = ends[-1] - starts[0]
    record = read_last_checkpoint(reference)
    reference_state = torch.load(record.path, weights_only=True)["state_dict"]

    results = []
    for trial in range(trials):
        work = os.path.join(root, f"trial{trial}")
        anywhere = trial % 4 == 3
        # the last save ends the run: a kill aimed at it often comes too late
        target_save = rng.randint(1, MAX_ITERS - 1)
        delay = rng.uniform(0, (0.9 * run_time if anywhere else 1.2 * save_time))
        plan = {"killed_at": None}
        pid, fd = fork(train, work)

        def maybe_kill(
            reports, pid=pid, plan=plan, anywhere=anywhere, target=target_save, delay=delay
        ):
            if plan["killed_at"] is not None:
                return
            saves = [(n, t) for w, n, t in reports if w == "save"]
            if anywhere:
                begun = saves[0][1] if saves else None
            else:
                begun = next((t for n, t in saves if n == target), None)
            if begun is not None and time.perf_counter() - begun >= delay:
                os.kill(pid, signal.SIGKILL)
                plan["killed_at"] = time.perf_counter()

        reports, status = read_reports(fd, pid, maybe_kill)
        killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        saved = [n for w, n, _ in reports if w == "saved"]
        in_flight = [n for w, n, _ in reports if w == "save"]
        files = sorted(p.name for p in Path(work).glob("*.pth"))
        temps = sorted(p.name for p in Path(work).glob(".*.tmp"))
        record = read_last_checkpoint(work)
        record_ok = record_matches = None
        if record is not None:
            # intact: its own checksum matches; the record's may be of the file it replaced
            # (a kill between the rename and the record write, the same name saved twice)
            sums = checkpoint_checksums(record.path)
            record_ok = sums.stored is not None and sums.stored == sums.actual
            record_matches = record.sha256 == sums.actual
        intact = []
        for name in files:
            sums = checkpoint_checksums(os.path.join(work, name))
            if sums.stored == sums.actual:
                intact.append(name)

        result_path = os.path.join(root, f"trial{trial}_final.pth")
        how = "cli" if via == "cli" or (via == "mixed" and trial % 3 == 2) else "runner"
        pid, fd = fork(resume, work, how, result_path)
        resumed_reports, resumed_status = read_reports(fd, pid)
        resumed_start = next((n for w, n, _ in resumed_reports if w == "start"), None)
        equal = None
        if resumed_status == 0:
            final = torch.load(result_path, weights_only=True)
            equal = all(torch.equal(final[k], v) for k, v in reference_state.items())
        results.append(
            dict(
                trial=trial,
                via=how,
                anywhere=anywhere,
                killed=killed,
                last_saved=max(saved, default=0),
                last_save_begun=max(in_flight, default=0),
                files_after_kill=files,
                intact_after_kill=intact,
                temps_after_kill=temps,
                record=None if record is None else os.path.basename(record.path),
                record_ok=record_ok,
                record_matches=record_matches,
                resumed_status=resumed_status,
                resumed_start=resumed_start,
                equal=equal,
                files_after_resume=sorted(p.name for p in Path(work).glob("*.pth")),
                temps_after_resume=sorted(p.name for p in Path(work).glob(".*.tmp")),
            )
        )
    with open(out, "w") as f:
        json.dump(
            dict(save_time=save_time, run_time=run_time, max_iters=MAX_ITERS, trials=results),
            f,
            indent=1,
        )


if __name__ == "__main__":
    main()
