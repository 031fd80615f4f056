"""Problem sources: local JSONL/Parquet files and synthetic generators with their own verifiers.

A task has `problems(split, size) -> list[Problem]`, `verify(completion, answer, **meta) -> float`
(the reward contract of `dcrl.rewards`) and `prompt_template` (how `format_prompt` should present
its problems). `get_task(name, **kwargs)` builds one by name:

- "arith": `ArithmeticChainTask`, multi-step arithmetic with worked solutions of varying length
  (the embedded default, small enough for a character-level model on a CPU);
- "explore": `ExploreTask`, two-digit additions with three strategies, some failing on some
  problems, and harmless checks (the exploration testbed);
- "file": `FileTask`, problems from local files graded by a named reward function.

>>> task = get_task("arith", level=2, seed=0)
>>> problem = task.problems("train", size=1)[0]
>>> task.verify(problem.solution, problem.answer, **problem.meta)
1.0
"""

from __future__ import annotations

from typing import Any, Protocol

from dcrl.tasks.arithmetic import ANSWER_MARKER, SYNTHETIC_ALPHABET, ArithmeticChainTask
from dcrl.tasks.explore import EXPLORE_ALPHABET, ExploreTask
from dcrl.tasks.files import FileTask, load_problems
from dcrl.tasks.problem import Problem
from dcrl.tasks.prompts import BOXED_INSTRUCTION, PROMPT_TEMPLATES, format_prompt


class Task(Protocol):
    """What the trainer and the evaluator need from a problem source."""

    prompt_template: str

    def problems(self, split: str = "train", size: int | None = None) -> list[Problem]: ...

    def verify(self, completion: str, answer: str, **meta: Any) -> float: ...


TASKS: dict[str, type] = {"arith": ArithmeticChainTask, "explore": ExploreTask, "file": FileTask}


def get_task(name: str, **kwargs: Any) -> Task:
    """The task registered as `name` ("arith", "explore" or "file"), built with `kwargs`."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}: use one of {sorted(TASKS)}.")
    return TASKS[name](**kwargs)


__all__ = [
    "ANSWER_MARKER",
    "EXPLORE_ALPHABET",
    "BOXED_INSTRUCTION",
    "PROMPT_TEMPLATES",
    "SYNTHETIC_ALPHABET",
    "TASKS",
    "ArithmeticChainTask",
    "ExploreTask",
    "FileTask",
    "Problem",
    "Task",
    "format_prompt",
    "get_task",
    "load_problems",
]
