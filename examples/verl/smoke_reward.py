"""verl custom reward function for examples/verl/gpu_smoke.sh: dcrl's arithmetic grader
(`reward.custom_reward_function.path=examples/verl/smoke_reward.py`)."""

from __future__ import annotations

from typing import Any

from dcrl.tasks import get_task

_TASK = get_task("arith")


def compute_score(
    data_source: str, solution_str: str, ground_truth: str, extra_info: Any = None, **kwargs: Any
) -> float:
    """1.0 when the response's answer is the integer `ground_truth`, else 0.0."""
    return float(_TASK.verify(solution_str, ground_truth))
