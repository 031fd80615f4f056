"""Streaming aggregation of graded samples into evaluation metrics: avg@n, unbiased pass@k, lengths.

`EvalAccumulator` keeps, per problem, the number of samples and of correct ones, and per sample only
its length and correctness (a few bytes each), never the response texts, so n ≥ 1024 samples per
problem fit in memory. `metrics()` turns that into the metrics JSON of `dcrl eval`:

    avg@n     mean correctness over all problems and their n samples (the papers' Avg@32;
              docs/papers.md §6), also the unbiased estimate of pass@1.
    pass@k    unbiased pass@k = 1 − C(n − c, k)/C(n, k) per problem, averaged over problems
              (Chen et al. 2021, arXiv 2107.03374 §2.1), for k = 1, 2, 4, … and k = n.
    length    mean / median / p90 of response lengths in tokens (EOS included), overall and
              separately for correct and incorrect samples, and the truncated fraction.
    length–accuracy correlation: Pearson correlation of length and correctness within each
              problem's samples (averaged) and over all samples (ICR, arXiv 2605.07316 §3).

With `groups` (one label per problem, e.g. its `meta["kind"]`), the same avg@n, pass@k, reward,
length and correlation are also reported per label, under "by_group":
{"key": the meta key, "groups": {label: {"num_problems", f"avg@{n}", "pass@k", ...}}}.

A sample is correct when its reward is > 0.5, the threshold the trainer's pass@n uses.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Sequence
from typing import Any

import torch

from dcrl.core.stats import length_accuracy_correlation, length_summary, pass_at_k_curve

CORRECT_THRESHOLD = 0.5  # reward > 0.5 counts as correct (binary rewards are 0 or 1)


def default_pass_at_k_values(num_samples: int) -> list[int]:
    """k = 1, 2, 4, … ≤ n, and n itself: the pass@k curve `dcrl eval` reports."""
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    powers = [2**power for power in range(num_samples.bit_length())]  # 1, 2, 4, ... <= n
    return sorted({*powers, num_samples})


def finite_or_none(value: float) -> float | None:
    """NaN/inf become None, so the metrics stay valid JSON (json.dumps writes NaN otherwise)."""
    return value if math.isfinite(value) else None


class EvalAccumulator:
    """Counts of graded samples per problem, filled incrementally (see the module docstring).

    Args:
        problem_ids: the ids of the evaluated problems, in order; `add_samples` may be called
            several times for one problem (one call per chunk of its samples).
        groups: optional label of each problem (same order), e.g. its `meta["kind"]`: the
            metrics are then also reported per label ("by_group").
        group_key: the name the labels are reported under (the meta key they came from).
    """

    def __init__(
        self,
        problem_ids: Sequence[str],
        groups: Sequence[str] | None = None,
        group_key: str = "group",
    ) -> None:
        self.problem_index = {problem_id: index for index, problem_id in enumerate(problem_ids)}
        if len(self.problem_index) != len(problem_ids):
            raise ValueError("problem ids must be unique: two problems share an id")
        if groups is not None and len(groups) != len(problem_ids):
            raise ValueError(
                f"groups has {len(groups)} labels for {len(problem_ids)} problems: give one each"
            )
        self.groups = None if groups is None else [str(label) for label in groups]  # (P,)
        self.group_key = group_key
        self.problem_ids = list(problem_ids)
        self.num_samples = [0] * len(problem_ids)  # (P,)
        self.num_correct = [0] * len(problem_ids)  # (P,)
        self.reward_sum = 0.0
        self.problem_reward_sum = [0.0] * len(problem_ids)  # (P,) for the per-group reward_mean
        self.sample_problem = array("l")  # (N,) problem number of each sample
        self.sample_length = array("l")  # (N,) response length in tokens
        self.sample_correct = array("b")  # (N,) 1 if correct
        self.sample_truncated = array("b")  # (N,) 1 if cut at max_new_tokens
        self.greedy_correct: dict[str, bool] = {}
        self.greedy_length: dict[str, int] = {}

    def add_samples(
        self,
        problem_id: str,
        rewards: Sequence[float],
        lengths: Sequence[int],
        truncated: Sequence[bool],
    ) -> None:
        """Add graded samples of one problem: rewards, lengths and truncated flags, (S,) each."""
        assert len(rewards) == len(lengths) == len(truncated)
        index = self.problem_index[problem_id]
        correct = [reward > CORRECT_THRESHOLD for reward in rewards]
        self.num_samples[index] += len(rewards)
        self.num_correct[index] += sum(correct)
        self.reward_sum += float(sum(rewards))
        self.problem_reward_sum[index] += float(sum(rewards))
        self.sample_problem.extend([index] * len(rewards))
        self.sample_length.extend(int(length) for length in lengths)
        self.sample_correct.extend(int(c) for c in correct)
        self.sample_truncated.extend(int(bool(t)) for t in truncated)

    def add_greedy(self, problem_id: str, reward: float, length: int) -> None:
        """Add the greedy (temperature 0) answer of one problem."""
        assert problem_id in self.problem_index, problem_id
        self.greedy_correct[problem_id] = reward > CORRECT_THRESHOLD
        self.greedy_length[problem_id] = int(length)

    def per_problem(self) -> list[dict[str, Any]]:
        """One row per problem: id, num_samples, num_correct (and greedy_correct if any)."""
        rows = []
        for problem_id, index in self.problem_index.items():
            row: dict[str, Any] = {
                "id": problem_id,
                "num_samples": self.num_samples[index],
                "num_correct": self.num_correct[index],
            }
            if problem_id in self.greedy_correct:
                row["greedy_correct"] = self.greedy_correct[problem_id]
            rows.append(row)
        return rows

    def metrics(self, ks: Sequence[int] | None = None) -> dict[str, Any]:
        """The metrics dict (module docstring). Every problem must have the same number of samples n.

        Args:
            ks: the k values of pass@k; default `default_pass_at_k_values(n)`.

        Returns:
            {"num_problems", "num_samples", f"avg@{n}", "pass@k": {str(k): value}, "reward_mean",
             "length": {...}, "length_accuracy_correlation": {...}[, "greedy_accuracy",
             "greedy_length_mean"][, "by_group": {"key", "groups": {label: the same per label,
             from "num_problems" on, greedy_accuracy included}}]}; NaN values are None.
        """
        sampled = [count for count in self.num_samples if count > 0]
        if not sampled:
            raise ValueError("no graded samples to summarize: evaluate at least one problem")
        if len(set(sampled)) != 1 or len(sampled) != len(self.num_samples):
            raise ValueError(
                f"problems have different numbers of samples ({min(self.num_samples)} to "
                f"{max(self.num_samples)}); the evaluation is incomplete: resume it"
            )
        n = sampled[0]
        ks = list(ks or default_pass_at_k_values(n))
        lengths = torch.tensor(self.sample_length, dtype=torch.float64)  # (N,)
        correct = torch.tensor(self.sample_correct, dtype=torch.float64)  # (N,)
        problem = torch.tensor(self.sample_problem, dtype=torch.long)  # (N,)
        truncated = torch.tensor(self.sample_truncated, dtype=torch.float64)  # (N,)
        metrics: dict[str, Any] = {
            "num_problems": len(self.num_samples),
            "num_samples": n,
            **self._summary(
                n,
                ks,
                list(range(len(self.num_samples))),
                self.reward_sum,
                lengths,
                correct,
                problem,
                truncated,
            ),
        }
        if self.greedy_correct:
            if len(self.greedy_correct) != len(self.num_samples):
                raise ValueError(
                    f"greedy answers exist for {len(self.greedy_correct)} of "
                    f"{len(self.num_samples)} problems; the evaluation is incomplete: resume it"
                )
            metrics["greedy_accuracy"] = sum(self.greedy_correct.values()) / len(
                self.greedy_correct
            )
            metrics["greedy_length_mean"] = sum(self.greedy_length.values()) / len(
                self.greedy_length
            )
        if self.groups is not None:
            by_label: dict[str, dict[str, Any]] = {}
            for label in sorted(set(self.groups)):
                members = [index for index, own in enumerate(self.groups) if own == label]
                selected = torch.isin(problem, torch.tensor(members))  # (N,) bool
                by_label[label] = {
                    "num_problems": len(members),
                    **self._summary(
                        n,
                        ks,
                        members,
                        sum(self.problem_reward_sum[index] for index in members),
                        lengths[selected],
                        correct[selected],
                        problem[selected],
                        truncated[selected],
                    ),
                }
                if "greedy_accuracy" in metrics:
                    greedy = [self.greedy_correct[self.problem_ids[index]] for index in members]
                    by_label[label]["greedy_accuracy"] = sum(greedy) / len(greedy)
            metrics["by_group"] = {"key": self.group_key, "groups": by_label}
        return metrics

    def _summary(
        self,
        n: int,
        ks: list[int],
        members: list[int],
        reward_sum: float,
        lengths: torch.Tensor,
        correct: torch.Tensor,
        problem: torch.Tensor,
        truncated: torch.Tensor,
    ) -> dict[str, Any]:
        """avg@n, pass@k, reward_mean, length and correlation of the problems `members` (their
        samples: lengths, correct, problem, truncated, (N,) each)."""
        num_samples = torch.tensor([self.num_samples[index] for index in members])  # (P,)
        num_correct = torch.tensor([self.num_correct[index] for index in members])  # (P,)
        pass_at_k = pass_at_k_curve(num_samples, num_correct, ks)
        length = length_summary(lengths, correct)
        is_correct = correct.bool()
        for key, selected in (("correct_median", is_correct), ("incorrect_median", ~is_correct)):
            length[key] = length_summary(lengths[selected])["median"] if selected.any() else None
        length["truncated_frac"] = float(truncated.mean())
        correlation = length_accuracy_correlation(lengths, correct, problem)
        return {
            f"avg@{n}": float(correct.mean()),
            "pass@k": {str(k): value for k, value in pass_at_k.items()},
            "reward_mean": reward_sum / len(lengths),
            "length": {
                key: None if value is None else finite_or_none(value)
                for key, value in length.items()
            },
            "length_accuracy_correlation": {
                key: value if isinstance(value, int) else finite_or_none(value)
                for key, value in correlation.items()
            },
        }
