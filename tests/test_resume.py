"""Exact resume in-process: signals, InfoGAN's state, global random streams, kept checkpoints,
recipe changes. The same runs through the ``ganforge`` command are in test_interrupt.py."""

from __future__ import annotations

import io
import os
import random
import resource
import signal

import numpy as np
import pytest
import torch
from rich.console import Console

from ganforge import hookimpl
from ganforge.checkpoint import CheckpointError, load_checkpoint
from ganforge.errors import RecipeError
from ganforge.launch import run_recipe
from ganforge.training import TrainingInterrupted

from .conftest import (
    assert_same_state,
    assert_same_training,
    make_host,
    metric_records,
    run_tiny,
    tiny_recipe,
    write_recipe,
)

# Four steps, a metrics record every two and a checkpoint every two, one periodic copy kept.
FOUR_STEPS = {"steps": 4, "log_every": 2, "sample_every": 1000, "checkpoint_every": 2, "keep_checkpoints": 1}
INFOGAN_CODES = [
    {"name": "digit", "dist": "categorical", "size": 4, "weight": 1.0},
    {"name": "slant", "dist": "uniform", "size": 1, "weight": 0.1},
]


class SignalAt:
    """Sends this process ``signals`` at the end of ``step``: a Ctrl-C or a ``kill`` at a known moment."""

    def __init__(self, step: int, *signals: int):
        self.step, self.signals = step, signals

    @hookimpl
    def ganforge_step_end(self, step):
        if step == self.step:
            for number in self.signals:
                os.kill(os.getpid(), number)


def last_checkpoint(tmp_path):
    return tmp_path / "runs" / "tiny" / "checkpoints" / "last.pt"


def interrupted_at(tmp_path, step: int, *signals: int, **sections) -> TrainingInterrupted:
    with pytest.raises(TrainingInterrupted) as caught:
        run_tiny(tmp_path, make_host(("signal", SignalAt(step, *signals))), **sections)
    return caught.value


@pytest.mark.parametrize(("number", "exit_code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_ends_the_step_checkpoints_and_resumes_bitwise(tmp_path, number, exit_code):
    straight = run_tiny(tmp_path / "straight", train=FOUR_STEPS)
    stop = interrupted_at(tmp_path / "stopped", 3, number, train=FOUR_STEPS)
    name = signal.Signals(number).name
    assert stop.exit_code == exit_code
    assert str(stop) == (f"stopped by {name} after step 3; checkpoint written to {last_checkpoint(tmp_path / 'stopped')};"
                         f" resume with: ganforge run {tmp_path / 'stopped' / 'tiny.toml'} --resume")
    assert load_checkpoint(last_checkpoint(tmp_path / "stopped"))["step"] == 3
    # Off the cadence: last.pt only, no periodic copy of step 3.
    assert sorted(p.name for p in last_checkpoint(tmp_path / "stopped").parent.iterdir()) == ["last.pt", "step_0000002.pt"]

    resumed = run_tiny(tmp_path / "stopped", resume=True, train=FOUR_STEPS)
    assert resumed.step == 4
    assert_same_training(last_checkpoint(tmp_path / "straight"), last_checkpoint(tmp_path / "stopped"))
    # The record of step 4 averages steps 3 and 4 although step 3 ran before the signal.
    assert metric_records(resumed.directory) == metric_records(straight.directory)
    assert [r["step"] for r in metric_records(resumed.directory)] == [2, 4]
    assert sorted(p.name for p in last_checkpoint(tmp_path / "stopped").parent.iterdir()) == ["last.pt", "step_0000004.pt"]


def test_the_previous_signal_handlers_are_back_after_training(tmp_path):
    def previous(number, frame):
        pass

    old_int, old_term = signal.signal(signal.SIGINT, previous), signal.signal(signal.SIGTERM, previous)
    try:
        run_tiny(tmp_path / "a", train={"steps": 2})
        assert signal.getsignal(signal.SIGINT) is previous and signal.getsignal(signal.SIGTERM) is previous
        interrupted_at(tmp_path / "b", 1, signal.SIGINT, train={"steps": 2})
        assert signal.getsignal(signal.SIGINT) is previous and signal.getsignal(signal.SIGTERM) is previous
    finally:
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)


def test_a_second_signal_stops_at_once_and_keeps_the_last_checkpoint_whole(tmp_path):
    stop = interrupted_at(tmp_path, 3, signal.SIGINT, signal.SIGINT, train=FOUR_STEPS)
    assert stop.exit_code == 130
    assert str(stop).startswith(f"stopped at once by a second SIGINT; {last_checkpoint(tmp_path)} holds the last checkpoint;"
                                " resume with: ganforge run")
    assert load_checkpoint(last_checkpoint(tmp_path))["step"] == 2  # step 3 was never checkpointed
    assert run_tiny(tmp_path, resume=True, train=FOUR_STEPS).step == 4


def test_a_signal_before_the_first_checkpoint_still_leaves_one(tmp_path):
    stop = interrupted_at(tmp_path, 1, signal.SIGTERM, train=FOUR_STEPS)
    assert stop.exit_code == 143 and load_checkpoint(last_checkpoint(tmp_path))["step"] == 1


@pytest.mark.parametrize("settings", [{}, {"consistency_weight": 1.0}, {"code_moves": {"slant": "shear"}},
                                      {"code_moves": {"slant": "shear"}, "code_move_trunk": True},
                                      {"code_moves": {"slant": "shear"}, "q_split": True},
                                      {"code_moves": {"slant": "brightness"}, "moves": "clothing"},
                                      {"consistency_weight": 1.0, "moved_fake_weight": 1.0, "moves": "clothing"}],
                         ids=["infogan", "infogan-consistency", "infogan-code-moves", "infogan-code-moves-trunk",
                              "infogan-q-split", "infogan-clothing-brightness", "infogan-moved-fakes"])
def test_infogan_resumes_bitwise(tmp_path, settings):
    plugins = {"infogan": {"codes": INFOGAN_CODES, "traverse_every_sample": False, **settings}}
    straight = run_tiny(tmp_path / "straight", plugins=plugins, train=FOUR_STEPS)
    interrupted_at(tmp_path / "stopped", 3, signal.SIGINT, plugins=plugins, train=FOUR_STEPS)
    stored = load_checkpoint(last_checkpoint(tmp_path / "stopped"))
    layers = ["heads.q.categorical.net", "heads.q.continuous.net"] if settings.get("q_split") else ["heads.q.net"]
    assert set(stored["discriminator"]) >= {f"{layer}.{key}" for layer in layers for key in ("0.weight", "1.running_mean")}
    own_streams = ({"infogan/moves"} if settings else set()) | ({"infogan/fake-moves"} if "moved_fake_weight" in settings else set())
    assert set(stored["rng"]["streams"]) == {"data", "latents", "fixed"} | own_streams
    resumed = run_tiny(tmp_path / "stopped", resume=True, plugins=plugins, train=FOUR_STEPS)
    assert_same_training(last_checkpoint(tmp_path / "straight"), last_checkpoint(tmp_path / "stopped"))
    assert metric_records(resumed.directory) == metric_records(straight.directory)
    if settings:
        term = "consistency/digit" if "consistency_weight" in settings else "code_move/slant"
        assert f"loss/D/{term}" in metric_records(resumed.directory)[-1]


class GlobalDraws:
    """Logs a draw from Python's and numpy's global generators each step, as a plugin might."""

    @hookimpl
    def ganforge_step_end(self, logs):
        logs["draw/python"] = torch.tensor(random.random(), dtype=torch.float64)
        logs["draw/numpy"] = torch.tensor(np.random.random(), dtype=torch.float64)


def test_python_and_numpy_random_states_are_checkpointed_as_plain_data(tmp_path):
    host = lambda: make_host(("draws", GlobalDraws()))
    straight = run_tiny(tmp_path / "straight", host(), train={"steps": 4, "log_every": 1})
    run_tiny(tmp_path / "stopped", host(), train={"steps": 2, "log_every": 1})
    random.seed(12345)  # whatever happens in the process between the two halves does not matter
    np.random.seed(12345)
    resumed = run_tiny(tmp_path / "stopped", host(), overrides=["train.steps=4"], resume=True,
                       train={"steps": 2, "log_every": 1})
    draws = [(r["draw/python"], r["draw/numpy"]) for r in metric_records(resumed.directory)]
    assert draws == [(r["draw/python"], r["draw/numpy"]) for r in metric_records(straight.directory)]
    assert len(set(draws)) == 4
    rng = load_checkpoint(last_checkpoint(tmp_path / "stopped"))["rng"]
    assert type(rng["python"]["state"]) is list and len(rng["python"]["state"]) == 625
    assert type(rng["numpy"]["keys"]) is list and len(rng["numpy"]["keys"]) == 624
    assert_same_state(rng, load_checkpoint(last_checkpoint(tmp_path / "straight"))["rng"])


def test_the_same_seed_gives_the_same_global_draws(tmp_path):
    host = lambda: make_host(("draws", GlobalDraws()))
    first = run_tiny(tmp_path / "a", host(), train={"steps": 2, "log_every": 1})
    random.random()
    second = run_tiny(tmp_path / "b", host(), train={"steps": 2, "log_every": 1})
    assert metric_records(first.directory) == metric_records(second.directory)


@pytest.mark.parametrize(("keep", "expected"), [
    (0, []),
    (1, ["step_0000006.pt"]),
    (2, ["step_0000004.pt", "step_0000006.pt"]),
])
def test_the_last_k_periodic_checkpoints_are_kept(tmp_path, keep, expected):
    run_tiny(tmp_path, train={"steps": 6, "log_every": 6, "checkpoint_every": 2, "keep_checkpoints": keep})
    folder = last_checkpoint(tmp_path).parent
    assert sorted(p.name for p in folder.iterdir()) == ["last.pt", *expected]
    for name in expected:  # each copy holds its own step, not the latest
        assert load_checkpoint(folder / name)["step"] == int(name[5:12])


def test_a_changed_recipe_is_refused_without_the_override_flag(tmp_path):
    run_tiny(tmp_path, train={"steps": 2})
    with pytest.raises(RecipeError, match=r"differs from the run being resumed in latent.noise_dim, train.g_lr; .*"
                                          r"\(--force-resume resumes anyway\)"):
        run_tiny(tmp_path, resume=True, train={"steps": 4, "g_lr": 0.01}, latent={"noise_dim": 9})


def test_force_resume_warns_with_each_change_and_continues(tmp_path):
    run_tiny(tmp_path, train={"steps": 2})
    recipe = write_recipe(tmp_path / "tiny.toml", tiny_recipe(tmp_path / "runs", train={"steps": 4, "g_lr": 0.01}))
    output = io.StringIO()
    run = run_recipe(recipe, [], force_resume=True, host=make_host(), console=Console(file=output, width=500))
    assert "warning: resuming with a changed recipe: train.g_lr (0.0002 -> 0.01)" in output.getvalue()
    assert run.step == 4 and run.optimizer_g.param_groups[0]["lr"] == 0.01
    assert load_checkpoint(last_checkpoint(tmp_path))["recipe"]["train"]["g_lr"] == 0.01


def test_force_resume_into_other_models_is_a_clear_error(tmp_path):
    run_tiny(tmp_path, train={"steps": 1})

    recipe = write_recipe(tmp_path / "tiny.toml", tiny_recipe(tmp_path / "runs", latent={"noise_dim": 12}))
    with pytest.raises(CheckpointError, match=f"{last_checkpoint(tmp_path)} does not fit the run this recipe builds:"
                                              r" Error\(s\) in loading state_dict for .*: size mismatch for "):
        run_recipe(recipe, [], force_resume=True, host=make_host(), console=Console(file=io.StringIO()))


def test_a_run_killed_before_its_first_checkpoint_says_how_to_start_again(tmp_path):
    run_tiny(tmp_path, train={"steps": 1})
    last_checkpoint(tmp_path).unlink()
    with pytest.raises(CheckpointError, match="stopped before writing its first checkpoint .*; delete .* to start it again"):
        run_tiny(tmp_path, resume=True)


def test_a_partly_written_metrics_line_is_dropped_on_resume(tmp_path):
    straight = run_tiny(tmp_path / "straight", train={"steps": 4, "log_every": 1})
    stopped = run_tiny(tmp_path / "stopped", train={"steps": 2, "log_every": 1})
    with (stopped.directory / "metrics.jsonl").open("a") as file:
        file.write('{"step": 3, "images": 4')  # what a kill during the write leaves
    resumed = run_tiny(tmp_path / "stopped", overrides=["train.steps=4"], resume=True, train={"steps": 2, "log_every": 1})
    assert metric_records(resumed.directory) == metric_records(straight.directory)


class DiskFillsAt:
    """Lets no file grow past 1 MB from the end of ``step`` on (RLIMIT_FSIZE: writes fail with
    'File too large', as they fail with 'No space left on device' on a full disk)."""

    def __init__(self, step: int):
        self.step = step

    @hookimpl
    def ganforge_step_end(self, step):
        if step == self.step:
            resource.setrlimit(resource.RLIMIT_FSIZE, (1_000_000, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))


def test_a_checkpoint_that_cannot_be_written_stops_the_run_and_keeps_the_previous_one(tmp_path):
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    try:
        with pytest.raises(CheckpointError) as caught:
            run_tiny(tmp_path, make_host(("disk", DiskFillsAt(3))), train=FOUR_STEPS)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
    assert str(caught.value) == (f"could not write checkpoint {last_checkpoint(tmp_path)}: File too large;"
                                 " the previous checkpoint is kept; the run's checkpoints are kept (last: step 2); once"
                                 f" fixed, resume with: ganforge run {tmp_path / 'tiny.toml'} --resume")
    assert caught.value.exit_code == 2
    assert load_checkpoint(last_checkpoint(tmp_path))["step"] == 2
    assert sorted(p.name for p in last_checkpoint(tmp_path).parent.iterdir()) == ["last.pt", "step_0000002.pt"]
