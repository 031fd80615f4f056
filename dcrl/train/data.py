"""Deterministic, resumable order of training problems: one seeded permutation per epoch."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Generic, TypeVar

import torch

P = TypeVar("P")


class ProblemSampler(Generic[P]):
    """Yields batches of problems, reshuffled each epoch from (seed, epoch).

    Its state (epoch, position) is part of a checkpoint, so a resumed run sees the same problems
    in the same order as an uninterrupted one.
    """

    def __init__(self, problems: Sequence[P], batch_size: int, seed: int) -> None:
        if len(problems) < batch_size:
            raise ValueError(
                f"the data has {len(problems)} problems but a step needs {batch_size} "
                "(train.prompts_per_step): use more data or fewer prompts per step"
            )
        self.problems = problems
        self.batch_size = batch_size
        self.seed = seed
        self.epoch = 0
        self.position = 0

    def _order(self) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return torch.randperm(len(self.problems), generator=generator).tolist()

    def next_batch(self) -> list[P]:
        """The next `batch_size` problems; a batch never straddles two epochs."""
        if self.position + self.batch_size > len(self.problems):
            self.epoch += 1
            self.position = 0
        order = self._order()
        batch = [self.problems[i] for i in order[self.position : self.position + self.batch_size]]
        self.position += self.batch_size
        return batch

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
