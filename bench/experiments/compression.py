"""compression: GRPO, LP-F, ICR and LP-F + ICR: held-out accuracy and length, training length,
and the per-group length-accuracy correlation over training.

Goals, per testbed:
- overthink: ICR >= 25% shorter held-out answers than GRPO, accuracy within 2 points.
- explore: the same.
Each is judged on the Welch 95% interval of a difference of means over seeds
(bench/experiments/stats.py): 0.75 × GRPO's length − ICR's above 0, ICR's accuracy − GRPO's above
−2 points.

On both testbeds, the ICR paper's observation about the per-group length–accuracy correlation
(`corr/length_acc_group`, mean over a half of training), as the paper states it:
- the regime: under GRPO the correlation starts below 0 (over-thinking: among a group's answers
  the longer ones are less often right), by the one-sample 95% interval of the first half;
- LP-F under-thinks: its correlation climbs past 0 in the second half (interval above 0) while its
  held-out accuracy falls below GRPO's (the Welch interval of GRPO's − LP-F's above 0);
- ICR does not: its second-half correlation stays below LP-F's (Welch interval of LP-F's − ICR's
  above 0) and below 0 (one-sample interval).
Where the regime row is missed (the testbed does not over-think), the other two are tested
outside the regime the paper is about, and the table says so.
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
from .stats import against_constant, beats, interval_text, ledger, rounded, seed_values, welch

NAME = "compression"
CLAIM_PREFIXES = ("compression",)


@dataclass(frozen=True)
class Settings:
    """lp_f_max_length, lp_f_buffer: LP-F (DAPO's soft overlong penalty) ramps from
    max_length − buffer to max_length tokens.
    shorter, accuracy_points: ICR's goal against GRPO."""

    lp_f_max_length: int
    lp_f_buffer: int
    shorter: float = 0.25
    accuracy_points: float = 0.02
    placeholders: tuple[str, ...] = ()


SETTINGS = {
    # A concise level-3 answer is about 20 tokens; the policy starts near 27.
    "overthink": Settings(lp_f_max_length=32, lp_f_buffer=16),
    "explore": Settings(
        # The penalty ramps from 32 to 48 tokens: a fast answer with a check is ~16, a
        # decomposition ~27 and ~37 with one check, so LP-F leans on decompositions too.
        lp_f_max_length=48,
        lp_f_buffer=16,
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
        goal.update(correlation_verdicts(tests))
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
    for stale in ("lp_f_corr_end", "icr_corr_end", "lp_f_corr_above_icr"):  # an older rule's
        goal.pop(stale, None)
    goal.update(correlation_verdicts(tests))


def correlation_verdicts(tests: dict[str, dict]) -> dict[str, bool]:
    """The ICR paper's correlation observation (module doc), each True when its intervals hold:
    "over_thinks" (GRPO's first half below 0), "lp_f_under_thinks" (LP-F's second half above 0
    and its accuracy below GRPO's), "icr_stays_below" (ICR's second half below LP-F's and 0)."""
    if "lp_f_corr_end" not in tests:
        return {"over_thinks": beats(tests["grpo_corr_start"])}
    return {
        "over_thinks": beats(tests["grpo_corr_start"]),
        "lp_f_under_thinks": beats(tests["lp_f_corr_end"]) and beats(tests["lp_f_accuracy_loss"]),
        "icr_stays_below": beats(tests["correlation"]) and beats(tests["icr_corr_end"]),
    }


def differences(summary: dict, settings_of: Settings) -> dict[str, dict]:
    """The goals' differences over seeds (`welch`, `against_constant`), each to be above 0:
    "shorter", (1 − shorter) × GRPO's held-out length − ICR's; "accuracy", ICR's avg@n − GRPO's;
    "grpo_corr_start", 0 − GRPO's first-half per-group length-accuracy correlation; with LP-F:
    "correlation", LP-F's second-half correlation − ICR's; "lp_f_corr_end", LP-F's second half
    − 0; "lp_f_accuracy_loss", GRPO's avg@n − LP-F's; "icr_corr_end", 0 − ICR's second half."""
    grpo, icr = summary["grpo"]["seeds"], summary["icr"]["seeds"]
    scale = 1.0 - settings_of.shorter
    tests = {
        "shorter": welch(
            [scale * v for v in seed_values(grpo, "eval_length")], seed_values(icr, "eval_length")
        ),
        "accuracy": welch(seed_values(icr, "eval_accuracy"), seed_values(grpo, "eval_accuracy")),
    }
    start, end = "corr_group_first_half", "corr_group_second_half"
    tests["grpo_corr_start"] = against_constant(seed_values(grpo, start), 0.0)
    if "lp_f" in summary:
        lp_f = summary["lp_f"]["seeds"]
        tests["correlation"] = welch(seed_values(lp_f, end), seed_values(icr, end))
        negated = [None if v is None else -v for v in seed_values(lp_f, end)]
        tests["lp_f_corr_end"] = against_constant(negated, 0.0)  # 0 − (−corr) = corr
        tests["lp_f_accuracy_loss"] = welch(
            seed_values(grpo, "eval_accuracy"), seed_values(lp_f, "eval_accuracy")
        )
        tests["icr_corr_end"] = against_constant(seed_values(icr, end), 0.0)
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
        verdicts = correlation_verdicts(tests)
        lines.append("")
        lines.append(
            "The ICR paper's correlation observation (per-group length-accuracy correlation; "
            "95% intervals): GRPO over-thinks at the start (0 − its first half: "
            f"{interval_text(tests['grpo_corr_start'])}): {yes_no(verdicts['over_thinks'])}"
            + ("" if verdicts["over_thinks"] else " — the rows below are outside that regime")
        )
        if "lp_f_corr_end" in tests:
            lines.append("")
            lines.append(
                f"LP-F under-thinks (its second half {interval_text(tests['lp_f_corr_end'])}, "
                f"GRPO's accuracy − LP-F's {interval_text(tests['lp_f_accuracy_loss'])}): "
                f"{yes_no(verdicts['lp_f_under_thinks'])}; ICR stays below (LP-F's − ICR's "
                f"{interval_text(tests['correlation'])}, 0 − ICR's second half "
                f"{interval_text(tests['icr_corr_end'])}): {yes_no(verdicts['icr_stays_below'])}"
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
    verdicts = correlation_verdicts(tests)
    regime = (
        "" if verdicts["over_thinks"] else " (outside the regime: GRPO does not over-think here)"
    )
    rows.append(
        {
            "claim": "compression: under GRPO the length-accuracy correlation starts below 0 "
            "(over-thinking, the regime the ICR paper is about)",
            "goal": "0 − GRPO's mean per-group correlation over the first half of training: its "
            "one-sample 95% interval above 0",
            "value": rounded(tests["grpo_corr_start"]),
            "seeds": ledger(summary["grpo"]["seeds"]),
            "met": verdicts["over_thinks"],
        }
    )
    if "lp_f_corr_end" in tests:
        lp_f_seeds = set(summary["lp_f"]["seeds"])
        rows += [
            {
                "claim": "compression: LP-F under-thinks: its length-accuracy correlation climbs "
                "past 0 while its accuracy falls below GRPO's" + regime,
                "goal": "LP-F's second-half correlation above 0 (one-sample 95% interval) and "
                "GRPO's held-out avg@n − LP-F's above 0 (Welch 95% interval)",
                "value": {
                    "corr_end": rounded(tests["lp_f_corr_end"]),
                    "accuracy_loss": rounded(tests["lp_f_accuracy_loss"]),
                },
                "seeds": ledger(lp_f_seeds | set(summary["grpo"]["seeds"])),
                "met": verdicts["lp_f_under_thinks"],
            },
            {
                "claim": "compression: ICR keeps the length-accuracy correlation below 0 and "
                "below LP-F's" + regime,
                "goal": "LP-F's − ICR's second-half correlation above 0 (Welch 95% interval) and "
                "0 − ICR's above 0 (one-sample 95% interval)",
                "value": {
                    "lp_f_minus_icr": rounded(tests["correlation"]),
                    "below_zero": rounded(tests["icr_corr_end"]),
                },
                "seeds": seeds,
                "met": verdicts["icr_stays_below"],
            },
        ]
    return rows


def figures(
    specs: list[RunSpec], root: Path, summary: dict, out: Path, testbed: Testbed
) -> list[str]:
    return []  # the report's length, correlation and Pareto figures show it
