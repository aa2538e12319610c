"""Randomness of a training step, derived from ``(seed, step, rank)`` alone.

A resumed run therefore replays exactly what an uninterrupted one does from the resumed
step on, and no random-number-generator state needs saving: every draw of step ``k`` on
rank ``r`` comes from :func:`step_generator` ``(seed, k, r)``, or from a per-item seed
drawn from it (:class:`StepBatchSampler`), never from the global torch generator.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, List, Optional, Sequence, Tuple

import torch
from torch.utils.data import Sampler

__all__ = ["step_generator", "StepBatchSampler", "random_crop_box", "split_every_nth"]


def step_generator(seed: int, step: int, rank: int = 0) -> torch.Generator:
    """A CPU generator seeded from ``(seed, step, rank)``: the randomness of one step."""
    g = torch.Generator()
    g.manual_seed((int(seed) * 1_000_003 + int(step) * 7919 + int(rank) * 104_729) % (2**63 - 1))
    return g


class StepBatchSampler(Sampler):
    """Yields, for each step in ``[start_step, steps)``, a batch of ``(index, seed)`` keys
    drawn (with replacement) from ``step_generator(seed, step, rank)``.

    Sampling with replacement per step needs no epoch bookkeeping, and ranks draw
    independent batches because the rank is part of the generator's seed. A dataset
    item ``(index, seed)`` makes all its random choices (crop, flips, degradation) from
    ``torch.Generator().manual_seed(seed)``, so a batch does not depend on DataLoader
    workers either.
    """

    def __init__(self, num_items: int, batch_size: int, *, seed: int, rank: int = 0, start_step: int = 0,
                 steps: int) -> None:
        self.num_items, self.batch_size = num_items, batch_size
        self.seed, self.rank, self.start_step, self.steps = seed, rank, start_step, steps

    def __len__(self) -> int:
        return max(0, self.steps - self.start_step)

    def __iter__(self) -> Iterator[List[Tuple[int, int]]]:
        for step in range(self.start_step, self.steps):
            g = step_generator(self.seed, step, self.rank)
            indices = torch.randint(self.num_items, (self.batch_size,), generator=g).tolist()
            seeds = torch.randint(2**62, (self.batch_size,), generator=g).tolist()
            yield list(zip(indices, seeds))


def random_crop_box(height: int, width: int, size: int, generator: torch.Generator) -> Tuple[int, int]:
    """``(top, left)`` of a uniformly placed ``size`` x ``size`` crop inside ``height`` x
    ``width`` (``size`` may not exceed either side), drawn from ``generator``."""
    if size > height or size > width:
        raise ValueError(f"a {size}x{size} crop does not fit a {width}x{height} image")
    top = int(torch.randint(0, height - size + 1, (1,), generator=generator))
    left = int(torch.randint(0, width - size + 1, (1,), generator=generator))
    return top, left


def split_every_nth(items: Sequence[Any], every: int, key: Optional[Callable[[Any], Any]] = None) -> tuple:
    """The project's one hold-out rule: sort ``items`` (by ``key``) and hold out every
    ``every``-th. Returns ``(kept, held_out)``; ``every <= 0`` holds nothing out.

    Pretraining (``synthetic.holdout_every``), the enhancer's ``data.exclude_every`` and
    ``benchmarks/enhance_quality.py`` all use it, so the images one holds out are the
    images the others never train on."""
    items = sorted(items, key=key)
    if every <= 0:
        return list(items), []
    return ([it for i, it in enumerate(items) if i % every != every - 1],
            [it for i, it in enumerate(items) if i % every == every - 1])
