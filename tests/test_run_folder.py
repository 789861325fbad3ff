"""One writer per run folder (snnbench/run/run_folder.py): real ``python -m snnbench`` processes
on one folder; a finished run is never overwritten."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, TINY

from snnbench.run import run_folder
from snnbench.run.training import run

#: A run of 4 epochs, each long enough (~1 s) to be caught in the middle.
SLOW = [*TINY, "dataset.train_subset=2048", "model.num_steps=8", "trainer.epochs=4"]
SLOW += ["trainer.num_threads=1", "spiking.enabled=false"]


def start(run_dir: Path, *args: str, wait_s: float = 60) -> subprocess.Popen:
    """``python -m snnbench ARGS hydra.run.dir=RUN_DIR`` (output in a pipe)."""
    return subprocess.Popen(
        [sys.executable, "-m", "snnbench", *SLOW, *args, f"hydra.run.dir={run_dir}"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, run_folder.WAIT_ENV: str(wait_s), "HYDRA_FULL_ERROR": "0"},
    )


def wait_for_epoch(run_dir: Path, epoch: int, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[0][-3000:]
        try:
            if json.loads((run_dir / "metrics.json").read_text())["epochs_completed"] >= epoch:
                return
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.05)
    raise AssertionError(f"epoch {epoch} not reached")


def wait_for_holder(run_dir: Path, proc: subprocess.Popen) -> str:
    """Wait until ``proc`` holds ``run_dir``; the ``:pid:`` its lock file names."""
    holder = f":{proc.pid}:"
    deadline = time.monotonic() + 60
    while holder not in run_folder.holder(run_dir):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    return holder


def test_second_writer_waits_and_resumes_when_the_first_is_killed(tmp_path):
    """The SLURM case: a cancelled job still runs (KillWait) when its requeued run starts on
    the same folder. The second process waits (one line naming the holder) instead of
    writing beside the first; once the first is SIGKILLed, it resumes from the checkpoint
    and the record has every epoch once."""
    epochs = "trainer.epochs=6"
    first = start(tmp_path, epochs)
    holder = wait_for_holder(tmp_path, first)
    second = start(tmp_path, epochs, "trainer.resume=true")
    out = ""
    while "is in use by another run" not in out:  # the second is up and waiting
        line = second.stdout.readline()
        assert line, out[-3000:]
        out += line
    wait_for_epoch(tmp_path, 1, first)
    first.send_signal(signal.SIGKILL)
    first.wait()
    killed_at = json.loads((tmp_path / "metrics.json").read_text())["epochs_completed"]
    out += second.communicate(timeout=300)[0]
    assert second.returncode == 0, out[-3000:]
    waited = [line for line in out.splitlines() if "is in use by another run" in line]
    assert len(waited) == 1 and holder in waited[0], out[-3000:]
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert record["status"] == "completed"
    assert killed_at - 1 <= record["resumed_at_epoch"] <= killed_at  # lost at most an epoch
    assert [h["epoch"] for h in record["history"]] == [1, 2, 3, 4, 5, 6]
    assert not (tmp_path / run_folder.LOCK_FILE).exists()


def test_second_writer_stops_with_one_line_when_the_wait_runs_out(tmp_path):
    first = start(tmp_path, "trainer.epochs=6")
    wait_for_holder(tmp_path, first)
    second = start(tmp_path, "trainer.epochs=6", "trainer.resume=true", wait_s=0)
    out, _ = second.communicate(timeout=120)
    assert second.returncode == 2, out[-3000:]
    errors = [line for line in out.splitlines() if line.startswith("snnbench: error:")]
    assert len(errors) == 1 and "is in use by another run (" in errors[0], out[-3000:]
    assert f":{first.pid}:" in errors[0] and "Traceback" not in out
    assert first.poll() is None  # the first runs on, alone
    first.kill()
    first.wait()


def test_a_finished_run_is_never_overwritten(make_cfg, tmp_path):
    run_dir = tmp_path / "run"
    value = run(make_cfg(run_dir=run_dir))
    files = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
    assert "metrics.json" in files and run_folder.LOCK_FILE not in files
    with pytest.raises(run_folder.RunFolderFinished, match="holds a completed run"):
        run(make_cfg("optimizer.lr=0.5", run_dir=run_dir))  # another config, no resume
    assert run(make_cfg("trainer.resume=true", run_dir=run_dir)) == value  # its result
    assert {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()} == files


def test_the_lock_goes_with_its_process(tmp_path):
    """A holder killed by SIGKILL leaves the folder free at once (a kernel lock, no stale
    lock file to clean up)."""
    code = (
        "import sys, time; from pathlib import Path; from snnbench.run import run_folder\n"
        "with run_folder.hold(Path(sys.argv[1]), resume=False):\n"
        "    print('held', flush=True); time.sleep(60)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "held"
    with pytest.raises(run_folder.RunFolderBusy, match=f":{proc.pid}:"):
        run_folder.acquire(tmp_path, wait=0)
    proc.kill()
    proc.wait()
    fd = run_folder.acquire(tmp_path, wait=0)
    run_folder.release(tmp_path, fd)
    assert not (tmp_path / run_folder.LOCK_FILE).exists()
