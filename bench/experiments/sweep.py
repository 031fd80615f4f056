"""sweep: held-out avg@n and pass@16 against the target entropy, each target held by dcrl's PI
controller (AEPO's second claim: performance first rises, then falls, as the target grows).

Goals, per testbed:
- overthink: the best target is neither the lowest nor the highest. The entropy is set with
  DCPO: on this testbed AEPO's heating stops near 0.12 nats (the entropy experiment), so it
  cannot reach the upper targets.
- explore: AEPO and DCPO, each over its own 5 targets (one `Settings` each): the same interior
  peak, and the peak's avg@n beats GRPO's by more than the seed spread (the larger of the two
  standard deviations over seeds). Each algorithm's best target is the one the exploration
  experiment runs it at.
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
        }
        if testbed.relative_targets:
            record["rms_relative_error"] = rms_relative_error(values, spec.target)
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
    shape = {
        "best_target": targets[best],
        "rises_then_falls": 0 < best < len(targets) - 1,
    }
    summary = {"points": {labels.get(t, str(t)): points[t] for t in targets}, "shape": shape}
    if testbed.relative_targets:
        for t in targets:
            points[t]["target"] = t
    if settings.against_grpo and grpo["seeds"]:
        add_seed_statistics(grpo)
        peak = points[targets[best]]
        margin = peak["mean_avg_at_n"] - grpo["mean_avg_at_n"]
        seed_spread = max(peak["spread_avg_at_n"], grpo["spread_avg_at_n"])
        summary["grpo"] = grpo
        shape.update(
            {
                "best_label": labels.get(targets[best]),
                "margin_over_grpo": margin,
                "seed_spread": seed_spread,
                "beats_grpo": margin > seed_spread,
            }
        )
    return summary


def markdown(summary: dict, testbed: Testbed) -> str:
    parts = parts_of(summary, testbed)
    if len(parts) == 1:
        return _markdown_one(parts[0][1], testbed)
    return "\n".join(
        f"### {settings.algorithm.upper()}\n\n{_markdown_one(part, testbed)}"
        for settings, part in parts
    )


def _markdown_one(summary: dict, testbed: Testbed) -> str:
    kinds = testbed.kinds
    lines = [
        "| target | second-half entropy | held-out avg@n | held-out pass@16 |"
        + "".join(f" {kind} avg@n |" for kind in kinds),
        "|---|---|---|---|" + "---|" * len(kinds),
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
        lines.append(
            f"| {target} | {entropy} | {fmt(point['mean_avg_at_n'])} ± "
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
        f"Best held-out accuracy at target {shape['best_target']}; rises then falls: "
        f"{'yes' if shape['rises_then_falls'] else 'no'} (± is the standard deviation over seeds)"
    )
    if "beats_grpo" in shape:
        lines.append("")
        lines.append(
            f"The peak against GRPO: avg@n {shape['margin_over_grpo']:+.3f}, seed spread "
            f"{fmt(shape['seed_spread'])}; goal (more than the spread) met: "
            f"{yes_no(shape['beats_grpo'])}"
        )
    return "\n".join(lines) + "\n"


def claims(summary: dict, testbed: Testbed) -> list[dict]:
    return [
        row for settings, part in parts_of(summary, testbed) for row in _claims_one(settings, part)
    ]


def _claims_one(settings: Settings, summary: dict) -> list[dict]:
    algorithm = settings.algorithm.upper()
    shape = summary["shape"]
    rows = [
        {
            "claim": "sweep: held-out avg@n first rises then falls with the target entropy "
            f"(AEPO's claim; entropy held by {algorithm})",
            "goal": "the best target is neither the lowest nor the highest of "
            + ", ".join(summary["points"]),
            "value": shape["best_target"],
            "met": bool(shape["rises_then_falls"]),
        }
    ]
    if "beats_grpo" in shape:
        rows.append(
            {
                "claim": f"sweep: {algorithm} at its best target beats GRPO on held-out avg@n",
                "goal": "the peak's avg@n - GRPO's > the larger standard deviation over seeds "
                "(means of seeds)",
                "value": {
                    "best_target": shape["best_target"],
                    "margin": round(shape["margin_over_grpo"], 4),
                    "seed_spread": round(shape["seed_spread"], 4),
                },
                "met": bool(shape["beats_grpo"]),
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
