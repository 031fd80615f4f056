"""combined: DCPO (dcrl's controller) and ICR (its recipe) alone, and composed in one run
(dcrl/recipes/<prefix>-dcpo-icr.yaml, the same settings of each): entropy, held-out accuracy and
length.

Goals, per testbed:
- overthink: DCPO + ICR's second-half mean entropy within ±5% of its target, held-out answers
  shorter than DCPO alone, accuracy within 2 points of DCPO alone and of ICR alone.
- explore: within the control goal (second-half RMS relative error <= 10%), shorter than DCPO
  alone, accuracy at most 2 points below the better of the two alone.

The composed recipe sets its own DCPO target: `Settings.target` must be the same (the summary
checks it against each composed run's saved config.yaml).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from .common import (
    RunSpec,
    Testbed,
    add_seed_statistics,
    controlled,
    entropy_series,
    eval_metrics,
    fmt,
    held_out,
    mean,
    metrics_of,
    rms_cell,
    rms_relative_error,
    second_half,
    series,
)
from .stats import beats, interval_text, ledger, rounded, seed_values, welch

NAME = "combined"
CLAIM_PREFIXES = ("combined",)
COMPOSED = "dcpo+icr"
ICR = "icr-recipe"


@dataclass(frozen=True)
class Settings:
    """target: DCPO's target alone and in the composed recipe (the testbed's units).
    goal: "mean" (|second-half mean relative error| <= tolerance, accuracy within
        accuracy_points of each alone) or "rms" (second-half RMS relative error <=
        rms_tolerance, accuracy at most accuracy_points below the better of the two)."""

    target: float
    goal: str = "mean"
    tolerance: float = 0.05
    rms_tolerance: float = 0.10
    accuracy_points: float = 0.02
    placeholders: tuple[str, ...] = ()


SETTINGS = {
    "overthink": Settings(target=0.15),
    "explore": Settings(
        target=0.10,  # dcrl/recipes/explore-dcpo-icr.yaml's target_entropy
        goal="rms",
    ),
}


def specs(seeds: list[int], testbed: Testbed) -> list[RunSpec]:
    target = SETTINGS[testbed.name].target
    runs = []
    for seed in seeds:
        runs += [
            controlled(testbed, "dcpo", target, "pi", seed),
            RunSpec(ICR, "icr", seed),
            RunSpec(COMPOSED, "dcpo-icr", seed, (), testbed.target_value(target), "pi"),
        ]
    return runs


def evaluated(specs: list[RunSpec], testbed: Testbed) -> list[RunSpec]:
    return specs


def uses_pretrained(testbed: Testbed) -> bool:
    return False


def recipe_target(run_dir: Path) -> float | None:
    """The DCPO target a composed run was trained with (its config.yaml), None if unknown."""
    path = run_dir / "config.yaml"
    if not path.is_file():
        return None
    algorithm = yaml.safe_load(path.read_text()).get("algorithm", {})
    for target in algorithm.get("targets") or []:
        if target.get("name") == "dcpo":
            return target.get("target_entropy")
    return None


def summarize(specs: list[RunSpec], root: Path, testbed: Testbed, pretrained: dict | None) -> dict:
    """Entropy, held-out accuracy and length of DCPO, ICR and DCPO + ICR (the goal: entropy held
    at its target while the length falls, accuracy near each alone)."""
    settings_of = SETTINGS[testbed.name]
    settings: dict[str, dict] = {}
    for spec in specs:
        run_dir = spec.run_dir(root)
        if spec.name == COMPOSED:
            trained = recipe_target(run_dir)
            if trained is not None and abs(trained - spec.target) > 1e-9:
                raise ValueError(
                    f"{run_dir} held DCPO's target {trained} (its recipe), the bench expects "
                    f"{spec.target}: set the combined experiment's target "
                    "(bench/experiments/combined.py) to the recipe's"
                )
        rows = metrics_of(run_dir)
        scores = held_out(eval_metrics(spec, root), testbed)
        entropy = entropy_series(rows)
        record = {
            "second_half_entropy": mean(second_half(entropy)),
            "eval_accuracy": scores["avg_at_n"],
            "eval_length": scores["length"],
            "train_length_first3": mean(series(rows, "length/mean")[:3]),
            "train_length_last5": mean(series(rows, "length/mean")[-5:]),
        }
        if spec.target is not None:
            record["relative_error"] = record["second_half_entropy"] / spec.target - 1
            if settings_of.goal == "rms":
                record["rms_relative_error"] = rms_relative_error(entropy, spec.target)
        for kind in testbed.kinds:
            record[f"eval_accuracy_{kind}"] = scores.get(f"avg_at_n_{kind}")
        entry = settings.setdefault(spec.name, {"target": spec.target, "seeds": {}})
        entry["seeds"][spec.seed] = record
    for entry in settings.values():
        add_seed_statistics(entry)
    both = settings.get(COMPOSED)
    dcpo = settings.get(f"dcpo-H{testbed.target_label(settings_of.target)}-pi")
    icr = settings.get(ICR)
    if both and dcpo and icr:
        shorter = 1 - both["mean_eval_length"] / dcpo["mean_eval_length"]
        gaps = {
            "vs_dcpo": both["mean_eval_accuracy"] - dcpo["mean_eval_accuracy"],
            "vs_icr": both["mean_eval_accuracy"] - icr["mean_eval_accuracy"],
        }
        error = "rms_relative_error" if settings_of.goal == "rms" else "relative_error"
        settings["goal"] = {
            error: both[f"mean_{error}"],
            "shorter_than_dcpo": shorter,
            "accuracy_gaps": gaps,
        }
        settings["goal"]["goal_met"] = verdict(settings, testbed)[0]
    return settings


def refresh(summary: dict, testbed: Testbed) -> None:
    """Recompute a stored summary's verdict in place with today's rule (`--reclaim`)."""
    if "goal" in summary:
        summary["goal"]["goal_met"] = verdict(summary, testbed)[0]


def differences(summary: dict, testbed: Testbed) -> dict[str, dict]:
    """The goal's differences over seeds (`welch`): "shorter", DCPO's held-out length − DCPO +
    ICR's; "vs_dcpo" and "vs_icr", DCPO + ICR's accuracy − each one's alone."""
    settings_of = SETTINGS[testbed.name]
    both = summary[COMPOSED]["seeds"]
    dcpo = summary[f"dcpo-H{testbed.target_label(settings_of.target)}-pi"]["seeds"]
    icr = summary[ICR]["seeds"]
    return {
        "shorter": welch(seed_values(dcpo, "eval_length"), seed_values(both, "eval_length")),
        "vs_dcpo": welch(seed_values(both, "eval_accuracy"), seed_values(dcpo, "eval_accuracy")),
        "vs_icr": welch(seed_values(both, "eval_accuracy"), seed_values(icr, "eval_accuracy")),
    }


def verdict(summary: dict, testbed: Testbed) -> tuple[bool, dict[str, dict]]:
    """(met, differences): the entropy goal on the mean over seeds; shorter than DCPO alone when
    the Welch 95% interval of the length difference lies above 0; accuracy (rms goal) at most
    `accuracy_points` below the better of the two alone (the interval against it above
    −accuracy_points), or (mean goal) within them of each (the interval inside ±accuracy_points)."""
    settings_of = SETTINGS[testbed.name]
    goal, tests = summary["goal"], differences(summary, testbed)
    points = settings_of.accuracy_points
    if settings_of.goal == "rms":
        better = (
            "vs_dcpo"
            if goal["accuracy_gaps"]["vs_dcpo"] <= goal["accuracy_gaps"]["vs_icr"]
            else "vs_icr"
        )
        met = (
            goal["rms_relative_error"] <= settings_of.rms_tolerance
            and beats(tests["shorter"])
            and beats(tests[better], -points)
        )
    else:
        met = (
            abs(goal["relative_error"]) <= settings_of.tolerance
            and beats(tests["shorter"])
            and all(
                beats(tests[k], -points) and tests[k]["interval"][1] < points
                for k in ("vs_dcpo", "vs_icr")
            )
        )
    return met, tests


def markdown(summary: dict, testbed: Testbed) -> str:
    settings_of = SETTINGS[testbed.name]
    rms = settings_of.goal == "rms"
    kinds = testbed.kinds
    lines = [
        "| setting | target | second-half entropy | "
        + ("RMS rel. error | " if rms else "")
        + "held-out avg@n | held-out length | train length first 3 → last 5 |"
        + "".join(f" {kind} avg@n |" for kind in kinds),
        "|---|---|---|" + ("---|" if rms else "") + "---|---|---|" + "---|" * len(kinds),
    ]
    for name, entry in summary.items():
        if name == "goal":
            continue
        lines.append(
            f"| {name} | {fmt(entry['target'])} | {fmt(entry['mean_second_half_entropy'])} ± "
            f"{fmt(entry['spread_second_half_entropy'])} | {rms_cell(entry, rms)}"
            f"{fmt(entry['mean_eval_accuracy'])} ± "
            f"{fmt(entry['spread_eval_accuracy'])} | {fmt(entry['mean_eval_length'], 1)} | "
            f"{fmt(entry['mean_train_length_first3'], 1)} → "
            f"{fmt(entry['mean_train_length_last5'], 1)} |"
            + "".join(
                f" {fmt(entry[f'mean_eval_accuracy_{kind}'])} ± "
                f"{fmt(entry[f'spread_eval_accuracy_{kind}'])} |"
                for kind in kinds
            )
        )
    if "goal" in summary:
        goal = summary["goal"]
        met, tests = verdict(summary, testbed)
        lines.append("")
        lines.append(
            f"Welch 95% intervals: DCPO's length − DCPO + ICR's {interval_text(tests['shorter'], 1)}"
            f"; accuracy against DCPO {interval_text(tests['vs_dcpo'])}, against ICR "
            f"{interval_text(tests['vs_icr'])}; goal met: {'yes' if met else 'no'}"
        )
        lines.append("")
        if rms:
            lines.append(
                f"DCPO + ICR: RMS entropy error {goal['rms_relative_error']:.1%} of its target, "
                f"held-out answers {goal['shorter_than_dcpo']:+.1%} shorter than DCPO alone, "
                f"accuracy {goal['accuracy_gaps']['vs_dcpo']:+.3f} vs DCPO and "
                f"{goal['accuracy_gaps']['vs_icr']:+.3f} vs ICR; goal (RMS ≤ "
                f"{settings_of.rms_tolerance:.0%}, shorter, at most "
                f"{settings_of.accuracy_points * 100:g} points below the better, by the intervals "
                f"above) met: {'yes' if met else 'no'} (± is the sample standard deviation over "
                "seeds)"
            )
        else:
            lines.append(
                f"DCPO + ICR: entropy {goal['relative_error']:+.1%} from its target, held-out "
                f"answers {goal['shorter_than_dcpo']:+.1%} shorter than DCPO alone, accuracy "
                f"{goal['accuracy_gaps']['vs_dcpo']:+.3f} vs DCPO and "
                f"{goal['accuracy_gaps']['vs_icr']:+.3f} vs ICR; goal (within "
                f"±{settings_of.tolerance:.0%}, shorter, within "
                f"{settings_of.accuracy_points * 100:g} points of each, by the intervals above) "
                f"met: {'yes' if met else 'no'} (± is the sample standard deviation over seeds)"
            )
    return "\n".join(lines) + "\n"


def claims(summary: dict, testbed: Testbed) -> list[dict]:
    settings_of = SETTINGS[testbed.name]
    if "goal" not in summary:
        return []
    goal = summary["goal"]
    gaps = {k: round(v, 4) for k, v in goal["accuracy_gaps"].items()}
    if settings_of.goal == "rms":
        error = "rms_relative_error"
        wanted = (
            f"second-half RMS relative entropy error <= {settings_of.rms_tolerance:.0%}, "
            "held-out answers shorter than DCPO alone, accuracy at most "
            f"{settings_of.accuracy_points * 100:g} points below the better of DCPO alone and "
            "ICR alone; shorter and the accuracy by the Welch 95% interval of each difference "
            "over seeds"
        )
    else:
        error = "relative_error"
        wanted = (
            f"entropy within ±{settings_of.tolerance:.0%} of the target, held-out answers "
            f"shorter than DCPO alone, accuracy within {settings_of.accuracy_points * 100:g} "
            "points of DCPO alone and of ICR alone; shorter and the accuracy by the Welch 95% "
            "interval of each difference over seeds"
        )
    met, tests = verdict(summary, testbed)
    seeds = ledger({s for k, e in summary.items() if k != "goal" for s in e["seeds"]})
    return [
        {
            "claim": "combined: DCPO + ICR holds the entropy target while compressing",
            "goal": wanted,
            "value": {
                error: round(goal[error], 4),
                "shorter_than_dcpo": round(goal["shorter_than_dcpo"], 4),
                "accuracy_gaps": gaps,
                "length_difference": rounded(tests["shorter"]),
                "accuracy_vs_dcpo": rounded(tests["vs_dcpo"]),
                "accuracy_vs_icr": rounded(tests["vs_icr"]),
            },
            "seeds": seeds,
            "met": bool(met),
        }
    ]


def figures(
    specs: list[RunSpec], root: Path, summary: dict, out: Path, testbed: Testbed
) -> list[str]:
    return []  # the report's entropy, control and length figures show it
