"""Checkpoints: plain tensors and data only, written atomically, loaded with ``weights_only=True``."""

from __future__ import annotations

import os
import pickle
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

from .errors import GanforgeError

FORMAT = 1


class CheckpointError(GanforgeError):
    """A checkpoint that cannot be written or read."""

    exit_code = 2


def plugin_states(run) -> dict[str, Any]:
    """``state_dict()`` of every switched-on plugin object that keeps state."""
    return {name: plugin.state_dict() for name, plugin in run.plugins.items() if hasattr(plugin, "state_dict")}


def run_state(run) -> dict[str, Any]:
    """Everything the run needs to continue as if it had never stopped."""
    return {
        "format": FORMAT,
        "step": run.step,
        "images_seen": run.images_seen,
        "recipe": run.recipe.to_dict(),
        "image_shape": list(run.image_shape),
        "generator": run.generator.state_dict(),
        "discriminator": run.discriminator.state_dict(),
        "optimizer_g": run.optimizer_g.state_dict(),
        "optimizer_d": run.optimizer_d.state_dict(),
        "rng": {
            "torch": torch.get_rng_state(),
            "latents": run.latent_rng.get_state(),
            "data": run.batcher.generator.get_state(),
        },
        "data_order": run.batcher.state_dict(),
        "plugins": plugin_states(run),
    }


def restore_run_state(run, state: dict[str, Any]) -> None:
    run.generator.load_state_dict(state["generator"])
    run.discriminator.load_state_dict(state["discriminator"])
    run.optimizer_g.load_state_dict(state["optimizer_g"])
    run.optimizer_d.load_state_dict(state["optimizer_d"])
    torch.set_rng_state(state["rng"]["torch"])
    run.latent_rng.set_state(state["rng"]["latents"])
    run.batcher.generator.set_state(state["rng"]["data"])
    run.batcher.load_state_dict(state["data_order"])
    for name, plugin_state in state.get("plugins", {}).items():
        if name in run.plugins and hasattr(run.plugins[name], "load_state_dict"):
            run.plugins[name].load_state_dict(plugin_state)
    run.step = int(state["step"])
    run.images_seen = int(state["images_seen"])


def save_atomically(state: dict[str, Any], path: Path) -> None:
    """Write to a temporary file in the same folder, flush and fsync, then rename over ``path``:
    a crash during the write leaves the previous file as it was."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            torch.save(state, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException as error:
        Path(temporary).unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise CheckpointError(f"could not write checkpoint {path}: {error.strerror or error};"
                                  " the previous checkpoint is kept") from None
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # make the rename itself durable
    finally:
        os.close(directory)


def keep_copy(source: Path, target: Path) -> None:
    """A periodic copy of ``source``: a hard link where the file system allows it (the next atomic
    write of ``source`` replaces its name, not the linked data), else a real copy."""
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint's contents; refuses anything that is not plain tensors and data."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else "unsupported content"
        raise CheckpointError(f"refused to load {path}: it holds more than tensors and plain data ({first_line})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as error:
        raise CheckpointError(f"{path} is truncated or corrupt and cannot be read ({type(error).__name__})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a ganforge checkpoint (format {FORMAT})")
    return state
