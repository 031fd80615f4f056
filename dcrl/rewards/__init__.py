r"""Answer extraction and grading.

The reward contract
-------------------
A reward function is a plain function

    fn(completion: str, answer: str, **meta) -> float   # in [0, 1]

`completion` is the model's response text, `answer` the problem's reference answer, and `meta` the
problem's metadata (`Problem.meta`: dataset columns, difficulty level, ...) passed as keyword
arguments, so a function takes the fields it needs and ignores the rest with `**meta`. It returns
1.0 for a correct response and 0.0 for a wrong one (values in between are partial credit). A
wrong, missing or unparseable answer is 0.0, not an exception; an exception means a bug and stops
training with the failing sample named (`score_batch`).

Built in: "math" (`math_reward`: last `\boxed{}`, math-verify, time-limited), "exact"
(`exact_match_reward`) and "numeric" (`numeric_reward`). Any other function is named by its
import path, "package.module:function" (`get_reward_fn`).

>>> def ends_with_answer(completion: str, answer: str, **meta) -> float:
...     return float(completion.strip().endswith(answer))
>>> score_batch(ends_with_answer, ["so 7", "so 8"], ["7", "7"], [{"level": 1}, {"level": 1}])
[1.0, 0.0]
>>> score_batch(get_reward_fn("math"), [r"\boxed{\frac{1}{2}}", "I don't know"], ["1/2", "1/2"])
[1.0, 0.0]
"""

from dcrl.rewards.extraction import extract_boxed, extract_marked_answer
from dcrl.rewards.matching import exact_match_reward, numeric_reward
from dcrl.rewards.math_grader import MathGrader, math_reward
from dcrl.rewards.registry import (
    REWARD_FUNCTIONS,
    RewardError,
    RewardFn,
    check_reward_fn,
    get_reward_fn,
    grade_rollout,
    score_batch,
)

__all__ = [
    "REWARD_FUNCTIONS",
    "MathGrader",
    "RewardError",
    "RewardFn",
    "exact_match_reward",
    "check_reward_fn",
    "extract_boxed",
    "extract_marked_answer",
    "get_reward_fn",
    "grade_rollout",
    "math_reward",
    "numeric_reward",
    "score_batch",
]
