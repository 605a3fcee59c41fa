"""Training on two CPU processes with gloo, as torchrun runs them: the run completes, rank 0
writes everything and the other rank nothing, the first step's averaged gradients equal one
process's step on the combined batch, checkpoints move between process counts, SIGTERM stops
every rank after one checkpoint, and a head no term uses does not hang DDP."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from .conftest import write_recipe
from .distributed_probe import PLAIN_MLP_GRADIENT_TERMS
from .tolerance import assert_close_to_rounding, by_layer

PROBE = Path(__file__).with_name("distributed_probe.py")
TORCHRUN = shutil.which("torchrun", path=os.path.dirname(sys.executable))
LAUNCH_TIMEOUT = 120


def recipe(model: str = "plain-mlp", **train) -> dict:
    values = {
        "run": {"name": "ddp", "seed": 3, "out_dir": "runs"},
        "data": {"name": "shapes", "image_size": 28, "size": 256},
        "model": {"name": model},
        "latent": {"noise": "normal", "noise_dim": 8},
        "train": {"steps": 4, "batch_size": 16, "log_every": 2, "sample_every": 2, "checkpoint_every": 2,
                  "keep_checkpoints": 1, **train},
    }
    return values


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(folders: list[Path], recipe_path: Path, *args: str) -> list[subprocess.CompletedProcess]:
    """The probe on ``len(folders)`` ranks, as torchrun would start them, each in its own working
    folder: whatever a rank writes under the recipe's relative ``out_dir`` lands in its folder."""
    port = free_port()
    processes = []
    for rank, folder in enumerate(folders):
        folder.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(len(folders)),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1",
               # A rank that aborts (SIGABRT) prints every thread's Python stack, so the log says where.
               "PYTHONFAULTHANDLER": "1"}
        if len(folders) == 1:
            for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
                env.pop(key)
        processes.append(subprocess.Popen([sys.executable, str(PROBE), str(recipe_path), *args], cwd=folder, env=env,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    results = []
    for process in processes:
        out, err = process.communicate(timeout=LAUNCH_TIMEOUT)
        results.append(subprocess.CompletedProcess(process.args, process.returncode, out, err))
    return results


def files_under(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file())


def test_two_ranks_average_first_step_gradients_like_one_process_on_the_combined_batch(tmp_path):
    path = write_recipe(tmp_path / "r.toml", recipe())
    two = launch([tmp_path / "rank0", tmp_path / "rank1"], path, "--record", str(tmp_path / "two.pt"))
    assert [r.returncode for r in two] == [0, 0], two[0].stderr + two[1].stderr
    one = launch([tmp_path / "alone"], path, "--record", str(tmp_path / "one.pt"))
    assert one[0].returncode == 0, one[0].stderr

    averaged, single = torch.load(tmp_path / "two.pt"), torch.load(tmp_path / "one.pt")
    assert averaged.keys() == single.keys() and any(name.startswith("G.") for name in averaged)
    for name in single:
        assert single[name].abs().sum() > 0, name
    for layer, gradients in by_layer(single.items()).items():
        assert_close_to_rounding(by_layer(averaged.items())[layer], gradients, terms=PLAIN_MLP_GRADIENT_TERMS, what=layer)

    # Rank 0 wrote the run as one process does (metrics, samples, checkpoints); rank 1 nothing.
    assert files_under(tmp_path / "rank1") == []
    assert files_under(tmp_path / "rank0") == files_under(tmp_path / "alone")
    assert "distributed: 2 processes (DDP, gloo); the global batch of 16 is 8 per process" in two[0].stdout
    assert two[1].stdout == ""
    lines = (tmp_path / "rank0" / "runs" / "ddp" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2 and '"images": 64' in lines[-1]


def assert_same_weights(a: Path, b: Path) -> None:
    first, second = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
    for network in ("generator", "discriminator"):
        for name, value in first[network].items():
            torch.testing.assert_close(value, second[network][name], rtol=1e-4, atol=1e-5, msg=f"{network}.{name}")
    assert first["step"] == second["step"] and first["images_seen"] == second["images_seen"]


def test_checkpoints_move_between_process_counts(tmp_path):
    """Two ranks for 2 steps, then one to 4, ends where one process for 4 steps does; and one
    for 2, then two to 4, too (the model has no batch norm, so the arithmetic is the same)."""
    straight = write_recipe(tmp_path / "straight.toml", recipe())
    assert launch([tmp_path / "straight"], straight)[0].returncode == 0
    half = write_recipe(tmp_path / "half.toml", recipe(steps=2))
    expected = tmp_path / "straight" / "runs" / "ddp" / "checkpoints" / "last.pt"

    both = launch([tmp_path / "a0", tmp_path / "a1"], half)
    assert [r.returncode for r in both] == [0, 0], both[0].stderr + both[1].stderr
    (tmp_path / "b").mkdir()
    (tmp_path / "a0" / "runs").rename(tmp_path / "b" / "runs")
    resumed = launch([tmp_path / "b"], straight, "--resume")
    assert resumed[0].returncode == 0, resumed[0].stderr
    assert_same_weights(tmp_path / "b" / "runs" / "ddp" / "checkpoints" / "last.pt", expected)

    assert launch([tmp_path / "c0"], half)[0].returncode == 0
    grown = launch([tmp_path / "c0", tmp_path / "c1"], straight, "--resume")
    assert [r.returncode for r in grown] == [0, 0], grown[0].stderr + grown[1].stderr
    assert_same_weights(tmp_path / "c0" / "runs" / "ddp" / "checkpoints" / "last.pt", expected)
    assert files_under(tmp_path / "c1") == []


def test_a_head_no_term_uses_does_not_hang_ddp(tmp_path):
    path = write_recipe(tmp_path / "r.toml", recipe())
    results = launch([tmp_path / "r0", tmp_path / "r1"], path, "--unused-head")
    assert [r.returncode for r in results] == [0, 0], results[0].stderr + results[1].stderr


#: The residual backbones at CPU size with the regularisers that reach into their networks: path
#: length differentiates G's synthesis network outside DDP's wrapper, orthogonal regularisation
#: reads G's weights, spectral norm's power iteration keeps buffers in G and D.
BACKBONES = {
    "stylegan2": {"model": {"name": "stylegan2", "options": {"channel_base": 128, "channel_max": 32, "w_dim": 16}},
                  "plugins": {"path-length": {"every": 1}, "r1": {"gamma": 0.01}}},
    "biggan": {"model": {"name": "biggan", "options": {"g_width": 2, "d_width": 4, "attention": 8}},
               "plugins": {"orthogonal": {}, "spectral-norm": {"generator": True}}, "loss": {"name": "hinge"}},
}


@pytest.mark.parametrize("backbone", list(BACKBONES))
def test_the_residual_backbones_train_on_two_ranks_and_ddp_keeps_their_weights_alike(tmp_path, backbone):
    values = recipe(steps=2, checkpoint_every=2, sample_every=2)
    values["data"]["image_size"] = 64  # shapes renders 28 or 64 px; the backbones start at 32
    values["latent"]["noise_dim"] = 16 if backbone == "stylegan2" else 10  # biggan: a chunk per block
    values.update(BACKBONES[backbone])
    path = write_recipe(tmp_path / "r.toml", values)
    results = launch([tmp_path / "r0", tmp_path / "r1"], path, "--record-weights", str(tmp_path))
    assert [r.returncode for r in results] == [0, 0], results[0].stderr + results[1].stderr
    first, second = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    checkpoint = torch.load(tmp_path / "r0" / "runs" / "ddp" / "checkpoints" / "last.pt", weights_only=True)
    assert first.keys() == second.keys() and any(name.startswith("G.") for name in first)
    for name in first:
        # Averaged gradients and the same optimizer: the ranks' weights are the same bit for bit.
        assert torch.equal(first[name], second[name]), name
    assert checkpoint["step"] == 2 and files_under(tmp_path / "r1") == []


def test_a_batch_that_does_not_split_over_the_ranks_is_a_recipe_error(tmp_path):
    path = write_recipe(tmp_path / "r.toml", recipe(batch_size=15))
    results = launch([tmp_path / "r0", tmp_path / "r1"], path)
    assert [r.returncode for r in results] == [2, 2]
    assert "train.batch_size" in results[0].stderr and "does not split evenly over 2 processes" in results[0].stderr


@pytest.mark.skipif(TORCHRUN is None, reason="torchrun is not installed beside this Python")
def test_torchrun_trains_infogan_on_two_processes_and_sigterm_stops_every_rank_after_one_checkpoint(tmp_path):
    values = recipe(model="dcgan-28", steps=100_000, log_every=1, checkpoint_every=100_000, sample_every=100_000)
    # The code-move and moved-fake terms run D again outside the DDP-wrapped pass: they must not hang or break the ranks.
    values["plugins"] = {"infogan": {"codes": [{"name": "digit", "dist": "categorical", "size": 4},
                                               {"name": "slant", "dist": "uniform", "size": 1}],
                                     "consistency_weight": 1.0, "code_moves": {"slant": "shear"},
                                     "moved_fake_weight": 1.0, "traverse_every_sample": False}}
    path = write_recipe(tmp_path / "r.toml", values)
    process = subprocess.Popen([TORCHRUN, "--standalone", "--nproc_per_node=2", "-m", "ganforge", "run", str(path)],
                               cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = tmp_path / "runs" / "ddp" / "metrics.jsonl"
    deadline = time.monotonic() + LAUNCH_TIMEOUT
    while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 3):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=LAUNCH_TIMEOUT)
    assert process.returncode != 0
    checkpoint = tmp_path / "runs" / "ddp" / "checkpoints" / "last.pt"
    state = torch.load(checkpoint, weights_only=True)
    assert 3 <= state["step"] < 100_000 and state["images_seen"] == 16 * state["step"]
    assert files_under(tmp_path / "runs" / "ddp" / "checkpoints") == ["last.pt"]  # written once, by rank 0
    stopped = [line for line in (out + err).splitlines() if "stopped by SIGTERM after step" in line]
    assert len(stopped) == 2 and len({line.split("step ")[1].split(";")[0] for line in stopped}) == 1, out + err
    assert "loss/D/consistency/digit" in metrics.read_text() and "loss/D/code_move/slant" in metrics.read_text()
    assert "loss/G/moved_info/digit" in metrics.read_text()
