"""The exploration testbed's profile and the gates a checkpoint must pass before any RL.

`profile_testbed` samples a policy on the `explore` task (dcrl.tasks.explore) and measures what
the RL experiments rely on: accuracy per problem kind and temperature, the strategy shares at the
fork, pass@k against avg@k, the share of training prompts whose groups mix right and wrong
answers, whether checks cost accuracy, and where the entropy sits (the fork token against the
rest). `pretraining_gates` turns a profile into pass/fail rows; docs/testbed.md explains each gate.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

import torch

from dcrl.core.stats import pass_at_k
from dcrl.tasks.explore import KINDS, checks_of, strategy_of

GROUP = 8  # the RL recipes' group size, for the mixed-outcome share


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def _sample(model: Any, tokenizer: Any, prompts: list[str], n: int, temperature: float, seed: int):
    from dcrl.rollout import get_rollout_backend

    backend = get_rollout_backend("hf", model, tokenizer, batch_size=256)
    return backend.generate(prompts, n, temperature, 1.0, 64, seed=seed)


def _token_nll(model: Any, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, Lr) negative log-likelihood of each sampled token at T = 1, and the response mask."""
    from dcrl.train.forward import response_logprobs

    input_ids, attention = batch.sequences()
    with torch.no_grad():
        logprobs, _ = response_logprobs(model, input_ids, attention, batch.response_ids)
    mask = batch.response_mask.bool()
    return -logprobs.float() * mask, mask


def _fork_entropy(model: Any, tokenizer: Any, prompts: list[str]) -> float:
    """Mean entropy (nats) of the first response token's distribution at T = 1."""
    from dcrl.rollout.base import encode_prompts

    ids, mask = encode_prompts(tokenizer, prompts, False)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits[:, -1]
    logp = torch.log_softmax(logits.float(), -1)
    return float(-(logp.exp() * logp).sum(-1).mean())


def profile_testbed(
    model: Any,
    tokenizer: Any,
    task: Any,
    *,
    prompts: int = 256,
    samples: int = 16,
    temperatures: Sequence[float] = (1.0, 1.5, 2.0),
    seed: int = 0,
) -> dict[str, Any]:
    """Sample `samples` answers to `prompts` training and held-out problems per temperature.

    Returns {"train": {T: stats}, "test": {T: stats}, "fork_entropy": ..., "nll": ...} where
    stats holds the accuracy overall and per kind, pass@samples per kind, strategy shares of
    all and of the correct samples, accuracy per strategy, mean checks and length, the share of
    prompts whose first `GROUP` samples mix right and wrong, and on plain problems the accuracy
    of fast/decompose answers with and without checks. "nll" is the mean sampled-token NLL at
    T = 1 on the fork token and on the other tokens (training prompts).
    """
    was_training = model.training
    model.eval()
    result: dict[str, Any] = {"prompts": prompts, "samples": samples}
    try:
        for split in ("train", "test"):
            problems = task.problems(split, prompts)
            texts = [p.prompt for p in problems]
            result[split] = {}
            for temperature in temperatures:
                batch = _sample(model, tokenizer, texts, samples, temperature, seed)
                rows = []
                for text, g in zip(batch.response_texts, batch.group_index.tolist(), strict=True):
                    problem = problems[g]
                    rows.append(
                        {
                            "group": g,
                            "kind": problem.meta["kind"],
                            "score": task.verify(text, problem.answer),
                            "strategy": strategy_of(text),
                            "checks": checks_of(text),
                            "length": len(text),
                        }
                    )
                result[split][str(temperature)] = _stats(rows, problems, samples)
                if split == "train" and temperature == 1.0:
                    nll, mask = _token_nll(model, batch)
                    fork = nll[:, 0][mask[:, 0]]
                    rest = nll[:, 1:][mask[:, 1:]]
                    result["nll"] = {
                        "all": float(nll.sum() / mask.sum()),
                        "fork": float(fork.mean()),
                        "rest": float(rest.mean()),
                    }
            if split == "train":
                result["fork_entropy"] = _fork_entropy(model, tokenizer, texts)
    finally:
        model.train(was_training)
    return result


def _stats(rows: list[dict], problems: list[Any], samples: int) -> dict[str, Any]:
    by_group: dict[int, list[float]] = {}
    for row in rows:
        by_group.setdefault(row["group"], []).append(row["score"])
    correct = [r for r in rows if r["score"] > 0]
    strategies = Counter(r["strategy"] for r in rows)
    correct_strategies = Counter(r["strategy"] for r in correct)
    stats: dict[str, Any] = {
        "accuracy": _mean([r["score"] for r in rows]),
        "length": _mean([r["length"] for r in rows]),
        "checks": _mean([r["checks"] for r in rows if r["strategy"] in ("fast", "decompose")]),
        "strategy_share": {s: strategies[s] / len(rows) for s in sorted(strategies)},
        "correct_strategy_share": {
            s: correct_strategies[s] / max(1, len(correct)) for s in sorted(correct_strategies)
        },
        "strategy_accuracy": {
            s: _mean([r["score"] for r in rows if r["strategy"] == s]) for s in sorted(strategies)
        },
        "mixed_groups": _mean(
            [float(0 < sum(scores[:GROUP]) < len(scores[:GROUP])) for scores in by_group.values()]
        ),
    }
    for kind in KINDS:
        groups = [g for g, problem in enumerate(problems) if problem.meta["kind"] == kind]
        if not groups:
            continue
        kind_rows = [r for r in rows if r["kind"] == kind]
        stats[kind] = {
            "problems": len(groups),
            "accuracy": _mean([r["score"] for r in kind_rows]),
            f"pass@{samples}": _mean(
                [pass_at_k(samples, int(sum(by_group[g])), samples) for g in groups]
            ),
            "strategy_share": {
                s: sum(r["strategy"] == s for r in kind_rows) / len(kind_rows)
                for s in ("fast", "decompose", "guess")
            },
        }
    worked = [r for r in rows if r["kind"] == "plain" and r["strategy"] in ("fast", "decompose")]
    for name, chosen in (
        ("plain_with_checks", [r["score"] for r in worked if r["checks"] > 0]),
        ("plain_without_checks", [r["score"] for r in worked if r["checks"] == 0]),
    ):
        stats[name], stats[f"{name}_n"] = _mean(chosen), len(chosen)
    return stats


def pretraining_gates(profile: dict[str, Any]) -> list[dict[str, Any]]:
    """The pre-RL gates as rows {gate, goal, value, met} (docs/testbed.md gives the reasons)."""
    samples = profile["samples"]
    train_t1 = profile["train"]["1.0"]
    train_hot = profile["train"].get("1.5")
    test_t1 = profile["test"]["1.0"]
    rows = [
        {
            "gate": "accuracy at T = 1 (training prompts)",
            "goal": "0.45 .. 0.8",
            "value": train_t1["accuracy"],
            "met": 0.45 <= train_t1["accuracy"] <= 0.8,
        }
    ]
    if train_hot is not None:
        rows.append(
            {
                "gate": "accuracy at T = 1.5 (training prompts)",
                "goal": ">= 0.25",
                "value": train_hot["accuracy"],
                "met": train_hot["accuracy"] >= 0.25,
            }
        )
    shares = train_t1["correct_strategy_share"]
    rows.append(
        {
            "gate": "strategies with >= 15% of the correct samples at T = 1",
            "goal": ">= 2",
            "value": sum(share >= 0.15 for share in shares.values()),
            "met": sum(share >= 0.15 for share in shares.values()) >= 2,
        }
    )
    rows.append(
        {
            "gate": f"training prompts whose groups of {GROUP} mix right and wrong",
            "goal": ">= 0.5",
            "value": train_t1["mixed_groups"],
            "met": train_t1["mixed_groups"] >= 0.5,
        }
    )
    gaps = {
        kind: test_t1[kind][f"pass@{samples}"] - test_t1[kind]["accuracy"]
        for kind in KINDS
        if kind in test_t1
    }
    rows.append(
        {
            "gate": f"largest pass@{samples} - avg@{samples} over kinds (held out)",
            "goal": ">= 0.4",
            "value": max(gaps.values()),
            "met": max(gaps.values()) >= 0.4,
        }
    )
    with_checks, without = train_t1["plain_with_checks"], train_t1["plain_without_checks"]
    # Checks copy the result, so they should not lower accuracy; the two accuracies are
    # estimated from samples, so the gate allows two standard errors of their difference.
    noise = 2 * math.sqrt(
        with_checks * (1 - with_checks) / max(1, train_t1["plain_with_checks_n"])
        + without * (1 - without) / max(1, train_t1["plain_without_checks_n"])
    )
    difference = with_checks - without
    rows.append(
        {
            "gate": "plain problems: accuracy with checks minus without (T = 1)",
            "goal": f">= -{noise:.3f} (2 standard errors)",
            "value": difference,
            "met": not math.isnan(difference) and difference >= -noise,
        }
    )
    return rows
