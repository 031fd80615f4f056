"""The unit every task produces: one problem with its reference answer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Problem:
    """One problem.

    Attributes:
        prompt: the problem text, before any prompt template (`dcrl.tasks.format_prompt`).
        answer: the reference answer the reward function compares against.
        id: unique within its task and split.
        meta: metadata passed to the reward function as keyword arguments (difficulty level,
            other dataset columns, ...).
        solution: a worked solution ending in the answer, for supervised pre-training; None if
            the source has none.
    """

    prompt: str
    answer: str
    id: str
    meta: dict[str, Any] = field(default_factory=dict)
    solution: str | None = None
