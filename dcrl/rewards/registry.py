"""Finding a reward function by name or import path, and scoring a batch with it."""

from __future__ import annotations

import importlib
import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from dcrl.rewards.matching import exact_match_reward, numeric_reward
from dcrl.rewards.math_grader import math_reward

RewardFn = Callable[..., float]

REWARD_FUNCTIONS: dict[str, RewardFn] = {
    "math": math_reward,
    "exact": exact_match_reward,
    "numeric": numeric_reward,
}


def get_reward_fn(name_or_path: str | RewardFn) -> RewardFn:
    """The reward function named `name_or_path`.

    Args:
        name_or_path: a built-in name ("math", "exact", "numeric"), an import path
            "package.module:function" to a user function that follows the reward contract, or a
            callable (returned as is).

    Raises:
        ValueError: unknown name, or the module or attribute cannot be imported.
        TypeError: the imported object is not callable.
    """
    if callable(name_or_path):
        return name_or_path
    if name_or_path in REWARD_FUNCTIONS:
        return REWARD_FUNCTIONS[name_or_path]
    if ":" not in name_or_path:
        raise ValueError(
            f"unknown reward function {name_or_path!r}: use one of {sorted(REWARD_FUNCTIONS)} or "
            "an import path 'package.module:function'."
        )
    module_name, _, attribute = name_or_path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(
            f"reward function {name_or_path!r}: cannot import module {module_name!r} ({error}). "
            "Check the spelling and that the module is on PYTHONPATH."
        ) from error
    try:
        reward_fn = getattr(module, attribute)
    except AttributeError as error:
        raise ValueError(
            f"reward function {name_or_path!r}: module {module_name!r} has no attribute "
            f"{attribute!r}."
        ) from error
    if not callable(reward_fn):
        raise TypeError(
            f"reward function {name_or_path!r} is a {type(reward_fn).__name__}, not a function; "
            "it must be callable as fn(completion, answer, **meta) -> float."
        )
    return reward_fn


def score_batch(
    reward_fn: RewardFn,
    completions: Sequence[str],
    answers: Sequence[str],
    metas: Sequence[Mapping[str, Any]] | None = None,
) -> list[float]:
    """`[reward_fn(completion, answer, **meta), ...]` for each sample, checked against the contract.

    A reward function that raises is a bug to fix, not a wrong answer: the error is re-raised
    naming the sample, never silently scored 0. (A grading *timeout* is the grader's business:
    `math_reward` scores it 0 itself.)

    Args:
        reward_fn: a function following the reward contract (see `dcrl.rewards`).
        completions: N response texts.
        answers: N reference answers.
        metas: N metadata dicts passed as keyword arguments, or None for none.

    Returns:
        N floats in [0, 1].

    Raises:
        ValueError: mismatched lengths, or a returned value that is not a number in [0, 1].
        RuntimeError: `reward_fn` raised; the message names the sample index, and the original
            error is chained.
    """
    if metas is None:
        metas = [{}] * len(completions)
    if not len(completions) == len(answers) == len(metas):
        raise ValueError(
            f"score_batch: got {len(completions)} completions, {len(answers)} answers and "
            f"{len(metas)} metas; pass one of each per sample."
        )
    name = getattr(reward_fn, "__name__", repr(reward_fn))
    rewards = []
    for index, (completion, answer, meta) in enumerate(
        zip(completions, answers, metas, strict=True)
    ):
        try:
            reward = reward_fn(completion, answer, **meta)
        except Exception as error:
            raise RuntimeError(
                f"reward function {name} raised {type(error).__name__} on sample {index} "
                f"(answer {answer!r}, completion starting {completion[:80]!r}): {error}"
            ) from error
        if (
            not isinstance(reward, numbers.Real)  # float, int, bool, numpy scalars
            or not math.isfinite(reward)
            or not 0.0 <= reward <= 1.0
        ):
            raise ValueError(
                f"reward function {name} returned {reward!r} ({type(reward).__name__}) on sample "
                f"{index}; a reward function must return a float in [0, 1] (0.0 for a wrong "
                "answer)."
            )
        rewards.append(float(reward))
    return rewards
