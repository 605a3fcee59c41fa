"""Checkpoints: plain tensors and data only, written atomically, loaded with ``weights_only=True``."""

from __future__ import annotations

import contextlib
import glob
import os
import pickle
import random
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

from .errors import GanforgeError
from .models import unwrap

FORMAT = 1
TEMPORARY_SUFFIX = ".tmp"


class CheckpointError(GanforgeError):
    """A checkpoint that cannot be written or read."""


def keeps_state(run, name: str) -> bool:
    """Whether the switched-on plugin ``name`` keeps state in checkpoints: as its
    :class:`~ganforge.plugin_spec.PluginSpec` declares (``stateful``), or for a plugin registered
    the older way, whether its object has ``state_dict``."""
    spec = run.specs[name]
    return spec.stateful if spec.declared else hasattr(run.plugins[name], "state_dict")


def plugin_states(run) -> dict[str, Any]:
    """``state_dict()`` of every switched-on plugin object that keeps state."""
    return {name: plugin.state_dict() for name, plugin in run.plugins.items() if keeps_state(run, name)}


def run_state(run, meter: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everything the run needs to continue as if it had never stopped; ``meter`` holds the log
    values summed since the last metrics record, so the next record comes out the same."""
    return {
        "format": FORMAT,
        "step": run.step,
        "images_seen": run.images_seen,
        "recipe": run.recipe.to_dict(),
        "image_shape": list(run.image_shape),
        # The modules themselves, whatever wraps them (DDP, compile): keys carry no prefix.
        "generator": unwrap(run.generator).state_dict(),
        "discriminator": unwrap(run.discriminator).state_dict(),
        "optimizer_g": run.optimizer_g.state_dict(),
        "optimizer_d": run.optimizer_d.state_dict(),
        "rng": {
            "torch": torch.get_rng_state(),
            "streams": run.streams.state_dict(),  # data order, latents, every plugin's own stream
            **global_rng_states(),
        },
        "data_order": run.batcher.state_dict(),
        "plugins": plugin_states(run),
        "meter": meter or {},
        "eval_best": run.eval_best,  # eval.best's figure, value and step so far (ganforge.scoring)
    }


def restore_run_state(run, state: dict[str, Any], source: Path) -> None:
    """Load ``state`` (read from ``source``) into a freshly built ``run``: weights, optimizers,
    random streams, data order. Plugin states come later, after ``ganforge_train_start``
    (:func:`restore_plugin_states`)."""
    with does_not_fit(source):
        load_weights(run, state)
        load_optimizer(run.optimizer_g, state["optimizer_g"])
        load_optimizer(run.optimizer_d, state["optimizer_d"])
        rng = state["rng"]
        torch.set_rng_state(rng["torch"])
        run.streams.load_state_dict(rng.get("streams") or legacy_streams(rng), int(state["step"]))
        restore_global_rng_states(rng)
        run.batcher.load_state_dict(state["data_order"])
        run.step = int(state["step"])
        run.images_seen = int(state["images_seen"])
        run.eval_best = state.get("eval_best")


def legacy_streams(rng: dict[str, Any]) -> dict[str, dict]:
    """The streams of a checkpoint written before streams had names: data order and latents."""
    return {name: {"device": "cpu", "state": rng[name]} for name in ("data", "latents")}


def load_weights(run, state: dict[str, Any]) -> None:
    """The checkpoint's generator and discriminator, into the modules whatever wraps them."""
    unwrap(run.generator).load_state_dict(state["generator"])
    unwrap(run.discriminator).load_state_dict(state["discriminator"])


def restore_plugin_states(run, state: dict[str, Any], source: Path) -> None:
    """Each switched-on plugin's ``load_state_dict`` with what its ``state_dict`` saved."""
    with does_not_fit(source):
        for name, plugin_state in state.get("plugins", {}).items():
            if name in run.plugins and keeps_state(run, name):
                run.plugins[name].load_state_dict(plugin_state)


@contextlib.contextmanager
def does_not_fit(source: Path):
    """A checkpoint whose contents do not fit the run is a one-line error naming the file."""
    try:
        yield
    except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as error:
        # load_state_dict puts the mismatch on the line after its heading: keep both.
        reason = " ".join(line.strip() for line in str(error).splitlines()[:2] if line.strip()) or type(error).__name__
        raise CheckpointError(f"{source} does not fit the run this recipe builds: {reason}") from None


def load_optimizer(optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """The checkpoint's moments with the recipe's settings (learning rates, betas): the same
    unless ``--force-resume`` changed them, and then the recipe's are the ones asked for."""
    settings = [{key: value for key, value in group.items() if key != "params"} for group in optimizer.param_groups]
    optimizer.load_state_dict(state)
    for group, own in zip(optimizer.param_groups, settings):
        group.update(own)


# Python's and numpy's global generators, for plugins that draw from them. They are stored as
# plain lists and numbers: a ``weights_only`` load accepts nothing else.


def seed_global_rngs(seed: int) -> None:
    random.seed(seed)
    try:
        import numpy
    except ImportError:
        return
    numpy.random.seed(seed % 2**32)


def global_rng_states() -> dict[str, Any]:
    version, internal, gauss_next = random.getstate()
    states: dict[str, Any] = {"python": {"version": version, "state": list(internal), "gauss_next": gauss_next}}
    try:
        import numpy
    except ImportError:
        return states
    kind, keys, position, has_gauss, cached_gaussian = numpy.random.get_state(legacy=True)
    states["numpy"] = {"kind": kind, "keys": keys.tolist(), "position": int(position),
                       "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)}
    return states


def restore_global_rng_states(states: dict[str, Any]) -> None:
    if "python" in states:
        python = states["python"]
        random.setstate((python["version"], tuple(python["state"]), python["gauss_next"]))
    if "numpy" in states:
        import numpy

        saved = states["numpy"]
        numpy.random.set_state((saved["kind"], numpy.array(saved["keys"], dtype=numpy.uint32), saved["position"],
                                saved["has_gauss"], saved["cached_gaussian"]))


def save_atomically(state: dict[str, Any], path: Path) -> None:
    """Write to a temporary file in the same folder, flush and fsync, then rename over ``path``:
    a crash during the write leaves the previous file as it was. A failed write (no space left,
    no permission) is a :class:`CheckpointError`, and the previous file is still there."""
    temporary: Path | None = None
    file: _WriteErrors | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(path)
        handle, name = tempfile.mkstemp(prefix=temporary_prefix(path), suffix=TEMPORARY_SUFFIX, dir=path.parent)
        temporary = Path(name)
        with os.fdopen(handle, "wb") as opened:
            file = _WriteErrors(opened)
            torch.save(state, file)
            opened.flush()
            os.fsync(opened.fileno())
        os.replace(temporary, path)
        temporary = None
        _fsync_folder(path.parent)  # make the rename itself durable
    except BaseException as error:
        if temporary is not None:
            with contextlib.suppress(OSError):
                temporary.unlink(missing_ok=True)
        cause = file.error if file is not None and file.error is not None else error
        if isinstance(cause, OSError):
            kept = "the previous checkpoint is kept" if path.is_file() else "no checkpoint was written"
            raise CheckpointError(f"could not write checkpoint {path}: {cause.strerror or cause}; {kept}") from None
        raise


class _WriteErrors:
    """A file that remembers why a write failed: torch.save reports a failed write only as a
    RuntimeError about stream positions, which would hide a full disk."""

    def __init__(self, file):
        self.file = file
        self.error: OSError | None = None

    def write(self, data) -> int:
        try:
            return self.file.write(data)
        except OSError as error:
            self.error = error
            raise

    def flush(self) -> None:
        self.file.flush()


def _fsync_folder(folder: Path) -> None:
    directory = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def temporary_prefix(path: Path) -> str:
    return f".{path.name}."


def remove_stale_temporaries(path: Path) -> None:
    """Delete temporary files of ``path`` that a killed process left behind (one process writes a
    run's checkpoints, so none of them is still being written)."""
    for stale in path.parent.glob(f"{glob.escape(temporary_prefix(path))}*{TEMPORARY_SUFFIX}"):
        stale.unlink(missing_ok=True)


def keep_copy(source: Path, target: Path) -> None:
    """A periodic copy of ``source``: a hard link where the file system allows it (the next atomic
    write of ``source`` replaces its name, not the linked data), else a real copy."""
    try:
        target.unlink(missing_ok=True)
        try:
            os.link(source, target)
        except OSError:
            shutil.copyfile(source, target)
    except OSError as error:
        with contextlib.suppress(OSError):
            target.unlink(missing_ok=True)
        raise CheckpointError(f"could not write checkpoint {target}: {error.strerror or error};"
                              f" {source} is complete") from None


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint's contents; refuses anything that is not plain tensors and data."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    if not _starts_like_torch_save(path):
        raise CheckpointError(f"{path} is not a ganforge checkpoint: torch.save did not write it")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise CheckpointError(f"refused to load {path}: it holds more than tensors and plain data"
                              f" ({_refusal_reason(error)})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as error:
        raise CheckpointError(f"{path} is truncated or corrupt and cannot be read ({type(error).__name__})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a ganforge checkpoint (format {FORMAT})")
    return state


def _starts_like_torch_save(path: Path) -> bool:
    """A zip archive (torch.save's format) or a pickle (its old one); an empty file counts as a
    truncated checkpoint, not as another kind of file."""
    with open(path, "rb") as file:
        head = file.read(4)
    return not head or head.startswith((b"PK\x03\x04", b"\x80"))


def _refusal_reason(error: pickle.UnpicklingError) -> str:
    """The line of torch's refusal that says what was refused, without its advice to load the
    file with ``weights_only=False`` (which would run the code)."""
    boilerplate = ("Weights only load failed", "Please file an issue", "Check the documentation")
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return next((line for line in lines if not line.startswith(boilerplate)), "unsupported content")
