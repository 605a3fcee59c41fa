"""Checkpoints: atomic writes, and refusing files that are corrupt or carry code."""

from __future__ import annotations

import os
import pickle
import random
import subprocess
import sys
import time

import pytest
import torch

from ganforge.checkpoint import CheckpointError, load_checkpoint, save_atomically


class RunsCode:
    """Unpickling this would call os.system: a checkpoint crafted to run code on load."""

    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_a_checkpoint_crafted_to_run_code_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pt"
    torch.save({"format": 1, "payload": RunsCode()}, path)
    with pytest.raises(CheckpointError, match=f"refused to load {path}: it holds more than tensors and plain data"
                                              r" \(Trying to load unsupported GLOBAL .*system") as caught:
        load_checkpoint(path)
    assert not (tmp_path / "PWNED").exists()
    assert "weights_only" not in str(caught.value)  # torch's advice to load it unsafely is left out


def test_a_plain_pickle_is_refused_too(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(RunsCode()))
    with pytest.raises(CheckpointError, match=str(path)):
        load_checkpoint(path)
    assert not (tmp_path / "PWNED").exists()


def test_a_truncated_checkpoint_is_a_clear_error_naming_the_file(tmp_path):
    path = tmp_path / "last.pt"
    save_atomically({"format": 1, "weights": torch.randn(1000)}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=f"{path} is truncated or corrupt"):
        load_checkpoint(path)


def test_an_atomic_write_replaces_the_file_whole_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "last.pt"
    save_atomically({"format": 1, "step": 1}, path)
    save_atomically({"format": 1, "step": 2}, path)
    assert load_checkpoint(path)["step"] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_a_failed_write_keeps_the_previous_checkpoint(tmp_path):
    path = tmp_path / "last.pt"
    save_atomically({"format": 1, "step": 1}, path)

    class Unsaveable:
        def __reduce__(self):
            raise OSError(28, "No space left on device")

    with pytest.raises(CheckpointError, match="could not write checkpoint .*No space left on device; the previous checkpoint is kept"):
        save_atomically({"format": 1, "step": 2, "bad": Unsaveable()}, path)
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_a_file_torch_did_not_write_is_named(tmp_path):
    path = tmp_path / "recipe.toml"
    path.write_text("[train]\nsteps = 3\n")
    with pytest.raises(CheckpointError, match=f"{path} is not a ganforge checkpoint: torch.save did not write it"):
        load_checkpoint(path)


def test_a_file_that_is_not_a_ganforge_checkpoint_is_named(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError, match=f"{path} is not a ganforge checkpoint"):
        load_checkpoint(path)


def test_stale_temporaries_of_a_killed_write_are_removed_at_the_next_save(tmp_path):
    path = tmp_path / "last.pt"
    save_atomically({"format": 1, "step": 1}, path)
    stale = tmp_path / ".last.pt.k1ll3d.tmp"
    stale.write_bytes(b"half a checkpoint")
    other = tmp_path / ".other.pt.x.tmp"  # another file's temporary is not ours to delete
    other.write_bytes(b"")
    save_atomically({"format": 1, "step": 2}, path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.pt.x.tmp", "last.pt"]


# A process that writes checkpoints of 8 MB in a loop, each one a known state: ``weights`` is the
# same seeded random tensor with its first value set to the step. It prints each step once written.
WRITER = """
import sys
import torch
from pathlib import Path
from ganforge.checkpoint import save_atomically

path, first = Path(sys.argv[1]), int(sys.argv[2])
weights = torch.randn(2_000_000, generator=torch.Generator().manual_seed(0))
for step in range(first, first + 10_000):
    weights[0] = step
    save_atomically({"format": 1, "step": step, "weights": weights}, path)
    print(step, flush=True)
"""


def kill_while_writing(writer, folder, timing) -> None:
    """``kill -9`` the writer as soon as one of its temporary files is seen, or a little after."""
    while not any(p.name.endswith(".tmp") for p in folder.iterdir()):
        time.sleep(0.0005)
    time.sleep(timing.uniform(0.0, 0.01))
    writer.kill()


def kill_at_any_moment(writer, folder, timing) -> None:
    time.sleep(timing.uniform(0.0, 0.4))
    writer.kill()


@pytest.mark.parametrize("kill", [kill_while_writing, kill_at_any_moment])
def test_kill_9_during_checkpoint_writes_leaves_the_previous_checkpoint_whole(tmp_path, kill):
    path = tmp_path / "last.pt"
    expected = torch.randn(2_000_000, generator=torch.Generator().manual_seed(0))
    timing = random.Random(0)
    killed_mid_write, first = 0, 0
    stale: set[str] = set()
    for _ in range(3):
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(first)], stdout=subprocess.PIPE, text=True)
        written = int(writer.stdout.readline())  # one write done: the stale files of the last kill are gone
        assert written == first and not stale & {p.name for p in tmp_path.iterdir()}
        kill(writer, tmp_path, timing)
        writer.wait()
        last_printed = max([written, *map(int, writer.stdout.read().split())])
        state = load_checkpoint(path)  # loads: never half written
        assert last_printed <= state["step"] <= last_printed + 1  # the last write, or one finished unprinted
        expected[0] = state["step"]
        assert torch.equal(state["weights"], expected)
        stale = {p.name for p in tmp_path.iterdir() if p.name != "last.pt"}
        killed_mid_write += bool(stale)
        first = state["step"] + 1
    if kill is kill_while_writing:
        assert killed_mid_write >= 1, "no kill hit a write: the test proved nothing"
