"""Finding a reward function by name or import path, and scoring a batch with it."""

from __future__ import annotations

import copy
import importlib
import inspect
import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from dcrl.errors import UserError

if TYPE_CHECKING:
    import torch
from dcrl.rewards.matching import exact_match_reward, numeric_reward
from dcrl.rewards.math_grader import math_reward

RewardFn = Callable[..., float]

CONTRACT = "fn(completion, answer, **meta) -> float in [0, 1]"


class RewardError(UserError, ValueError):
    """A reward function that cannot be found, called, or that broke the contract (`CONTRACT`)."""


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
        RewardError: unknown name, the module or attribute cannot be imported, or the imported
            object is not callable.
    """
    if callable(name_or_path):
        return name_or_path
    if name_or_path in REWARD_FUNCTIONS:
        return REWARD_FUNCTIONS[name_or_path]
    if ":" not in name_or_path:
        raise RewardError(
            f"unknown reward function {name_or_path!r}: use one of {sorted(REWARD_FUNCTIONS)} or "
            "an import path 'package.module:function'."
        )
    module_name, _, attribute = name_or_path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as error:  # ImportError, or anything the module raises while importing
        raise RewardError(
            f"reward function {name_or_path!r}: cannot import module {module_name!r} ({error}). "
            "Check the spelling and that the module is on PYTHONPATH."
        ) from error
    try:
        reward_fn = getattr(module, attribute)
    except AttributeError as error:
        raise RewardError(
            f"reward function {name_or_path!r}: module {module_name!r} has no attribute "
            f"{attribute!r}."
        ) from error
    if not callable(reward_fn):
        raise RewardError(
            f"reward function {name_or_path!r} is a {type(reward_fn).__name__}, not a function; "
            f"point it at a function with the reward contract {CONTRACT}."
        )
    return reward_fn


def check_reward_fn(reward_fn: RewardFn, meta: Mapping[str, Any]) -> None:
    """Raise a RewardError if `reward_fn` cannot be called as `fn(completion, answer, **meta)`
    with this data's metadata keys — checked on the signature, without calling it.

    Args:
        reward_fn: the reward function.
        meta: one problem's metadata (the keyword arguments every call will pass).
    """
    if not callable(reward_fn):
        raise RewardError(
            f"reward function {reward_fn!r} is a {type(reward_fn).__name__}, not a function; "
            f"the reward contract is {CONTRACT}."
        )
    try:
        signature = inspect.signature(reward_fn)
    except (TypeError, ValueError):  # a builtin without a signature: nothing to check
        return
    try:
        signature.bind("completion", "answer", **meta)
    except TypeError as error:
        name = getattr(reward_fn, "__qualname__", repr(reward_fn))
        keys = ", ".join(meta) or "none"
        raise RewardError(
            f"reward function {name}{signature} cannot be called as fn(completion, answer, "
            f"**meta) with this data's meta keys ({keys}): {error}. The reward contract is "
            f"{CONTRACT}; add **meta to take the keys it does not use."
        ) from None


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
        ValueError: mismatched lengths.
        RewardError: `reward_fn` raised (the message names the sample index, and the original
            error is chained), or returned something other than a number in [0, 1].
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
            # Its own copy: a function that changes the metadata cannot change what later
            # samples of the group see.
            reward = reward_fn(completion, answer, **copy.deepcopy(dict(meta)))
        except RewardError:  # a BoundedReward that timed out too often: already explained
            raise
        except SystemExit as error:  # sys.exit() in a reward must not end dcrl silently
            raise RewardError(
                f"reward function {name} called sys.exit({error.code!r}) on sample {index} "
                f"(answer {answer!r}): a reward must return a score, not end the program. Fix "
                f"the function: the reward contract is {CONTRACT}."
            ) from None
        except Exception as error:
            raise RewardError(
                f"reward function {name} raised {type(error).__name__} on sample {index} "
                f"(answer {answer!r}, completion starting {completion[:80]!r}): {error}. Fix "
                f"the function: the reward contract is {CONTRACT}, returning 0.0 for a wrong "
                "or unparseable answer."
            ) from error
        if (
            not isinstance(reward, numbers.Real)  # float, int, bool, numpy scalars
            or not math.isfinite(reward)
            or not 0.0 <= reward <= 1.0
        ):
            raise RewardError(
                f"reward function {name} returned {reward!r} ({type(reward).__name__}) on sample "
                f"{index} (answer {answer!r}); fix the function: the reward contract is "
                f"{CONTRACT} (0.0 for a wrong answer)."
            )
        rewards.append(float(reward))
    return rewards


def grade_rollout(reward_fn: RewardFn, batch: Any, problems: Sequence[Any]) -> torch.Tensor:
    """The task's scores of a rollout's responses (`score_batch` of its texts against the
    answers and metadata of the problems its groups came from): float32 (N,).

    Args:
        batch: a RolloutBatch (`response_texts`, `group_index` into `problems`).
        problems: the prompts' problems (`answer`, `meta`), in the rollout's prompt order.
    """
    import torch  # only here: grading itself needs no torch

    answers = [problems[int(g)].answer for g in batch.group_index]
    metas = [problems[int(g)].meta for g in batch.group_index]
    values = score_batch(reward_fn, batch.response_texts, answers, metas)
    return torch.tensor(values, dtype=torch.float32)
