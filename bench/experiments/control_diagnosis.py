"""control_diagnosis: why dcrl's PI controller holds only targets near the start on `tiny-explore`
(issue 27, "Control over a range"); bench/README.md, "Control over a range", reads this.

Three measurements, each written to <out>/control_diagnosis.json and .md:

1. Where the entropy sits (no training; the pretrained policy, 64 training prompts × 16 samples
   at T = 1): the sampled-token NLL per kind of token (the strategy fork, the check-or-answer
   decisions `,`/`#`, the answer after `#`, guesses, the rest of the arithmetic) and of correct
   against wrong answers; the sampling noise of one step's measurement (the recipes' batch of
   32 prompts × 8 answers, resampled); and, per temperature T, the accuracy of π^T and the entropy per token
   of π^T's *correct* answers, H(π^T | correct) ≈ (E[−log π^T(y) | correct] + log P(correct)) /
   E[length | correct] — the distribution AEPO's and DCPO's regularizers pull toward (both
   reinforce only correct answers).
2. Which way each regularizer's first step moves the entropy (no training; 64 prompts × 8 at
   T = 1): the cosine between the descent direction of each token-advantage term and the gradient
   of the policy's full-vocabulary entropy at the sampled positions (+1: straight up, −1: straight
   down), and the entropy change of an Adam-like first step (−sign(gradient), per unit of learning
   rate). Terms: GRPO's advantages; c (REINFORCE on every correct answer); DCPO's target c·ρ at
   T; the centred c·(ρ − 1) (`algorithm.center_rho`).
3. How fast a step can move it (training runs, 40 steps, one seed by default): GRPO (the drift
   a controller works against), and AEPO and DCPO with the recipes' PI controller held at full
   authority — target 1.0 nats (never reached: T at its maximum 2.0 and the weight at its cap 10
   from step 2) and 0.0 (T at 0.8, the weight at 10). From their logs: the entropy at steps 1–3,
   8–12, 18–22 and over the second half, the largest 5-step mean, and the authority actually
   used (DCPO's α; AEPO's REINFORCE rows against the w·N_RF the controller asked for), and the
   sampling noise of one step's measurement at each run's end (its final policy).

    python bench/reproduce.py --experiment control_diagnosis --seeds 1 --workers 1
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from pathlib import Path

from .common import RunSpec, Testbed, entropy_series, fmt, mean, metrics_of, pyplot, second_half

NAME = "control_diagnosis"
CLAIM_PREFIXES = ("control diagnosis",)


@dataclass(frozen=True)
class Settings:
    """profile_prompts, profile_samples: the entropy profile's sample (item 1).
    direction_prompts, direction_samples: the first-step directions' batch (item 2).
    temperatures: the T of item 1; direction_temperatures: those of item 2.
    saturated: the targets that keep the controller at full authority (heat, cool)."""

    profile_prompts: int = 64
    profile_samples: int = 16
    direction_prompts: int = 64
    direction_samples: int = 8
    temperatures: tuple[float, ...] = (0.8, 1.0, 1.2, 1.5, 2.0, 3.0)
    direction_temperatures: tuple[float, ...] = (0.5, 0.8, 1.2, 2.0, 3.0)
    saturated: tuple[tuple[str, float], ...] = (("heat", 1.0), ("cool", 0.0))
    placeholders: tuple[str, ...] = ()


SETTINGS = {"explore": Settings()}


def specs(seeds: list[int], testbed: Testbed) -> list[RunSpec]:
    if testbed.name not in SETTINGS:
        raise ValueError(f"control_diagnosis runs on the explore testbed, not {testbed.name!r}")
    runs = [RunSpec("grpo", "grpo", s) for s in seeds]
    for algorithm in ("aepo", "dcpo"):
        for label, target in SETTINGS[testbed.name].saturated:
            runs += [
                RunSpec(
                    f"{algorithm}-{label}max",
                    algorithm,
                    s,
                    (f"algorithm.target_entropy={target}",),
                    target,
                    "pi",
                    {"direction": label},
                )
                for s in seeds
            ]
    return runs


def evaluated(specs: list[RunSpec], testbed: Testbed) -> list[RunSpec]:
    return []


def uses_pretrained(testbed: Testbed) -> bool:
    return False


# -- 1. where the entropy sits -----------------------------------------------------------------
TOKEN_KINDS = ("fork", "decision", "answer", "arithmetic", "end")


def token_kinds(text: str, length: int) -> list[str]:
    """The kind of each of a response's `length` tokens (one character each, then <eos>):
    fork (the strategy letter), decision (`,` or `#`: another check or the answer; a guess's
    `#`), answer (the digits after `#`, a guess's included), arithmetic (the rest), end (<eos>)."""
    kinds = []
    after_marker = False
    for position in range(length):
        if position >= len(text):
            kinds.append("end")
            continue
        char = text[position]
        if position == 0:
            kinds.append("fork")
        elif char in ",#":
            kinds.append("decision")
            after_marker = after_marker or char == "#"
        elif after_marker:
            kinds.append("answer")
        else:
            kinds.append("arithmetic")
    return kinds


def _policy_and_task(model_name: str = "tiny-explore"):
    import torch

    torch.set_num_threads(1)
    from dcrl.models import load_policy
    from dcrl.tasks import get_task

    model, tokenizer = load_policy(model_name)
    model.train(False)
    return model, tokenizer, get_task("explore", seed=0, trap_share=0.1)


def _sample(model, tokenizer, task, prompts: int, samples: int, temperature: float, seed: int):
    import torch

    from dcrl.rollout import get_rollout_backend

    problems = task.problems("train", prompts)
    backend = get_rollout_backend("hf", model, tokenizer, batch_size=512)
    batch = backend.generate([p.prompt for p in problems], samples, temperature, 1.0, 96, seed=seed)
    correct = torch.tensor(
        [
            float(task.verify(text, problems[g].answer))
            for text, g in zip(batch.response_texts, batch.group_index.tolist(), strict=True)
        ]
    )
    return batch, correct


def entropy_profile(settings: Settings) -> dict:
    """Item 1 of the module docstring."""
    import torch

    from dcrl.train.forward import response_logprobs

    model, tokenizer, task = _policy_and_task()
    result: dict = {"prompts": settings.profile_prompts, "samples": settings.profile_samples}
    by_temperature = {}
    for temperature in settings.temperatures:
        batch, correct = _sample(
            model,
            tokenizer,
            task,
            settings.profile_prompts,
            settings.profile_samples,
            temperature,
            seed=0,
        )
        ids, attention = batch.sequences()
        mask = batch.response_mask.float()
        lengths = mask.sum(1)
        with torch.no_grad():
            logprobs_t, _ = response_logprobs(
                model, ids, attention, batch.response_ids, temperature=temperature
            )
            logprobs_1, entropy_1 = response_logprobs(
                model, ids, attention, batch.response_ids, with_entropy=True
            )
        nll_t = -(logprobs_t * mask).sum(1)  # (N,) −log π^T(y)
        accuracy = float(correct.mean())
        record = {"accuracy": accuracy, "length": float(lengths.mean())}
        if correct.sum() > 0:
            per_correct = (nll_t * correct).sum() / correct.sum()
            length_correct = (lengths * correct).sum() / correct.sum()
            record["entropy_of_correct_target"] = float(
                (per_correct + math.log(accuracy)) / length_correct
            )
        by_temperature[str(temperature)] = record
        if temperature != 1.0:
            continue
        nll = -logprobs_1 * mask  # (N, L)
        total = float(nll.sum())
        tokens = float(mask.sum())
        result["sampled_nll"] = total / tokens
        result["full_entropy"] = float((entropy_1 * mask).sum()) / tokens
        kinds: dict[str, dict] = {}
        sums = {kind: [0.0, 0] for kind in TOKEN_KINDS}
        for row, text in enumerate(batch.response_texts):
            length = int(lengths[row])
            for position, kind in enumerate(token_kinds(text, length)):
                sums[kind][0] += float(nll[row, position])
                sums[kind][1] += 1
        for kind, (nll_sum, count) in sums.items():
            kinds[kind] = {
                "token_share": count / tokens,
                "mean_nll": nll_sum / count if count else float("nan"),
                "nll_share": nll_sum / total,
            }
        result["by_kind"] = kinds
        wrong = 1.0 - correct
        per_row = nll.sum(1)
        result["correct"] = {
            "answer_share": accuracy,
            "token_share": float((lengths * correct).sum()) / tokens,
            "nll_per_token": float((per_row * correct).sum() / (lengths * correct).sum()),
            "nll_share": float((per_row * correct).sum()) / total,
        }
        result["wrong"] = {
            "answer_share": 1.0 - accuracy,
            "token_share": float((lengths * wrong).sum()) / tokens,
            "nll_per_token": float((per_row * wrong).sum() / (lengths * wrong).sum()),
            "nll_share": float((per_row * wrong).sum()) / total,
        }
        result["batch_noise"] = batch_noise(
            per_row=nll.sum(1).tolist(),
            lengths=lengths.tolist(),
            groups=batch.group_index.tolist(),
        )
        fork = kinds["fork"]
        # The per-token entropy if the fork alone rose to its largest value (ln 3: the three
        # strategies equally likely), every other token as it is.
        result["fork_at_ln3"] = result["sampled_nll"] + fork["token_share"] * (
            math.log(3) - fork["mean_nll"]
        )
    result["by_temperature"] = by_temperature
    return result


def batch_noise(
    per_row: list[float],
    lengths: list[float],
    groups: list[int],
    prompts: int = 32,
    samples: int = 8,
    draws: int = 2000,
) -> dict:
    """The sampling noise of one step's entropy measurement: the standard deviation of the
    per-token NLL of recipe-sized batches (`prompts` prompts × `samples` answers, the explore
    recipes' 32 × 8) drawn from the profile's answers (prompts with replacement, answers without),
    in nats and relative to the profile's mean."""
    import random

    rng = random.Random(0)
    by_group: dict[int, list[int]] = {}
    for row, group in enumerate(groups):
        by_group.setdefault(group, []).append(row)
    keys = sorted(by_group)
    estimates = []
    for _ in range(draws):
        rows = [
            row
            for group in rng.choices(keys, k=prompts)
            for row in rng.sample(by_group[group], min(samples, len(by_group[group])))
        ]
        estimates.append(sum(per_row[r] for r in rows) / sum(lengths[r] for r in rows))
    level = sum(per_row) / sum(lengths)
    sd = statistics.stdev(estimates)
    return {"prompts": prompts, "samples": samples, "sd": sd, "relative_sd": sd / level}


def top_share(per_row: list[float], fraction: float = 0.05) -> float:
    """The share of the total carried by the largest `fraction` of the rows (at least one row):
    how much of a batch's entropy sits in a few answers. 0.05 of rows that are all equal carry
    0.05 of it; a batch whose entropy is all in one answer gives 1."""
    total = sum(per_row)
    if not per_row or total <= 0.0:
        return 0.0
    top = max(1, round(fraction * len(per_row)))
    return sum(sorted(per_row, reverse=True)[:top]) / total


def end_noise(
    policy: str, prompts: int, samples: int, batch_prompts: int = 32, batch_samples: int = 8
) -> dict:
    """`batch_noise` of a trained policy (a run's `policy` folder) at T = 1, with its level: of
    the sampled-token NLL, and (keys with `full_`) of the full-vocabulary entropy, for steps of
    `batch_prompts` prompts × `batch_samples` answers (the run's own batch); `top_share`: the
    share of the entropy (summed over each answer) that the top 5% of the answers carry."""
    import torch

    from dcrl.train.forward import response_logprobs

    model, tokenizer, task = _policy_and_task(policy)
    batch, _ = _sample(model, tokenizer, task, prompts, samples, 1.0, seed=0)
    ids, attention = batch.sequences()
    mask = batch.response_mask.float()
    with torch.no_grad():
        logprobs, entropy = response_logprobs(
            model, ids, attention, batch.response_ids, with_entropy=True
        )
    lengths = mask.sum(1).tolist()
    groups = batch.group_index.tolist()
    record = {}
    for prefix, per_token in (("", -logprobs), ("full_", entropy)):
        per_row = (per_token * mask).sum(1)
        noise = batch_noise(per_row.tolist(), lengths, groups, batch_prompts, batch_samples)
        record[f"{prefix}level"] = float(per_row.sum() / mask.sum())
        record.update({f"{prefix}{key}": value for key, value in noise.items()})
        record[f"{prefix}top_share"] = top_share(per_row.tolist())
    return record


# -- 2. which way a first step moves it --------------------------------------------------------
def first_step_directions(settings: Settings) -> dict:
    """Item 2 of the module docstring."""
    import torch

    from dcrl.core.advantages import grpo_advantages
    from dcrl.train.forward import response_logprobs

    torch.manual_seed(0)
    model, tokenizer, task = _policy_and_task()
    batch, correct = _sample(
        model,
        tokenizer,
        task,
        settings.direction_prompts,
        settings.direction_samples,
        1.0,
        seed=1,
    )
    ids, attention = batch.sequences()
    mask = batch.response_mask.float()
    params = [p for p in model.parameters() if p.requires_grad]

    def flat(grads) -> torch.Tensor:
        return torch.cat([g.reshape(-1) for g in grads])

    _, entropy = response_logprobs(
        model, ids, attention, batch.response_ids, with_entropy=True, entropy_grad=True
    )
    entropy_gradient = flat(torch.autograd.grad((entropy * mask).sum() / mask.sum(), params))

    def direction(token_advantages: torch.Tensor) -> dict:
        logprobs, _ = response_logprobs(model, ids, attention, batch.response_ids)
        loss = -(token_advantages * logprobs * mask).sum() / mask.sum()
        step = -flat(torch.autograd.grad(loss, params))  # the descent direction
        cosine = float(entropy_gradient @ step / (entropy_gradient.norm() * step.norm()))
        return {"cosine": cosine, "adam_first_step": float(entropy_gradient @ torch.sign(step))}

    with torch.no_grad():
        logprobs_1, _ = response_logprobs(model, ids, attention, batch.response_ids)
    advantages = grpo_advantages(correct, batch.group_index)
    result = {
        "prompts": settings.direction_prompts,
        "samples": settings.direction_samples,
        "grpo": direction(advantages[:, None] * mask),
        "correct": direction(correct[:, None] * mask),
        "by_temperature": {},
    }
    for temperature in settings.direction_temperatures:
        with torch.no_grad():
            logprobs_t, _ = response_logprobs(
                model, ids, attention, batch.response_ids, temperature=temperature
            )
        rho = (logprobs_t - logprobs_1).exp() * mask
        result["by_temperature"][str(temperature)] = {
            "dcpo": direction(correct[:, None] * rho),
            "dcpo_centered": direction(correct[:, None] * (rho - mask)),
        }
    return result


# -- 3. how fast a step can move it ------------------------------------------------------------
def _window(values: list[float], first: int, last: int) -> float:
    """Mean of steps first..last (1-based, inclusive)."""
    return mean(values[first - 1 : last])


def run_record(rows: list[dict]) -> dict:
    values = entropy_series(rows)
    five_step = [mean(values[i : i + 5]) for i in range(max(1, len(values) - 4))]
    record = {
        "steps": len(values),
        "entropy_1_3": _window(values, 1, 3),
        "entropy_8_12": _window(values, 8, 12),
        "entropy_18_22": _window(values, 18, 22),
        "entropy_second_half": mean(second_half(values)),
        "entropy_max_5_step_mean": max(five_step),
        "entropy_min_5_step_mean": min(five_step),
        "step_to_step_sd": statistics.pstdev(
            [b - a for a, b in zip(values, values[1:], strict=False)]
        )
        / math.sqrt(2)
        if len(values) > 2
        else float("nan"),
        "accuracy_last_5": mean([r["reward/accuracy"] for r in rows][-5:]),
        "length_last_5": mean([r["length/mean"] for r in rows][-5:]),
        "truncated_max": max(r.get("length/truncated_frac", 0.0) for r in rows),
    }
    later = rows[1:]  # step 1 is neutral (initial_entropy: null)
    if later and "control/temperature" in later[0]:
        record["temperature_mean"] = mean([r["control/temperature"] for r in later])
        record["weight_mean"] = mean([r.get("control/weight") for r in later])
    if later and "control/alpha" in later[0]:
        record["alpha_mean"] = mean([r["control/alpha"] for r in later])
    if later and "control/num_reinforce" in later[0]:
        record["reinforce_rows_mean"] = mean([r["control/num_reinforce"] for r in later])
        record["positives_mean"] = mean([r["aepo/num_positives"] for r in later])
    return record


def summarize(specs: list[RunSpec], root: Path, testbed: Testbed, pretrained: dict | None) -> dict:
    settings = SETTINGS[testbed.name]
    runs: dict[str, dict] = {}
    for spec in specs:
        entry = runs.setdefault(spec.name, {"target": spec.target, "seeds": {}})
        entry["seeds"][spec.seed] = run_record(metrics_of(spec.run_dir(root)))
        if spec.seed == min(s.seed for s in specs):  # the measurement noise at the run's end
            entry["end_noise"] = end_noise(
                str(spec.run_dir(root) / "policy"),
                settings.profile_prompts,
                settings.profile_samples,
            )
    for entry in runs.values():
        seeds = list(entry["seeds"].values())
        entry["mean"] = {key: mean([s.get(key) for s in seeds]) for key in seeds[0]}
    return {
        "profile": entropy_profile(settings),
        "directions": first_step_directions(settings),
        "runs": runs,
    }


def markdown(summary: dict, testbed: Testbed) -> str:
    profile, directions, runs = summary["profile"], summary["directions"], summary["runs"]
    lines = [
        f"**1. Where the entropy sits** (tiny-explore before RL, {profile['prompts']} training "
        f"prompts × {profile['samples']} samples at T = 1): sampled-token NLL "
        f"{profile['sampled_nll']:.4f} nats/token (full-vocabulary entropy "
        f"{profile['full_entropy']:.4f}).",
        "",
        "| token | share of tokens | mean NLL (nats) | share of the NLL |",
        "|---|---|---|---|",
    ]
    for kind, row in profile["by_kind"].items():
        lines.append(
            f"| {kind} | {row['token_share']:.1%} | {fmt(row['mean_nll'])} | "
            f"{row['nll_share']:.1%} |"
        )
    lines += [
        "",
        "| answers | share of answers | share of tokens | NLL per token | share of the NLL |",
    ]
    lines.append("|---|---|---|---|---|")
    for label in ("correct", "wrong"):
        row = profile[label]
        lines.append(
            f"| {label} | {row['answer_share']:.1%} | {row['token_share']:.1%} | "
            f"{row['nll_per_token']:.4f} | {row['nll_share']:.1%} |"
        )
    noise = profile["batch_noise"]
    lines += [
        "",
        f"One step's measurement ({noise['prompts']} prompts × {noise['samples']} answers, the "
        f"recipes' batch) has a sampling SD of {noise['sd']:.4f} nats "
        f"({noise['relative_sd']:.1%} of the level).",
        "",
        f"With the fork at its largest entropy (ln 3) and every other token as it is: "
        f"{profile['fork_at_ln3']:.4f} nats/token.",
        "",
        "| T | accuracy of π^T | entropy per token of π^T's correct answers |",
        "|---|---|---|",
    ]
    for temperature, row in profile["by_temperature"].items():
        lines.append(
            f"| {temperature} | {row['accuracy']:.3f} | "
            f"{fmt(row.get('entropy_of_correct_target'), 4)} |"
        )
    lines += [
        "",
        f"**2. Which way a first step moves the entropy** ({directions['prompts']} prompts × "
        f"{directions['samples']} at T = 1): cosine between each term's descent direction and "
        "the gradient of the full-vocabulary entropy (> 0 heats); in brackets the entropy change "
        "of an Adam-like first step (−sign of the gradient), per unit of learning rate.",
        "",
        "| term | T | cosine | Adam-like step |",
        "|---|---|---|---|",
        f"| GRPO advantages | – | {directions['grpo']['cosine']:+.3f} | "
        f"{directions['grpo']['adam_first_step']:+.1f} |",
        f"| c (REINFORCE on every correct answer) | – | {directions['correct']['cosine']:+.3f} | "
        f"{directions['correct']['adam_first_step']:+.1f} |",
    ]
    for temperature, row in directions["by_temperature"].items():
        lines.append(
            f"| DCPO c·ρ | {temperature} | {row['dcpo']['cosine']:+.3f} | "
            f"{row['dcpo']['adam_first_step']:+.1f} |"
        )
    for temperature, row in directions["by_temperature"].items():
        lines.append(
            f"| centred c·(ρ − 1) | {temperature} | {row['dcpo_centered']['cosine']:+.3f} | "
            f"{row['dcpo_centered']['adam_first_step']:+.1f} |"
        )
    lines += [
        "",
        "**3. How fast a step can move it** (40-step runs; the recipes' PI controller at full "
        "authority: heat = target 1.0, T = 2.0 and weight 10; cool = target 0.0, T = 0.8 and "
        "weight 10; means of the seeds run):",
        "",
        "| run | steps 1–3 | 8–12 | 18–22 | second half | largest 5-step mean | smallest | "
        "noise SD | mean T | mean weight | DCPO α | AEPO rows / positives | accuracy (last 5) "
        "| length (last 5) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, entry in runs.items():
        m = entry["mean"]
        rows_cell = (
            f"{m['reinforce_rows_mean']:.0f} / {m['positives_mean']:.0f}"
            if "reinforce_rows_mean" in m
            else ""
        )
        lines.append(
            f"| {name} (seeds {', '.join(map(str, entry['seeds']))}) | {fmt(m['entropy_1_3'])} | "
            f"{fmt(m['entropy_8_12'])} | {fmt(m['entropy_18_22'])} | "
            f"{fmt(m['entropy_second_half'])} | {fmt(m['entropy_max_5_step_mean'])} | "
            f"{fmt(m['entropy_min_5_step_mean'])} | {fmt(m['step_to_step_sd'], 4)} | "
            f"{fmt(m.get('temperature_mean'), 2)} | {fmt(m.get('weight_mean'), 1)} | "
            f"{fmt(m.get('alpha_mean'), 2)} | {rows_cell} | {fmt(m['accuracy_last_5'])} | "
            f"{fmt(m['length_last_5'], 1)} |"
        )
    lines += [
        "",
        "noise SD: the step-to-step standard deviation of the measured entropy divided by √2 "
        "(the sampling noise of one step's estimate, if the level moves slowly).",
        "",
        "The sampling noise of one step's measurement (the recipes' 32 prompts × 8 answers) at "
        "the end of each run (its final policy, the first seed; "
        f"{profile['prompts']} prompts × {profile['samples']} answers resampled):",
        "",
        "| policy | entropy (nats/token) | SD of one step's measurement | relative |",
        "|---|---|---|---|",
        f"| tiny-explore (start) | {profile['sampled_nll']:.4f} | "
        f"{profile['batch_noise']['sd']:.4f} | {profile['batch_noise']['relative_sd']:.1%} |",
    ]
    for name, entry in runs.items():
        if "end_noise" in entry:
            noise = entry["end_noise"]
            lines.append(
                f"| {name} (end) | {noise['level']:.4f} | {noise['sd']:.4f} | "
                f"{noise['relative_sd']:.1%} |"
            )
    return "\n".join(lines) + "\n"


def claims(summary: dict, testbed: Testbed) -> list[dict]:
    return []  # a diagnosis, not a claim


def figures(
    specs: list[RunSpec], root: Path, summary: dict, out: Path, testbed: Testbed
) -> list[str]:
    """The entropy per step of each diagnostic run (one line per seed)."""
    plt = pyplot()
    fig, axis = plt.subplots(figsize=(7, 4))
    colors = {
        "grpo": "gray",
        "aepo-heatmax": "tab:red",
        "dcpo-heatmax": "tab:orange",
        "aepo-coolmax": "tab:blue",
        "dcpo-coolmax": "tab:cyan",
    }
    seen = set()
    for spec in specs:
        values = entropy_series(metrics_of(spec.run_dir(root)))
        label = None if spec.name in seen else spec.name
        seen.add(spec.name)
        axis.plot(range(1, len(values) + 1), values, color=colors.get(spec.name), label=label)
    start = testbed.start_entropy
    for factor in (0.6, 1.4):
        axis.axhline(factor * start, color="black", linestyle=":", linewidth=1)
    axis.set_xlabel("step")
    axis.set_ylabel("policy entropy (on-policy NLL, nats/token)")
    axis.set_title(
        "full authority: how far 40 steps move the entropy (dotted: 0.6× and 1.4× start)"
    )
    axis.legend(fontsize=7)
    fig.tight_layout()
    name = "control_diagnosis_runs.png"
    fig.savefig(out / name, dpi=110)
    plt.close(fig)
    return [name]
