"""Stopping ``ganforge run`` from outside, as a user or a scheduler does: SIGINT, SIGTERM and
``kill -9``, then ``--resume`` to the end. The result must equal an uninterrupted run bit for bit."""

from __future__ import annotations

import shlex
import signal
import subprocess
import time
from pathlib import Path

import pytest

from ganforge.checkpoint import load_checkpoint

from .conftest import assert_same_training, metric_records, tiny_recipe, write_recipe
from .test_cli import GANFORGE, ganforge

STEPS = 12
# One thread, so that the reference run and the interrupted one add up floats in the same order.
TRAIN = {"steps": STEPS, "log_every": 3, "sample_every": 1000, "checkpoint_every": 4, "keep_checkpoints": 0,
         "threads": 1}


def recipe_in(folder: Path) -> Path:
    return write_recipe(folder / "tiny.toml", tiny_recipe(folder / "runs", train=TRAIN))


def run_directory(folder: Path) -> Path:
    return folder / "runs" / "tiny"


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("uninterrupted")
    result = ganforge("run", recipe_in(folder))
    assert result.returncode == 0, result.stderr
    return run_directory(folder)


def start_run(folder: Path) -> subprocess.Popen:
    return subprocess.Popen([GANFORGE, "run", str(recipe_in(folder))], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for(condition, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, f"the run ended before it could be stopped: {process.communicate()}"
        assert time.monotonic() < deadline, "the run did not get that far in time"
        time.sleep(0.01)


def has_metrics(directory: Path) -> bool:
    metrics = directory / "metrics.jsonl"
    return metrics.exists() and metrics.read_text().endswith("\n")


def assert_resumes_to_the_uninterrupted_run(command: list[str], directory: Path, uninterrupted: Path) -> None:
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    assert f"done: {STEPS} steps" in result.stdout
    assert_same_training(uninterrupted / "checkpoints" / "last.pt", directory / "checkpoints" / "last.pt")
    assert metric_records(directory) == metric_records(uninterrupted)


@pytest.mark.parametrize(("number", "exit_code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_checkpoints_prints_the_resume_command_and_the_resumed_run_is_identical(
        tmp_path, uninterrupted, number, exit_code):
    directory = run_directory(tmp_path)
    process = start_run(tmp_path)
    wait_for(lambda: has_metrics(directory), process)
    process.send_signal(number)
    stdout, stderr = process.communicate(timeout=120)

    assert process.returncode == exit_code, stderr
    assert "Traceback" not in stderr + stdout
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    step = load_checkpoint(directory / "checkpoints" / "last.pt")["step"]
    assert 3 <= step < STEPS
    name = signal.Signals(number).name
    recipe = tmp_path / "tiny.toml"
    assert lines[0] == (f"stopped by {name} after step {step}; checkpoint written to {directory / 'checkpoints' / 'last.pt'};"
                        f" resume with: ganforge run {recipe} --resume")
    command = shlex.split(lines[0].split("resume with: ")[1])
    assert_resumes_to_the_uninterrupted_run([GANFORGE, *command[1:]], directory, uninterrupted)


def test_kill_9_after_a_checkpoint_then_resume_is_identical(tmp_path, uninterrupted):
    directory = run_directory(tmp_path)
    checkpoint = directory / "checkpoints" / "last.pt"
    process = start_run(tmp_path)
    wait_for(checkpoint.exists, process)
    process.kill()
    process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL
    assert load_checkpoint(checkpoint)["step"] % TRAIN["checkpoint_every"] == 0
    assert_resumes_to_the_uninterrupted_run([GANFORGE, "run", str(tmp_path / "tiny.toml"), "--resume"], directory,
                                            uninterrupted)
