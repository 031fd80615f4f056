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

import types
import typing
from collections.abc import Sequence
from typing import Any, Protocol, get_args, get_origin

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
    """The task registered as `name` ("arith", "explore" or "file"), built with `kwargs`.

    Raises:
        ValueError: an unknown task, or an option of the wrong type for the task's constructor
            (`max_digits=[1]` where it takes an integer), naming the option and what it takes.
    """
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}: use one of {sorted(TASKS)}.")
    check_option_types(name, TASKS[name], kwargs)
    return TASKS[name](**kwargs)


def check_option_types(name: str, task_class: type, options: dict[str, Any]) -> None:
    """Raise a ValueError if an option's value does not have the type the task's constructor
    declares (so `verbosity_levels=[[1]]` is named, not a "'<=' not supported" from inside)."""
    try:
        hints = typing.get_type_hints(task_class.__init__)
    except Exception:  # an annotation that does not resolve: leave the checks to the task
        return
    for option, value in options.items():
        if option not in hints:
            continue
        problem = _type_problem(value, hints[option])
        if problem is not None:
            where, got, expected = problem
            shown = repr(_item(value, where))
            shown = shown if len(shown) <= 60 else shown[:57] + "..."
            raise ValueError(
                f"{option}{where}={shown} is {got}, not {expected} (task {name!r}: {option} "
                f"takes {_describe(hints[option])})"
            )


def _item(value: Any, where: str) -> Any:
    """The item of `value` at `where` ("[0][2]"), as `_type_problem` reports it."""
    for index in where.strip("[]").split("][") if where else []:
        value = value[int(index)]
    return value


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a decimal number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"a {type(value).__name__}"


_PLURAL = {"an integer": "integers", "a number": "numbers", "text": "texts"}


def _describe(hint: Any) -> str:
    """'an integer', 'a list of numbers', 'an integer or a list of integers', ..."""
    origin = get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in get_args(hint) if a is not type(None)]
        nullable = " or null" if len(options) < len(get_args(hint)) else ""
        return " or ".join(_describe(a) for a in options) + nullable
    if origin in (Sequence, list, tuple):
        (inner, *_) = get_args(hint) or (Any,)
        element = _describe(inner)
        return f"a list of {_PLURAL.get(element, element)}"
    return {int: "an integer", float: "a number", str: "text", bool: "true or false"}.get(
        hint, getattr(hint, "__name__", str(hint))
    )


def _type_problem(value: Any, hint: Any, where: str = "") -> tuple[str, str, str] | None:
    """None if `value` fits `hint`, else (where in it, what it is there, what was expected)."""
    origin = get_origin(hint)
    if hint is Any:
        return None
    if origin in (typing.Union, types.UnionType):
        options = get_args(hint)
        problems = [_type_problem(value, option, where) for option in options]
        if any(problem is None for problem in problems):
            return None
        # a list is held against the union's list type, anything else against its scalar type
        is_list = isinstance(value, list | tuple)
        for option, problem in zip(options, problems, strict=True):
            if (get_origin(option) in (Sequence, list, tuple)) == is_list:
                return problem
        return problems[-1]
    if hint is type(None):
        return None if value is None else (where, _kind(value), "null")
    if origin in (Sequence, list, tuple):
        if not isinstance(value, list | tuple):
            return (where, _kind(value), _describe(hint))
        (inner, *_) = get_args(hint) or (Any,)
        for index, item in enumerate(value):
            problem = _type_problem(item, inner, f"{where}[{index}]")
            if problem is not None:
                return problem
        return None
    fits = {
        bool: lambda v: isinstance(v, bool),
        int: lambda v: isinstance(v, int) and not isinstance(v, bool),
        float: lambda v: isinstance(v, int | float) and not isinstance(v, bool),
        str: lambda v: isinstance(v, str),
    }.get(hint)
    if fits is None or fits(value):  # a type not checked here is left to the task
        return None
    return (where, _kind(value), _describe(hint))


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
