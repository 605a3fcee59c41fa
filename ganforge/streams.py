"""Named random streams: one seeded ``torch.Generator`` per purpose, all kept in checkpoints.

Independent streams mean that adding a sample grid, a plugin or an augmentation never shifts the
data order or another plugin's draws, and that a resumed run continues every stream exactly. A
plugin asks the run for its own with ``run.rng("name")`` (on the device it draws on) instead of
seeding one itself.
"""

from __future__ import annotations

import zlib

import torch

# The core's own streams keep the numbers they always had, so runs stay reproducible across versions.
CORE_STREAMS = {"data": 1, "latents": 2, "fixed": 3}


def stream_number(name: str) -> int:
    """A stable number for a stream name (the core's fixed ones, else a CRC of the name)."""
    return CORE_STREAMS.get(name) or 1000 + zlib.crc32(name.encode()) % 1_000_000


def seeded_generator(seed: int, stream: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator for ``stream`` of the run seeded with ``seed``, on ``device``."""
    return torch.Generator(device=device).manual_seed(seed * 1_000_003 + stream)


class RandomStreams:
    """The run's named generators, created on first use, saved and restored as plain states."""

    def __init__(self, seed: int):
        self.seed = seed
        self._generators: dict[str, torch.Generator] = {}

    def get(self, name: str, device: torch.device | str = "cpu") -> torch.Generator:
        """The stream ``name``, created seeded on first use. A stream lives on one device."""
        device = torch.device(device)
        generator = self._generators.get(name)
        if generator is None:
            generator = self._generators[name] = seeded_generator(self.seed, stream_number(name), device)
        elif generator.device.type != device.type:
            raise ValueError(f"random stream {name!r} lives on {generator.device}, asked for on {device}")
        return generator

    def state_dict(self) -> dict[str, dict]:
        return {name: {"device": str(generator.device), "state": generator.get_state()}
                for name, generator in self._generators.items()}

    def load_state_dict(self, states: dict[str, dict]) -> None:
        """Restore every saved stream (creating it first, so a plugin that asks for it later,
        even in ``ganforge_train_start``, continues where the checkpoint left it)."""
        for name, saved in states.items():
            self.get(name, saved["device"]).set_state(saved["state"])
