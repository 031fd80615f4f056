"""compression: GRPO, LP-F, ICR and LP-F + ICR: held-out accuracy and length, training length,
and the per-group length-accuracy correlation over training.

Goals, per testbed:
- overthink: ICR >= 25% shorter held-out answers than GRPO, accuracy within 2 points.
- explore: the same, and LP-F's per-group length-accuracy correlation ends (mean over the
  second half of training) above ICR's.
Each is judged on the Welch 95% interval of a difference of means over seeds
(bench/experiments/stats.py): 0.75 × GRPO's length − ICR's above 0, ICR's accuracy − GRPO's above
−2 points, LP-F's correlation − ICR's above 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .common import (
    RunSpec,
    Testbed,
    add_seed_statistics,
    eval_metrics,
    fmt,
    held_out,
    mean,
    metrics_of,
    series,
    yes_no,
)
from .stats import beats, interval_text, ledger, rounded, seed_values, welch

NAME = "compression"
CLAIM_PREFIXES = ("compression",)


@dataclass(frozen=True)
class Settings:
    """lp_f_max_length, lp_f_buffer: LP-F (DAPO's soft overlong penalty) ramps from
    max_length − buffer to max_length tokens.
    shorter, accuracy_points: ICR's goal against GRPO.
    lp_f_correlation_goal: also require LP-F's correlation to end above ICR's."""

    lp_f_max_length: int
    lp_f_buffer: int
    shorter: float = 0.25
    accuracy_points: float = 0.02
    lp_f_correlation_goal: bool = False
    placeholders: tuple[str, ...] = ()


SETTINGS = {
    # A concise level-3 answer is about 20 tokens; the policy starts near 27.
    "overthink": Settings(lp_f_max_length=32, lp_f_buffer=16),
    "explore": Settings(
        # The penalty ramps from 32 to 48 tokens: a fast answer with a check is ~16, a
        # decomposition ~27 and ~37 with one check, so LP-F leans on decompositions too.
        lp_f_max_length=48,
        lp_f_buffer=16,
        lp_f_correlation_goal=True,
    ),
}


def specs(seeds: list[int], testbed: Testbed) -> list[RunSpec]:
    settings = SETTINGS[testbed.name]
    length, buffer = settings.lp_f_max_length, settings.lp_f_buffer
    lpf = ("algorithm.name=lp_f", f"algorithm.max_length={length}", f"algorithm.buffer={buffer}")
    runs = []
    for seed in seeds:
        runs += [
            RunSpec("grpo", "grpo", seed),
            RunSpec("lp_f", "grpo", seed, lpf),
            RunSpec("icr", "icr", seed, ("algorithm.lp_f=false",)),
            RunSpec(
                "lp_f+icr",
                "icr",
                seed,
                (
                    "algorithm.lp_f=true",
                    f"algorithm.lp_f_max_length={length}",
                    f"algorithm.lp_f_buffer={buffer}",
                ),
            ),
        ]
    return runs


def evaluated(specs: list[RunSpec], testbed: Testbed) -> list[RunSpec]:
    return specs


def uses_pretrained(testbed: Testbed) -> bool:
    return False


def summarize(specs: list[RunSpec], root: Path, testbed: Testbed, pretrained: dict | None) -> dict:
    settings_of = SETTINGS[testbed.name]
    settings: dict[str, dict] = {}
    for spec in specs:
        rows = metrics_of(spec.run_dir(root))
        evaluation = eval_metrics(spec, root)
        entry = settings.setdefault(spec.name, {"seeds": {}})
        corr = series(rows, "corr/length_acc_group")
        scores = held_out(evaluation, testbed)
        entry["seeds"][spec.seed] = {
            "eval_accuracy": scores["avg_at_n"],
            "eval_length": scores["length"],
            "train_length_last5": mean(series(rows, "length/mean")[-5:]),
            "train_length_first3": mean(series(rows, "length/mean")[:3]),
            "corr_group_first_half": mean(corr[: len(corr) // 2]),
            "corr_group_second_half": mean(corr[len(corr) // 2 :]),
        }
        for kind in testbed.kinds:
            entry["seeds"][spec.seed][f"eval_accuracy_{kind}"] = scores.get(f"avg_at_n_{kind}")
            entry["seeds"][spec.seed][f"eval_length_{kind}"] = scores.get(f"length_{kind}")
    for entry in settings.values():
        add_seed_statistics(entry, with_spread=False)
    if "icr" in settings and "grpo" in settings:
        grpo, icr = settings["grpo"], settings["icr"]
        shorter = 1 - icr["mean_eval_length"] / grpo["mean_eval_length"]
        gap = icr["mean_eval_accuracy"] - grpo["mean_eval_accuracy"]
        tests = differences(settings, settings_of)
        goal = {
            "icr_shorter_than_grpo": shorter,
            "icr_minus_grpo_accuracy": gap,
            "goal_met": beats(tests["shorter"])
            and beats(tests["accuracy"], -settings_of.accuracy_points),
        }
        if settings_of.lp_f_correlation_goal and "lp_f" in settings:
            lp_f_end = settings["lp_f"]["mean_corr_group_second_half"]
            icr_end = icr["mean_corr_group_second_half"]
            goal.update(
                {
                    "lp_f_corr_end": lp_f_end,
                    "icr_corr_end": icr_end,
                    "lp_f_corr_above_icr": beats(tests["correlation"]),
                }
            )
        settings["goal"] = goal
    return settings


def refresh(summary: dict, testbed: Testbed) -> None:
    """Recompute a stored summary's verdicts in place with today's rule (`--reclaim`)."""
    settings_of = SETTINGS[testbed.name]
    if "goal" not in summary:
        return
    tests, goal = differences(summary, settings_of), summary["goal"]
    goal["goal_met"] = beats(tests["shorter"]) and beats(
        tests["accuracy"], -settings_of.accuracy_points
    )
    if "lp_f_corr_above_icr" in goal:
        goal["lp_f_corr_above_icr"] = beats(tests["correlation"])


def differences(summary: dict, settings_of: Settings) -> dict[str, dict]:
    """The goals' differences over seeds (`welch`): "shorter", (1 − shorter) × GRPO's held-out
    length − ICR's; "accuracy", ICR's avg@n − GRPO's; "correlation", LP-F's second-half
    per-group length-accuracy correlation − ICR's (when LP-F ran)."""
    grpo, icr = summary["grpo"]["seeds"], summary["icr"]["seeds"]
    scale = 1.0 - settings_of.shorter
    tests = {
        "shorter": welch(
            [scale * v for v in seed_values(grpo, "eval_length")], seed_values(icr, "eval_length")
        ),
        "accuracy": welch(seed_values(icr, "eval_accuracy"), seed_values(grpo, "eval_accuracy")),
    }
    if "lp_f" in summary:
        key = "corr_group_second_half"
        tests["correlation"] = welch(
            seed_values(summary["lp_f"]["seeds"], key), seed_values(icr, key)
        )
    return tests


def markdown(summary: dict, testbed: Testbed) -> str:
    settings_of = SETTINGS[testbed.name]
    kinds = testbed.kinds
    lines = [
        "| setting | held-out avg@n | held-out length | train length first 3 → last 5 | "
        "corr (group) 1st half → 2nd half |"
        + "".join(f" {kind} avg@n | {kind} length |" for kind in kinds),
        "|---|---|---|---|---|" + "---|---|" * len(kinds),
    ]
    for name, entry in summary.items():
        if name == "goal":
            continue
        lines.append(
            f"| {name} | {fmt(entry['mean_eval_accuracy'])} | {fmt(entry['mean_eval_length'], 1)} | "
            f"{fmt(entry['mean_train_length_first3'], 1)} → {fmt(entry['mean_train_length_last5'], 1)} | "
            f"{fmt(entry['mean_corr_group_first_half'])} → {fmt(entry['mean_corr_group_second_half'])} |"
            + "".join(
                f" {fmt(entry[f'mean_eval_accuracy_{kind}'])} | "
                f"{fmt(entry[f'mean_eval_length_{kind}'], 1)} |"
                for kind in kinds
            )
        )
    if "goal" in summary:
        goal = summary["goal"]
        tests = differences(summary, settings_of)
        shorter_ok = beats(tests["shorter"])
        accurate = beats(tests["accuracy"], -settings_of.accuracy_points)
        lines.append("")
        lines.append(
            f"ICR vs GRPO: {goal['icr_shorter_than_grpo']:+.1%} shorter "
            f"({1 - settings_of.shorter:g} × GRPO's length − ICR's: "
            f"{interval_text(tests['shorter'], 1)}), accuracy "
            f"{interval_text(tests['accuracy'])}; goal (≥ {settings_of.shorter:.0%} shorter, "
            f"at most {settings_of.accuracy_points * 100:g} points less accurate, both by the "
            f"Welch 95% interval) met: {yes_no(shorter_ok and accurate)}"
        )
        if "correlation" in tests and "lp_f_corr_end" in goal:
            lines.append("")
            lines.append(
                f"Per-group length-accuracy correlation over the second half: LP-F "
                f"{fmt(goal['lp_f_corr_end'])}, ICR {fmt(goal['icr_corr_end'])}, difference "
                f"{interval_text(tests['correlation'])}; goal (LP-F's above ICR's) met: "
                f"{yes_no(beats(tests['correlation']))}"
            )
    return "\n".join(lines) + "\n"


def claims(summary: dict, testbed: Testbed) -> list[dict]:
    settings_of = SETTINGS[testbed.name]
    if "goal" not in summary:
        return []
    tests = differences(summary, settings_of)
    seeds = ledger(set(summary["grpo"]["seeds"]) | set(summary["icr"]["seeds"]))
    rows = [
        {
            "claim": "compression: ICR is shorter than GRPO at the same accuracy",
            "goal": f">= {settings_of.shorter:.0%} shorter held-out answers (Welch 95% interval of "
            f"{1 - settings_of.shorter:g} × GRPO's length − ICR's above 0), accuracy at most "
            f"{settings_of.accuracy_points * 100:g} points below GRPO's (interval of the "
            f"difference above −{settings_of.accuracy_points:g})",
            "value": {
                "shorter": round(summary["goal"]["icr_shorter_than_grpo"], 4),
                "length_margin": rounded(tests["shorter"]),
                "accuracy_difference": rounded(tests["accuracy"]),
            },
            "seeds": seeds,
            "met": beats(tests["shorter"])
            and beats(tests["accuracy"], -settings_of.accuracy_points),
        }
    ]
    if settings_of.lp_f_correlation_goal and "correlation" in tests:
        rows.append(
            {
                "claim": "compression: LP-F's per-group length-accuracy correlation ends above "
                "ICR's",
                "goal": "mean corr/length_acc_group over the second half of training: the Welch "
                "95% interval of LP-F's − ICR's above 0",
                "value": rounded(tests["correlation"]),
                "seeds": seeds,
                "met": beats(tests["correlation"]),
            }
        )
    return rows


def figures(
    specs: list[RunSpec], root: Path, summary: dict, out: Path, testbed: Testbed
) -> list[str]:
    return []  # the report's length, correlation and Pareto figures show it
