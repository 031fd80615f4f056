"""exploration: entropy-controlled runs (dcrl's PI controller) against GRPO on the held-out
split: avg@n and the pass@k curve with the seed spread, and the pretrained policy's for
reference; per kind of problem too on a testbed with kinds.

Goals, per testbed:
- overthink: DCPO at the middle target beats GRPO on avg@n and pass@16.
- explore: DCPO and AEPO, each at its best target (the sweep's), beat GRPO on avg@n and pass@16
  (overall; the per-kind numbers are in the table and the rows' values).
"Beats" is met when the Welch 95% interval of the difference of the means over seeds lies above 0
for both (bench/experiments/stats.py); a tie is a miss.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .common import RunSpec, Testbed, by_kind, controlled, eval_metrics, fmt, mean, spread, yes_no
from .stats import beats, interval_text, ledger, rounded, welch

NAME = "exploration"
CLAIM_PREFIXES = ("exploration",)


@dataclass(frozen=True)
class Settings:
    """algorithms: (algorithm, target) pairs, in the testbed's units.
    best_targets: the targets are each algorithm's best (the claim says so).
    flat_goals: the summary's "goals" is the one algorithm's comparison itself (the layout of
        the overthink results, bench/results/exploration.json), not a dict by algorithm."""

    algorithms: tuple[tuple[str, float], ...]
    best_targets: bool = False
    flat_goals: bool = False
    placeholders: tuple[str, ...] = ()


SETTINGS = {
    "overthink": Settings(algorithms=(("dcpo", 0.15),), flat_goals=True),
    "explore": Settings(
        # Each one's best target in the sweep (seeds 1-3, bench/results/explore/sweep.json),
        # so that seeds the sweep did not use test the choice.
        algorithms=(("dcpo", 0.10), ("aepo", 0.06)),
        best_targets=True,
    ),
}


def specs(seeds: list[int], testbed: Testbed) -> list[RunSpec]:
    runs = [RunSpec("grpo", "grpo", s) for s in seeds]
    for algorithm, target in SETTINGS[testbed.name].algorithms:
        runs += [controlled(testbed, algorithm, target, "pi", s) for s in seeds]
    return runs


def evaluated(specs: list[RunSpec], testbed: Testbed) -> list[RunSpec]:
    return specs


def uses_pretrained(testbed: Testbed) -> bool:
    return True


def curve(metrics: dict) -> dict:
    return {
        "pass_at_k": metrics["pass@k"],
        "avg_at_n": next(v for k, v in metrics.items() if k.startswith("avg@")),
    }


def over_seeds(seeds: list[dict]) -> dict:
    """Mean and spread over seeds of {"pass_at_k", "avg_at_n"} records."""
    ks = seeds[0]["pass_at_k"].keys()
    return {
        "pass_at_k": {k: mean([s["pass_at_k"][k] for s in seeds]) for k in ks},
        "pass_at_k_spread": {k: spread([s["pass_at_k"][k] for s in seeds]) for k in ks},
        "avg_at_n": mean([s["avg_at_n"] for s in seeds]),
        "avg_at_n_spread": spread([s["avg_at_n"] for s in seeds]),
    }


def summarize(specs: list[RunSpec], root: Path, testbed: Testbed, pretrained: dict | None) -> dict:
    settings = SETTINGS[testbed.name]
    assert pretrained is not None, "exploration compares against the pretrained policy"
    curves: dict[str, dict] = {"pretrained": {"pass_at_k": pretrained["pass@k"], "avg_at_n": None}}
    for spec in specs:
        metrics = eval_metrics(spec, root)
        entry = curves.setdefault(spec.name.split("-")[0], {"seeds": {}})
        record = curve(metrics)
        if testbed.group_by is not None:
            record["by_kind"] = {k: curve(v) for k, v in by_kind(metrics, testbed).items()}
        entry["seeds"][spec.seed] = record
    curves["pretrained"]["avg_at_n"] = curve(pretrained)["avg_at_n"]
    if testbed.group_by is not None:
        curves["pretrained"]["by_kind"] = {
            k: curve(v) for k, v in by_kind(pretrained, testbed).items()
        }
    for entry in curves.values():
        if "seeds" in entry:
            seeds = list(entry["seeds"].values())
            entry.update(over_seeds(seeds))
            if testbed.group_by is not None:
                entry["by_kind"] = {
                    kind: over_seeds([s["by_kind"][kind] for s in seeds])
                    for kind in seeds[0]["by_kind"]
                }
    grpo = curves.get("grpo")
    goals: dict = {}
    if grpo is not None:
        ks = [int(k) for k in grpo["pass_at_k"]]
        k_goal = str(16 if 16 in ks else max(ks))  # pass@16, or the largest k of a quick run
        for algorithm, target in settings.algorithms:
            if algorithm in curves:
                goals[algorithm] = compare(algorithm, curves[algorithm], grpo, k_goal)
                if settings.best_targets:
                    goals[algorithm]["target"] = testbed.target_label(target)
    if settings.flat_goals:
        goals = next(iter(goals.values()), {})
    return {"curves": curves, "goals": goals}


def differences(entry: dict, grpo: dict, k: str, kind: str | None = None) -> dict:
    """{"avg_at_n", "pass_at_<k>"}: the algorithm's difference to GRPO over seeds (`welch`),
    overall or on one kind of problem."""

    def values(curves: dict, key: str) -> list[float]:
        records = [curves["seeds"][s] for s in sorted(curves["seeds"], key=int)]
        if kind is not None:
            records = [r["by_kind"][kind] for r in records]
        return [r["avg_at_n"] if key == "avg_at_n" else r["pass_at_k"][k] for r in records]

    return {key: welch(values(entry, key), values(grpo, key)) for key in ("avg_at_n", "pass_at_k")}


def compare(algorithm: str, entry: dict, grpo: dict, k: str) -> dict:
    """The algorithm's avg@n and pass@k against GRPO's (means of seeds), and per kind; the goal
    is met when both differences' Welch 95% intervals lie above 0."""
    overall = differences(entry, grpo, k)
    goal = {
        "k": k,
        f"{algorithm}_pass_at_k": entry["pass_at_k"][k],
        "grpo_pass_at_k": grpo["pass_at_k"][k],
        f"{algorithm}_avg_at_n": entry["avg_at_n"],
        "grpo_avg_at_n": grpo["avg_at_n"],
        "goal_met": beats(overall["avg_at_n"]) and beats(overall["pass_at_k"]),
    }
    if "by_kind" in entry:
        goal["by_kind"] = {
            kind: {
                f"{algorithm}_avg_at_n": values["avg_at_n"],
                "grpo_avg_at_n": grpo["by_kind"][kind]["avg_at_n"],
                f"{algorithm}_pass_at_k": values["pass_at_k"][k],
                "grpo_pass_at_k": grpo["by_kind"][kind]["pass_at_k"][k],
            }
            for kind, values in entry["by_kind"].items()
        }
    return goal


def refresh(summary: dict, testbed: Testbed) -> None:
    """Recompute a stored summary's verdicts in place with today's rule (`--reclaim`)."""
    curves = summary["curves"]
    for algorithm, goal in goals_by_algorithm(summary, testbed).items():
        goal["goal_met"] = compare(algorithm, curves[algorithm], curves["grpo"], goal["k"])[
            "goal_met"
        ]


def goals_by_algorithm(summary: dict, testbed: Testbed) -> dict[str, dict]:
    goals = summary["goals"]
    if SETTINGS[testbed.name].flat_goals:
        algorithm = SETTINGS[testbed.name].algorithms[0][0]
        return {algorithm: goals} if goals else {}
    return goals


def with_spread(value: float | None, value_spread: float | None) -> str:
    return fmt(value) + (f" ± {fmt(value_spread)}" if value_spread is not None else "")


def markdown(summary: dict, testbed: Testbed) -> str:
    curves = summary["curves"]
    ks = list(curves["grpo"]["pass_at_k"])
    lines = ["| model | avg@n | " + " | ".join(f"pass@{k}" for k in ks) + " |"]
    lines.append("|---|---|" + "---|" * len(ks))
    for label, entry in curves.items():
        spreads = entry.get("pass_at_k_spread", {})
        values = " | ".join(
            fmt(entry["pass_at_k"].get(k)) + (f" ± {fmt(spreads[k])}" if k in spreads else "")
            for k in ks
        )
        avg = fmt(entry["avg_at_n"]) + (
            f" ± {fmt(entry['avg_at_n_spread'])}" if "avg_at_n_spread" in entry else ""
        )
        lines.append(f"| {label} | {avg} | {values} |")
    goals = goals_by_algorithm(summary, testbed)
    if testbed.group_by is not None:
        k = next(iter(goals.values()))["k"] if goals else ks[-1]
        lines += ["", f"| model | {testbed.group_by} | avg@n | pass@{k} |", "|---|---|---|---|"]
        for label, entry in curves.items():
            for kind, values in entry.get("by_kind", {}).items():
                lines.append(
                    f"| {label} | {kind} | "
                    f"{with_spread(values['avg_at_n'], values.get('avg_at_n_spread'))} | "
                    f"{with_spread(values['pass_at_k'][k], values.get('pass_at_k_spread', {}).get(k))} |"
                )
    for algorithm, goal in goals.items():
        name = algorithm.upper()
        at = f" at {goal['target']}" if "target" in goal else ""
        lines.append("")
        diff = differences(curves[algorithm], curves["grpo"], goal["k"])
        lines.append(
            f"{name}{at} vs GRPO: avg@n {fmt(goal[f'{algorithm}_avg_at_n'])} vs "
            f"{fmt(goal['grpo_avg_at_n'])} (difference {interval_text(diff['avg_at_n'])}), "
            f"pass@{goal['k']} {fmt(goal[f'{algorithm}_pass_at_k'])} vs "
            f"{fmt(goal['grpo_pass_at_k'])} ({interval_text(diff['pass_at_k'])}); goal ({name} "
            f"beats GRPO on both: the Welch 95% interval of each difference above 0) met: "
            f"{yes_no(beats(diff['avg_at_n']) and beats(diff['pass_at_k']))}"
        )
    lines.append("")
    lines.append(
        "± is the sample standard deviation over seeds; [low, high] the Welch 95% interval of "
        "the difference of the means."
    )
    return "\n".join(lines) + "\n"


def rounded_differences(entry: dict, grpo: dict, k: str, kind: str | None = None) -> dict:
    """`differences` as claims.json holds them: {"avg_at_n", "pass_at_<k>"} of stats.rounded."""
    diff = differences(entry, grpo, k, kind)
    return {"avg_at_n": rounded(diff["avg_at_n"]), f"pass_at_{k}": rounded(diff["pass_at_k"])}


def claims(summary: dict, testbed: Testbed) -> list[dict]:
    """One row per algorithm: its difference to GRPO (n, means, sample SDs, Welch 95% interval)
    on avg@n and pass@k, overall and per kind; met when both overall intervals lie above 0."""
    rows = []
    curves = summary["curves"]
    for algorithm, goal in goals_by_algorithm(summary, testbed).items():
        at = f" at its best target {goal['target']}" if "target" in goal else ""
        k = goal["k"]
        overall = differences(curves[algorithm], curves["grpo"], k)
        value = rounded_differences(curves[algorithm], curves["grpo"], k)
        if "by_kind" in goal:
            value["by_kind"] = {
                kind: rounded_differences(curves[algorithm], curves["grpo"], k, kind)
                for kind in goal["by_kind"]
            }
        seeds = set(curves[algorithm]["seeds"]) | set(curves["grpo"]["seeds"])
        rows.append(
            {
                "claim": f"exploration: {algorithm.upper()}{at} beats GRPO on the held-out split",
                "goal": f"Welch 95% interval of the difference to GRPO above 0 for avg@n and for "
                f"pass@{k} (seeds)",
                "value": value,
                "seeds": ledger(seeds),
                "met": beats(overall["avg_at_n"]) and beats(overall["pass_at_k"]),
            }
        )
    return rows


def figures(
    specs: list[RunSpec], root: Path, summary: dict, out: Path, testbed: Testbed
) -> list[str]:
    return []  # the report's pass@k figure shows the curves
