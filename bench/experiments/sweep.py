"""sweep: held-out avg@n and pass@16 against the target entropy, each target held by dcrl's PI
controller (AEPO's second claim: performance first rises, then falls, as the target grows).

Goals, per testbed:
- overthink: the best target is neither the lowest nor the highest. The entropy is set with
  DCPO: on this testbed AEPO's heating stops near 0.12 nats (the entropy experiment), so it
  cannot reach the upper targets.
- explore: AEPO and DCPO, each over its own 5 targets (one `Settings` each): the same interior
  peak, and the best target's avg@n beats GRPO's: the Welch 95% interval of the difference over
  seeds lies above 0 (bench/experiments/stats.py). The best target was chosen on seeds 1-3 (the
  one the exploration experiment runs each algorithm at); on seeds that did not choose it, the
  claim is judged at that target, not at their own peak.

"Rises then falls" is judged with its uncertainty, not by the argmax of noisy points: the peak
(the best target on the seeds that chose it; on other seeds the target chosen on seeds 1-3) must
be an interior target whose avg@n is above both the lowest and the highest target's, each by a
Welch 95% interval that excludes 0. Each point is plotted at the entropy it reached (second half
of the run, mean ± SD over seeds), with its RMS error against its target in the table.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

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
    pyplot,
    rms_relative_error,
    second_half,
    yes_no,
)
from .stats import beats, interval_text, ledger, rounded, welch

NAME = "sweep"
CLAIM_PREFIXES = ("sweep",)


@dataclass(frozen=True)
class Settings:
    """algorithm: the one whose PI controller holds the targets.
    targets: at least 5, in the testbed's units (nats, or multiples of the starting entropy).
    against_grpo: also train GRPO and require the peak to beat it by more than the seed spread."""

    algorithm: str
    targets: tuple[float, ...]
    against_grpo: bool = False
    placeholders: tuple[str, ...] = ()


SETTINGS: dict[str, tuple[Settings, ...]] = {
    # 0.07, 0.15, 0.22: the entropy experiment's runs, reused.
    "overthink": (Settings(algorithm="dcpo", targets=(0.07, 0.1, 0.13, 0.15, 0.19, 0.22)),),
    "explore": (
        Settings(
            algorithm="aepo",
            targets=(0.06, 0.08, 0.10, 0.12, 0.14),  # nats per token; the start is ~0.115
            against_grpo=True,
        ),
        Settings(
            algorithm="dcpo",
            # 0.07, 0.10, 0.14: the entropy experiment's PI runs, reused.
            targets=(0.07, 0.085, 0.10, 0.12, 0.14),
            against_grpo=True,
        ),
    ),
}


def specs(seeds: list[int], testbed: Testbed) -> list[RunSpec]:
    runs: list[RunSpec] = []
    for settings in SETTINGS[testbed.name]:
        runs += [
            controlled(testbed, settings.algorithm, t, "pi", seed)
            for t in settings.targets
            for seed in seeds
        ]
    if any(settings.against_grpo for settings in SETTINGS[testbed.name]):
        runs += [RunSpec("grpo", "grpo", seed) for seed in seeds]
    return runs


def evaluated(specs: list[RunSpec], testbed: Testbed) -> list[RunSpec]:
    return specs


def uses_pretrained(testbed: Testbed) -> bool:
    return False


def summarize(specs: list[RunSpec], root: Path, testbed: Testbed, pretrained: dict | None) -> dict:
    """Held-out accuracy and pass@k against the target entropy: one algorithm's summary, or with
    several {"algorithms": {name: its summary}}."""
    parts = {
        settings.algorithm: _summarize_one(
            settings,
            [s for s in specs if s.target is None or s.recipe == settings.algorithm],
            root,
            testbed,
        )
        for settings in SETTINGS[testbed.name]
    }
    parts = {name: part for name, part in parts.items() if part["points"]}
    if len(SETTINGS[testbed.name]) == 1:
        return next(iter(parts.values()))
    return {"algorithms": parts}


def parts_of(summary: dict, testbed: Testbed) -> list[tuple[Settings, dict]]:
    """(settings, summary) of each algorithm in `summary` (see `summarize`)."""
    settings_of = {settings.algorithm: settings for settings in SETTINGS[testbed.name]}
    if "algorithms" not in summary:
        return [(SETTINGS[testbed.name][0], summary)]
    return [(settings_of[name], part) for name, part in summary["algorithms"].items()]


def best_targets(summary: dict, testbed: Testbed) -> dict[str, float]:
    """Each algorithm's best target (highest held-out avg@n), by algorithm name."""
    return {s.algorithm: part["shape"]["best_target"] for s, part in parts_of(summary, testbed)}


def _summarize_one(settings: Settings, specs: list[RunSpec], root: Path, testbed: Testbed) -> dict:
    labels = {testbed.target_value(t): testbed.target_label(t) for t in settings.targets}
    points: dict[float, dict] = {}
    grpo: dict = {"seeds": {}}
    for spec in specs:
        metrics = eval_metrics(spec, root)
        if spec.target is None:
            grpo["seeds"][spec.seed] = held_out(metrics, testbed)
            continue
        values = entropy_series(metrics_of(spec.run_dir(root)))
        point = points.setdefault(spec.target, {"seeds": {}})
        scores = held_out(metrics, testbed)
        record = {
            "avg_at_n": scores["avg_at_n"],
            "pass_at_16": scores["pass_at_16"],
            "second_half_entropy": mean(second_half(values)),
            "rms_relative_error": rms_relative_error(values, spec.target),
        }
        record.update(  # per kind of problem, on a testbed with kinds
            {k: v for k, v in scores.items() if k.startswith(("avg_at_n_", "pass_at_16_"))}
        )
        point["seeds"][spec.seed] = record
    if not points:
        return {"points": {}}
    for point in points.values():
        add_seed_statistics(point)
    targets = sorted(points)
    accuracies = [points[t]["mean_avg_at_n"] for t in targets]
    best = max(range(len(targets)), key=accuracies.__getitem__)
    shape = {"best_target": targets[best]}
    summary = {"points": {labels.get(t, str(t)): points[t] for t in targets}, "shape": shape}
    shape.update(shape_test(settings, summary, testbed))
    if testbed.relative_targets:
        for t in targets:
            points[t]["target"] = t
    if settings.against_grpo and grpo["seeds"]:
        add_seed_statistics(grpo)
        peak = points[targets[best]]
        margin = peak["mean_avg_at_n"] - grpo["mean_avg_at_n"]
        difference = welch(avg_of(peak), avg_of(grpo))
        summary["grpo"] = grpo
        shape.update(
            {
                "best_label": labels.get(targets[best]),
                "margin_over_grpo": margin,
                "interval": difference["interval"],
                "beats_grpo": beats(difference),
            }
        )
    return summary


def peak_label(settings: Settings, summary: dict, testbed: Testbed) -> str | None:
    """The target whose avg@n the shape and "beats GRPO" claims are judged at: on the seeds that
    chose it, their own best; on other seeds, the target chosen on seeds 1-3 (the exploration
    experiment's; None when this algorithm has none there)."""
    shape = summary["shape"]
    label = shape.get("best_label") or testbed.target_label(shape["best_target"])
    seeds = {s for p in summary["points"].values() for s in p["seeds"]}
    if ledger(seeds)["judged"]:
        from .exploration import SETTINGS as EXPLORATION

        chosen = dict(EXPLORATION[testbed.name].algorithms).get(settings.algorithm)
        label = None if chosen is None else testbed.target_label(chosen)
    return label if label in summary["points"] else None


def shape_test(settings: Settings, summary: dict, testbed: Testbed) -> dict:
    """ "Rises then falls", with its uncertainty: the peak (`peak_label`) is an interior target
    and its avg@n is above both the lowest and the highest target's, each by a Welch 95%
    interval above 0. Returns {"peak", "peak_vs_lowest", "peak_vs_highest",
    "rises_then_falls"}."""
    labels = list(summary["points"])  # in target order
    peak = peak_label(settings, summary, testbed)
    if peak is None:
        return {"peak": None, "rises_then_falls": False}
    of = summary["points"]
    low = welch(avg_of(of[peak]), avg_of(of[labels[0]]))
    high = welch(avg_of(of[peak]), avg_of(of[labels[-1]]))
    interior = peak not in (labels[0], labels[-1])
    return {
        "peak": peak,
        "peak_vs_lowest": low,
        "peak_vs_highest": high,
        "rises_then_falls": interior and beats(low) and beats(high),
    }


def refresh(summary: dict, testbed: Testbed) -> None:
    """Recompute a stored summary's verdicts in place with today's rule (`--reclaim`)."""
    for settings, part in parts_of(summary, testbed):
        part["shape"].update(shape_test(settings, part, testbed))
    for _, part in parts_of(summary, testbed):
        shape = part["shape"]
        if "grpo" not in part or "beats_grpo" not in shape:
            continue
        label = shape.get("best_label") or testbed.target_label(shape["best_target"])
        difference = welch(avg_of(part["points"][label]), avg_of(part["grpo"]))
        shape.pop("seed_spread", None)
        shape.update({"interval": difference["interval"], "beats_grpo": beats(difference)})


def avg_of(point: dict) -> list[float]:
    """avg@n of each seed of a point (or GRPO's entry), in seed order."""
    return [point["seeds"][s]["avg_at_n"] for s in sorted(point["seeds"], key=int)]


def judged_point(settings: Settings, summary: dict, testbed: Testbed) -> tuple[str, dict] | None:
    """(label, the difference of its avg@n to GRPO's) of the target a "beats GRPO" claim is
    judged at (`peak_label`). None without GRPO or that point."""
    if "grpo" not in summary:
        return None
    label = peak_label(settings, summary, testbed)
    if label is None:
        return None
    return label, welch(avg_of(summary["points"][label]), avg_of(summary["grpo"]))


def markdown(summary: dict, testbed: Testbed) -> str:
    parts = parts_of(summary, testbed)
    if len(parts) == 1:
        return _markdown_one(parts[0][1], testbed, parts[0][0])
    return "\n".join(
        f"### {settings.algorithm.upper()}\n\n{_markdown_one(part, testbed, settings)}"
        for settings, part in parts
    )


def _markdown_one(summary: dict, testbed: Testbed, settings: Settings) -> str:
    kinds = testbed.kinds
    lines = [
        "| target | second-half entropy | RMS error | held-out avg@n | held-out pass@16 |"
        + "".join(f" {kind} avg@n |" for kind in kinds),
        "|---|---|---|---|---|" + "---|" * len(kinds),
    ]
    rows = list(summary["points"].items())
    if "grpo" in summary:
        rows.append(("grpo", summary["grpo"]))
    for target, point in rows:
        entropy = (
            f"{fmt(point['mean_second_half_entropy'])} ± {fmt(point['spread_second_half_entropy'])}"
            if "mean_second_half_entropy" in point
            else ""
        )
        if "target" in point:
            target = f"{target} = {fmt(point['target'])}"
        rms = [r.get("rms_relative_error") for r in point["seeds"].values()]
        rms_text = (
            f"{100 * mean(rms):.1f}% (worst seed {100 * max(rms):.1f}%)"
            if rms and None not in rms
            else "not stored"
        )
        if target == "grpo":
            rms_text = ""
        lines.append(
            f"| {target} | {entropy} | {rms_text} | {fmt(point['mean_avg_at_n'])} ± "
            f"{fmt(point['spread_avg_at_n'])} | {fmt(point['mean_pass_at_16'])} ± "
            f"{fmt(point['spread_pass_at_16'])} |"
            + "".join(
                f" {fmt(point.get(f'mean_avg_at_n_{kind}'))} ± "
                f"{fmt(point.get(f'spread_avg_at_n_{kind}'))} |"
                for kind in kinds
            )
        )
    shape = summary["shape"]
    lines.append("")
    lines.append(
        f"Best held-out accuracy at target {shape['best_target']} (± is the sample standard "
        "deviation over seeds; RMS error: the second half's relative error to the target, mean "
        "over seeds)."
    )
    if shape.get("peak") is not None:
        lines.append("")
        lines.append(
            f"Rises then falls, judged at target {shape['peak']}: avg@n above the lowest target's "
            f"by {interval_text(shape['peak_vs_lowest'])}, above the highest's by "
            f"{interval_text(shape['peak_vs_highest'])} (Welch 95% intervals); goal (an interior "
            f"peak, both intervals above 0) met: {yes_no(shape['rises_then_falls'])}"
        )
    judged = judged_point(settings, summary, testbed)
    if judged is not None:
        label, difference = judged
        lines.append("")
        lines.append(
            f"Target {label} against GRPO: avg@n difference {interval_text(difference)} (Welch 95% "
            f"interval); goal (the interval above 0) met: {yes_no(beats(difference))}"
        )
    return "\n".join(lines) + "\n"


def claims(summary: dict, testbed: Testbed) -> list[dict]:
    return [
        row
        for settings, part in parts_of(summary, testbed)
        for row in _claims_one(settings, part, testbed)
    ]


def _claims_one(settings: Settings, summary: dict, testbed: Testbed) -> list[dict]:
    algorithm = settings.algorithm.upper()
    shape = summary["shape"]
    seeds = {s for p in summary["points"].values() for s in p["seeds"]}
    rows = [
        {
            "claim": "sweep: held-out avg@n first rises then falls with the target entropy "
            f"(AEPO's claim; entropy held by {algorithm})",
            "goal": "the peak (the best target on seeds 1-3) is an interior target of "
            + ", ".join(summary["points"])
            + " whose avg@n is above both the lowest and the highest target's (Welch 95% "
            "intervals of the differences above 0)",
            "value": {
                "best_target": shape["best_target"],
                "peak": shape.get("peak"),
                **{
                    key: rounded(shape[key])
                    for key in ("peak_vs_lowest", "peak_vs_highest")
                    if key in shape
                },
            },
            "seeds": ledger(seeds),
            "met": bool(shape["rises_then_falls"]),
        }
    ]
    judged = judged_point(settings, summary, testbed) if settings.against_grpo else None
    if judged is not None:
        label, difference = judged
        seeds = set(summary["points"][label]["seeds"]) | set(summary["grpo"]["seeds"])
        rows.append(
            {
                "claim": f"sweep: {algorithm} at its best target beats GRPO on held-out avg@n",
                "goal": "Welch 95% interval of the difference to GRPO's avg@n above 0, at the best "
                "target of the seeds that chose it (seeds 1-3)",
                "value": {"target": label, **rounded(difference)},
                "seeds": ledger(seeds),
                "met": beats(difference),
            }
        )
    return rows


def figures(
    specs: list[RunSpec], root: Path, summary: dict, out: Path, testbed: Testbed
) -> list[str]:
    plt = pyplot()
    parts = parts_of(summary, testbed)
    fig, axes = plt.subplots(1, len(parts), figsize=(5 * len(parts), 3.4), squeeze=False)
    for axis, (settings, part) in zip(axes[0], parts, strict=True):
        _plot_one(axis, settings.algorithm, part)
    fig.tight_layout()
    name = "sweep_accuracy_vs_target.png"
    fig.savefig(out / name, dpi=110)
    plt.close(fig)
    return [name]


def _plot_one(axis: object, algorithm: str, summary: dict) -> None:
    points = list(summary["points"].values())
    reached = [p["mean_second_half_entropy"] for p in points]
    for key, label in (("avg_at_n", "avg@n"), ("pass_at_16", "pass@16")):
        axis.errorbar(
            reached,
            [p[f"mean_{key}"] for p in points],
            yerr=[p[f"spread_{key}"] for p in points],
            marker="o",
            capsize=3,
            label=label,
        )
    if "grpo" in summary:
        axis.axhline(summary["grpo"]["mean_avg_at_n"], color="gray", linestyle=":", label="grpo")
    accuracy = [p["mean_avg_at_n"] for p in points]
    for target, x, y in zip(summary["points"], reached, accuracy, strict=True):
        axis.annotate(f"H*={target}", (x, y), textcoords="offset points", xytext=(0, 6), fontsize=7)
    axis.set_xlabel(f"{algorithm.upper()}'s second-half entropy (nats/token)")
    axis.set_ylabel("held-out")
    axis.set_title(algorithm.upper())
    axis.legend()
