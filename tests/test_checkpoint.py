"""Checkpoints: atomic writes, and refusing files that are corrupt or carry code."""

from __future__ import annotations

import os
import pickle

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
    with pytest.raises(CheckpointError, match=f"refused to load {path}: it holds more than tensors and plain data"):
        load_checkpoint(path)
    assert not (tmp_path / "PWNED").exists()


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


def test_a_file_that_is_not_a_ganforge_checkpoint_is_named(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError, match=f"{path} is not a ganforge checkpoint"):
        load_checkpoint(path)
