"""entropy: GRPO's collapse, and AEPO and DCPO holding three target entropies (above the start,
near it, below where GRPO ends) with the papers' bang-bang controller (T 1.2 / 0.8) and dcrl's PI
controller (the recipes' setting).

Goals, per testbed (bench/README.md, "Entropy control"):
- overthink: GRPO's entropy falls >= 40% (last 3 steps against the first 3); second-half mean
  entropy within ±15% of the target (bang-bang) and within ±5% with a smaller step-to-step
  standard deviation than bang-bang (PI).
- explore: GRPO's entropy falls >= 40%, and its held-out pass@16 on trap problems falls below the
  pretrained policy's. Control (rows "control: ..."): with the PI controller, DCPO and AEPO hold
  each target with a second-half RMS tracking error (RMS over the second-half steps of
  (H_t − target)/target) <= 10% and below bang-bang's; AEPO holds a target >= 20% above its
  starting entropy.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path

from .common import (
    CONTROLLERS,
    RunSpec,
    Testbed,
    add_seed_statistics,
    controlled,
    entropy_series,
    escape_cell,
    eval_metrics,
    fmt,
    held_out,
    mean,
    metrics_of,
    pyplot,
    rms_cell,
    rms_relative_error,
    second_half,
    series,
    yes_no,
)
from .stats import against_constant, beats, interval_text, ledger, rounded, seed_values, welch

NAME = "entropy"
CLAIM_PREFIXES = ("entropy", "control")


@dataclass(frozen=True)
class Settings:
    """targets: above the start, near it, below where GRPO ends (in the testbed's units:
        nats per token, or multiples of its starting entropy).
    goal: "mean" (the second-half mean's relative error within `tolerance`, and for PI a
        smaller step-to-step std than bang-bang) or "rms" (the second-half RMS relative error
        within `rms_tolerance` and, for PI, below bang-bang's).
    trap_kind: the kind of held-out problem on which GRPO's pass@16 must fall below the
        pretrained policy's (None: no held-out goal, nothing evaluated).
    heat_algorithm, heat_above: that algorithm, with PI, must hold a target at least this
        fraction above its own starting entropy (None: no such goal)."""

    targets: tuple[float, ...]
    algorithms: tuple[str, ...] = ("aepo", "dcpo")
    goal: str = "mean"
    drop: float = 0.40
    tolerance: tuple[tuple[str, float], ...] = (("bang_bang", 0.15), ("pi", 0.05))
    rms_tolerance: float = 0.10
    trap_kind: str | None = None
    heat_algorithm: str | None = None
    heat_above: float = 0.20
    placeholders: tuple[str, ...] = ()


SETTINGS = {
    # Above the start (~0.18 nats), near it, and below where GRPO ends (~0.09 at 40 steps).
    "overthink": Settings(targets=(0.22, 0.15, 0.07)),
    "explore": Settings(
        # Above the start (~0.115 nats; 0.14 is 22% above, AEPO's heating goal), near the
        # recipes' 0.10, and below where GRPO ends after 40 steps (~0.08).
        targets=(0.14, 0.10, 0.07),
        goal="rms",
        trap_kind="trap",
        heat_algorithm="aepo",
    ),
}
EXTRA_KEYS = ("held_out", "heating")  # summary keys that are not settings


def specs(seeds: list[int], testbed: Testbed) -> list[RunSpec]:
    settings = SETTINGS[testbed.name]
    runs = [RunSpec("grpo", "grpo", s) for s in seeds]
    for algorithm in settings.algorithms:
        for target in settings.targets:
            for controller in CONTROLLERS:
                runs += [controlled(testbed, algorithm, target, controller, s) for s in seeds]
    return runs


def evaluated(specs: list[RunSpec], testbed: Testbed) -> list[RunSpec]:
    """GRPO's runs on a testbed with a held-out goal; nothing otherwise."""
    if SETTINGS[testbed.name].trap_kind is None:
        return []
    return [s for s in specs if s.name == "grpo"]


def uses_pretrained(testbed: Testbed) -> bool:
    return SETTINGS[testbed.name].trap_kind is not None


def band(settings: Settings, controller: str) -> float:
    """The half-width of a target's band, relative to the target."""
    return (
        settings.rms_tolerance if settings.goal == "rms" else dict(settings.tolerance)[controller]
    )


def summarize(specs: list[RunSpec], root: Path, testbed: Testbed, pretrained: dict | None) -> dict:
    settings_of = SETTINGS[testbed.name]
    settings: dict[str, dict] = {}
    for spec in specs:
        rows = metrics_of(spec.run_dir(root))
        values = entropy_series(rows)
        half = second_half(values)
        head = mean(values[:3])
        entry = settings.setdefault(
            spec.name,
            {"target": spec.target, "controller": spec.controller, "seeds": {}},
        )
        record = {
            "first3_entropy": head,
            "last3_entropy": mean(values[-3:]),
            "second_half_mean": mean(half),
            "second_half_std": statistics.pstdev(half) if len(half) > 1 else 0.0,
            "final_accuracy": mean(series(rows, "reward/accuracy")[-5:]),
        }
        if spec.target is not None:
            record["relative_error"] = (record["second_half_mean"] - spec.target) / spec.target
            if settings_of.goal == "rms":
                record["rms_relative_error"] = rms_relative_error(values, spec.target)
        else:
            record["entropy_drop"] = 1 - record["last3_entropy"] / head
        entry["seeds"][spec.seed] = record
    for entry in settings.values():
        add_seed_statistics(entry)
    for name, entry in settings.items():
        if entry["target"] is None:
            entry["goal"] = f"entropy drop >= {settings_of.drop:.0%}"
            entry["goal_met"] = entry["mean_entropy_drop"] >= settings_of.drop
            continue
        papers = settings.get(name.replace(f"-{entry['controller']}", "-bang_bang"))
        if entry["controller"] == "bang_bang":
            papers = None
        if settings_of.goal == "rms":
            tolerance = settings_of.rms_tolerance
            entry["goal"] = f"second-half RMS relative error <= {tolerance:.0%}"
            if papers is not None:
                entry["goal"] += " and < bang-bang's"
            entry["goal_met"] = rms_verdict(name, settings, settings_of)[0]
            continue
        tolerance = band(settings_of, entry["controller"])
        entry["goal"] = f"|relative error| <= {tolerance:.0%}"
        entry["goal_met"] = abs(entry["mean_relative_error"]) <= tolerance
        if papers is not None:
            entry["goal"] += " and std < bang-bang's"
            entry["goal_met"] = bool(
                entry["goal_met"] and entry["mean_second_half_std"] < papers["mean_second_half_std"]
            )
    summary: dict = dict(settings)
    if settings_of.trap_kind is not None and pretrained is not None:
        summary["held_out"] = summarize_held_out(specs, root, testbed, pretrained)
    if settings_of.heat_algorithm is not None:
        summary["heating"] = heating(settings, settings_of)
    return summary


def summarize_held_out(
    specs: list[RunSpec], root: Path, testbed: Testbed, pretrained: dict
) -> dict:
    """GRPO's held-out pass@16 (overall and per kind) against the pretrained policy's."""
    trap = SETTINGS[testbed.name].trap_kind
    grpo: dict = {"seeds": {}}
    for spec in specs:
        if spec.name == "grpo":
            grpo["seeds"][spec.seed] = held_out(eval_metrics(spec, root), testbed)
    if not grpo["seeds"]:
        return {}
    add_seed_statistics(grpo)
    base = held_out(pretrained, testbed)
    key = f"pass_at_16_{trap}"
    trained, before = grpo.get(f"mean_{key}"), base.get(key)  # None: no such problem evaluated
    held = {
        "pretrained": base,
        "grpo": grpo,
        "trap_goal": {"grpo_pass_at_16": trained, "pretrained_pass_at_16": before},
    }
    held["trap_goal"]["goal_met"] = trap_verdict(held, testbed)[0]
    return held


def refresh(summary: dict, testbed: Testbed) -> None:
    """Recompute a stored summary's interval verdicts in place with today's rule (`--reclaim`)."""
    settings_of = SETTINGS[testbed.name]
    settings = settings_only(summary)
    if settings_of.goal == "rms":
        for name, entry in settings.items():
            if entry["target"] is not None:
                entry["goal_met"] = rms_verdict(name, settings, settings_of)[0]
    held = summary.get("held_out")
    if held:
        held["trap_goal"]["goal_met"] = trap_verdict(held, testbed)[0]


def rms_verdict(name: str, settings: dict, settings_of: Settings) -> tuple[bool, dict | None]:
    """(met, the difference of bang-bang's RMS error to this run's) of the rms goal: the mean
    RMS error within the tolerance and, for a PI run, below bang-bang's by the Welch 95%
    interval of the difference over seeds (bench/experiments/stats.py)."""
    entry = settings[name]
    met = entry["mean_rms_relative_error"] <= settings_of.rms_tolerance
    papers = settings.get(name.replace(f"-{entry['controller']}", "-bang_bang"))
    if entry["controller"] == "bang_bang" or papers is None:
        return bool(met), None
    key = "rms_relative_error"
    difference = welch(seed_values(papers["seeds"], key), seed_values(entry["seeds"], key))
    return bool(met and beats(difference)), difference


def trap_verdict(held: dict, testbed: Testbed) -> tuple[bool, dict]:
    """(met, the pretrained policy's trap pass@16 − GRPO's, with the one-sample interval over
    GRPO's seeds): met when the interval lies above 0."""
    key = f"pass_at_16_{SETTINGS[testbed.name].trap_kind}"
    before = held["pretrained"].get(key)
    if before is None:
        return False, against_constant([], 0.0)
    difference = against_constant(seed_values(held["grpo"]["seeds"], key), before)
    return beats(difference), difference


def heating(settings: dict[str, dict], settings_of: Settings) -> dict:
    """Whether the heating algorithm holds (PI, within the RMS goal) a target at least
    `heat_above` above its own starting entropy (first 3 steps, mean of seeds); the value is the
    highest such target tried."""
    tried = [
        (name, entry)
        for name, entry in settings.items()
        if name.startswith(f"{settings_of.heat_algorithm}-")
        and entry["controller"] == "pi"
        and entry["target"] is not None
    ]
    if not tried:
        return {}
    rows = []
    for name, entry in tried:
        ratio = entry["target"] / entry["mean_first3_entropy"]
        rows.append(
            {
                "setting": name,
                "target": entry["target"],
                "start": entry["mean_first3_entropy"],
                "target_over_start": ratio,
                "rms_relative_error": entry["mean_rms_relative_error"],
                "held": ratio >= 1 + settings_of.heat_above
                and entry["mean_rms_relative_error"] <= settings_of.rms_tolerance,
            }
        )
    highest = max(rows, key=lambda row: row["target_over_start"])
    held = [row for row in rows if row["held"]]
    best = max(held, key=lambda row: row["target_over_start"]) if held else highest
    return {**best, "goal_met": bool(held)}


def settings_only(summary: dict) -> dict:
    return {name: entry for name, entry in summary.items() if name not in EXTRA_KEYS}


def markdown(summary: dict, testbed: Testbed) -> str:
    settings_of = SETTINGS[testbed.name]
    rms = settings_of.goal == "rms"
    lines = [
        "| setting | target | first 3 steps | second-half mean | rel. error / drop | "
        + ("RMS rel. error | " if rms else "")
        + "goal | met |",
        "|---|---|---|---|---|" + ("---|" if rms else "") + "---|---|",
    ]
    settings = settings_only(summary)
    for name, entry in settings.items():
        key = "relative_error" if "mean_relative_error" in entry else "entropy_drop"
        met = entry["goal_met"]
        if rms and entry["target"] is not None:
            met = rms_verdict(name, settings, settings_of)[0]
        lines.append(
            f"| {name} | {fmt(entry['target'])} | {fmt(entry['mean_first3_entropy'])} | "
            f"{fmt(entry['mean_second_half_mean'])} ± {fmt(entry['mean_second_half_std'])} | "
            f"{'drop ' if key == 'entropy_drop' else ''}{entry['mean_' + key]:+.1%} "
            f"(seeds ± {entry['spread_' + key]:.1%}) | {rms_cell(entry, rms)}"
            f"{escape_cell(entry['goal'])} | {yes_no(met)} |"
        )
    lines.append("")
    lines.append(
        "second-half mean ± its standard deviation over the steps (the oscillation), averaged "
        "over seeds; rel. error / drop ± its sample standard deviation over seeds; a PI run's "
        '"< bang-bang\'s" by the Welch 95% interval of the difference over seeds.'
        + (
            " RMS rel. error: over the second-half steps of (H − target)/target, mean of seeds."
            if rms
            else ""
        )
    )
    held = summary.get("held_out")
    if held:
        kinds = testbed.kinds
        lines += [
            "",
            "| model | held-out avg@n | pass@16 | "
            + " | ".join(f"{kind} avg@n | {kind} pass@16" for kind in kinds)
            + " |",
            "|---|---|---|" + "---|---|" * len(kinds),
        ]
        for label, entry in (("pretrained", held["pretrained"]), ("grpo", held["grpo"])):
            prefix = "mean_" if label == "grpo" else ""
            cells = [fmt(entry[f"{prefix}avg_at_n"]), fmt(entry[f"{prefix}pass_at_16"])]
            for kind in kinds:
                cells += [
                    fmt(entry.get(f"{prefix}avg_at_n_{kind}")),
                    fmt(entry.get(f"{prefix}pass_at_16_{kind}")),
                ]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        goal = held["trap_goal"]
        met, difference = trap_verdict(held, testbed)
        lines += [
            "",
            f"GRPO's held-out pass@16 on {settings_of.trap_kind} problems: "
            f"{fmt(goal['grpo_pass_at_16'])} against the pretrained policy's "
            f"{fmt(goal['pretrained_pass_at_16'])} (difference {interval_text(difference)}, "
            f"one-sample 95% interval over GRPO's seeds); goal (below it) met: {yes_no(met)}",
        ]
    heat = summary.get("heating")
    if heat:
        lines += [
            "",
            f"{settings_of.heat_algorithm.upper()} heating: {heat['setting']} holds "
            f"{fmt(heat['target'])} = {heat['target_over_start']:.2f}× its start "
            f"{fmt(heat['start'])} with RMS error {heat['rms_relative_error']:.1%}; goal (a "
            f"target ≥ {1 + settings_of.heat_above:.2f}× the start, RMS ≤ "
            f"{settings_of.rms_tolerance:.0%}) met: {yes_no(heat['goal_met'])}",
        ]
    return "\n".join(lines) + "\n"


def claims(summary: dict, testbed: Testbed) -> list[dict]:
    settings_of = SETTINGS[testbed.name]
    rows = []
    settings = settings_only(summary)
    for name, entry in settings.items():
        if entry["target"] is None:
            rows.append(
                {
                    "claim": f"entropy: {name} collapses the entropy",
                    "goal": "last 3 steps >= 40% below the first 3 (mean of seeds)",
                    "value": round(entry["mean_entropy_drop"], 4),
                    "met": bool(entry["goal_met"]),
                }
            )
        elif settings_of.goal == "mean":
            rows.append(
                {
                    "claim": f"entropy: {name} holds its target {entry['target']}",
                    "goal": entry["goal"] + " (second-half mean, mean of seeds)",
                    "value": round(entry["mean_relative_error"], 4),
                    "met": bool(entry["goal_met"]),
                }
            )
        elif entry["controller"] == "pi":  # bang-bang is the reference of these rows
            papers = settings.get(name.replace("-pi", "-bang_bang"))
            met, difference = rms_verdict(name, settings, settings_of)
            value = {
                "rms_relative_error": round(entry["mean_rms_relative_error"], 4),
                "bang_bang_rms_relative_error": None
                if papers is None
                else round(papers["mean_rms_relative_error"], 4),
            }
            if difference is not None:
                value["bang_bang_minus_pi"] = rounded(difference)
            rows.append(
                {
                    "claim": f"control: {name} holds its target {entry['target']}",
                    "goal": entry["goal"] + " (the RMS error: mean of seeds; below bang-bang's: "
                    "the Welch 95% interval of the difference above 0)",
                    "value": value,
                    "seeds": ledger(entry["seeds"]),
                    "met": met,
                }
            )
    held = summary.get("held_out")
    if held:
        met, difference = trap_verdict(held, testbed)
        rows.append(
            {
                "claim": f"entropy: grpo's held-out pass@16 on {settings_of.trap_kind} problems "
                "falls below the pretrained policy's",
                "goal": "the pretrained policy's pass@16 − GRPO's above 0 by the one-sample 95% "
                "interval over GRPO's seeds (the pretrained policy is evaluated once)",
                "value": rounded(difference),
                "seeds": ledger(held["grpo"]["seeds"]),
                "met": met,
            }
        )
    heat = summary.get("heating")
    if heat:
        rows.append(
            {
                "claim": f"control: {settings_of.heat_algorithm} holds a target "
                f">= {settings_of.heat_above:.0%} above its starting entropy",
                "goal": f"a PI run with target >= {1 + settings_of.heat_above:.2f}× its first 3 "
                f"steps' entropy and second-half RMS relative error <= "
                f"{settings_of.rms_tolerance:.0%} (means of seeds)",
                "value": {
                    "setting": heat["setting"],
                    "target_over_start": round(heat["target_over_start"], 4),
                    "rms_relative_error": round(heat["rms_relative_error"], 4),
                },
                "met": bool(heat["goal_met"]),
            }
        )
    return rows


def figures(
    specs: list[RunSpec], root: Path, summary: dict, out: Path, testbed: Testbed
) -> list[str]:
    """Entropy vs step per algorithm × controller: each target's seed mean with its band
    (min-max over seeds), the target's tolerance band, and GRPO for reference."""
    settings_of = SETTINGS[testbed.name]
    plt = pyplot()

    def curves(name: str) -> tuple[list[int], list[float], list[float], list[float]]:
        runs = [entropy_series(metrics_of(s.run_dir(root))) for s in specs if s.name == name]
        length = min(len(r) for r in runs)
        columns = [[r[i] for r in runs] for i in range(length)]
        return (
            list(range(1, length + 1)),
            [statistics.fmean(c) for c in columns],
            [min(c) for c in columns],
            [max(c) for c in columns],
        )

    algorithms = sorted({s.recipe for s in specs if s.target is not None})
    fig, axes = plt.subplots(
        len(algorithms),
        len(CONTROLLERS),
        figsize=(5 * len(CONTROLLERS), 3.4 * len(algorithms)),
        squeeze=False,
        sharey=True,
    )
    targets = {testbed.target_value(t): testbed.target_label(t) for t in settings_of.targets}
    colors = dict(zip(targets, ("tab:red", "tab:green", "tab:blue"), strict=False))
    for row, algorithm in enumerate(algorithms):
        for col, controller in enumerate(CONTROLLERS):
            axis = axes[row][col]
            if "grpo" in summary:
                steps, middle, low, high = curves("grpo")
                axis.plot(steps, middle, color="gray", label="grpo")
                axis.fill_between(steps, low, high, color="gray", alpha=0.15)
            tolerance = band(settings_of, controller)
            for target, label in targets.items():
                name = f"{algorithm}-H{label}-{controller}"
                if name not in summary:
                    continue
                color = colors.get(target, "black")
                axis.axhspan(
                    target * (1 - tolerance), target * (1 + tolerance), color=color, alpha=0.12
                )
                axis.axhline(target, color=color, linestyle=":", linewidth=1)
                steps, middle, low, high = curves(name)
                axis.plot(steps, middle, color=color, label=f"target {target}")
                axis.fill_between(steps, low, high, color=color, alpha=0.2)
            axis.set_title(f"{algorithm}, {controller} (band ±{tolerance:.0%})")
            axis.set_xlabel("step")
            axis.set_ylabel("policy entropy (on-policy NLL, nats/token)")
            axis.legend(fontsize=7)
    fig.tight_layout()
    name = "entropy_vs_target.png"
    fig.savefig(out / name, dpi=110)
    plt.close(fig)
    return [name]
