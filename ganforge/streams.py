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


#: Streams every rank of a distributed run draws alike (each keeps its own rows of the global
#: batch); every other stream is drawn per rank.
SHARED_STREAMS = frozenset(CORE_STREAMS)
RANK_STRIDE = 7_919  # how far apart the per-rank streams of one name are seeded


class RandomStreams:
    """The run's named generators, created on first use, saved and restored as plain states.

    ``rank`` (of a distributed run) moves the seeds of the per-rank streams; rank 0's are the
    single-process run's."""

    def __init__(self, seed: int, rank: int = 0):
        self.seed = seed
        self.rank = rank
        self._generators: dict[str, torch.Generator] = {}

    def get(self, name: str, device: torch.device | str = "cpu") -> torch.Generator:
        """The stream ``name``, created seeded on first use. A stream lives on one device."""
        device = torch.device(device)
        generator = self._generators.get(name)
        if generator is None:
            number = stream_number(name) + (0 if name in SHARED_STREAMS else self.rank * RANK_STRIDE)
            generator = self._generators[name] = seeded_generator(self.seed, number, device)
        elif generator.device.type != device.type:
            raise ValueError(f"random stream {name!r} lives on {generator.device}, asked for on {device}")
        return generator

    def state_dict(self) -> dict[str, dict]:
        return {name: {"device": str(generator.device), "state": generator.get_state()}
                for name, generator in self._generators.items()}

    def load_state_dict(self, states: dict[str, dict], step: int = 0) -> None:
        """Restore every saved stream (creating it first, so a plugin that asks for it later,
        even in ``ganforge_train_start``, continues where the checkpoint left it).

        Checkpoints hold rank 0's streams: another rank restores the shared ones and seeds its
        own afresh from the seed, the rank and ``step`` (the step resumed at), so that it never
        repeats the draws it made from the start."""
        for name, saved in states.items():
            if self.rank and name not in SHARED_STREAMS:
                number = stream_number(name) + self.rank * RANK_STRIDE + step * 1_000_000_007
                self._generators[name] = seeded_generator(self.seed, number, saved["device"])
                continue
            self.get(name, saved["device"]).set_state(saved["state"])
