"""regime: where entropy control helps and where it hurts — the gain of dcrl's controlled DCPO
and AEPO over GRPO against the share of trap problems in training (explore testbed; run when
named).

Each method trains at trap shares 0, 0.1 (the recipes' own: the same runs as `baselines`), 0.2
and 0.35, the rest of its recipe unchanged (DCPO's target 0.10 and AEPO's 0.06, chosen on seeds
1-3 in the sweep, so the map is meant for seeds 4, 5, 6, ...). Every run is evaluated on the
same held-out split (half plain, half trap problems), and judged twice:

- at 50/50: avg@32 over the held-out split as it is;
- at the training mix: (1 − s)·avg@32 on plain + s·avg@32 on traps, s the run's training share
  — the accuracy on problems drawn as the run was trained, from the same samples.

Statistics (bench/experiments/stats.py): per method and share n, mean and sample SD over seeds;
each method's difference to GRPO at the same share with a Welch 95% interval. A point is a gain
when the interval lies above 0, a loss when it lies below, and neither otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from .common import RunSpec, Testbed, controlled, eval_metrics, held_out, pyplot
from .stats import CHOSE, describe, interval_text, ledger, rounded, seed_values, welch

NAME = "regime"
CLAIM_PREFIXES = ("regime",)
KEEP = ("train.keep_checkpoints=0",)  # as `baselines`, so that its runs at share 0.1 are reused


@dataclass(frozen=True)
class Method:
    """label: the table's name; algorithm/target: an entropy-controlled run (None: GRPO)."""

    label: str
    algorithm: str | None = None
    target: float | None = None


@dataclass(frozen=True)
class Settings:
    """shares: the training trap shares; recipe_share: the recipes' own (its runs are named as
    `baselines` names them); methods: GRPO (the reference) first."""

    shares: tuple[float, ...]
    recipe_share: float
    methods: tuple[Method, ...]
    chose: tuple[int, ...] = CHOSE
    placeholders: tuple[str, ...] = ()


SETTINGS = {
    "explore": Settings(
        shares=(0.0, 0.1, 0.2, 0.35),
        recipe_share=0.1,
        methods=(
            Method("GRPO"),
            Method("DCPO (dcrl)", "dcpo", 0.10),
            Method("AEPO (dcrl)", "aepo", 0.06),
        ),
    ),
}

MIXES = (("avg_at_n", "50/50"), ("avg_at_n_mix", "training mix"))


def run_spec(method: Method, share: float, testbed: Testbed, seed: int) -> RunSpec:
    """The run of `method` trained at trap share `share`."""
    settings = SETTINGS[testbed.name]
    if method.algorithm is None:
        spec = RunSpec("grpo", "grpo", seed, KEEP)
    else:
        spec = controlled(testbed, method.algorithm, method.target, "pi", seed)
        spec = replace(spec, overrides=(*spec.overrides, *KEEP))
    if share == settings.recipe_share:
        return spec
    return replace(
        spec,
        name=f"{spec.name}-traps{share}",
        overrides=(*spec.overrides, f"data.task_options={{trap_share: {share}}}"),
    )


def specs(seeds: list[int], testbed: Testbed) -> list[RunSpec]:
    """Seed by seed, share by share, so that an interrupted reproduction has whole points."""
    settings = SETTINGS[testbed.name]
    return [
        run_spec(method, share, testbed, seed)
        for seed in seeds
        for share in settings.shares
        for method in settings.methods
    ]


def evaluated(specs: list[RunSpec], testbed: Testbed) -> list[RunSpec]:
    return specs


def uses_pretrained(testbed: Testbed) -> bool:
    return False


def training_mix(record: dict, share: float) -> float | None:
    """avg@32 at the training mix: (1 − s)·plain + s·trap (None without both kinds)."""
    plain, trap = record.get("avg_at_n_plain"), record.get("avg_at_n_trap")
    if plain is None or trap is None:
        return None
    return (1 - share) * plain + share * trap


def summarize(specs: list[RunSpec], root: Path, testbed: Testbed, pretrained: dict | None) -> dict:
    settings = SETTINGS[testbed.name]
    points: dict[str, dict[str, dict]] = {}  # share -> method -> {"run", "seeds"}
    for spec in specs:
        share, method = next(
            (share, method)
            for share in settings.shares
            for method in settings.methods
            if run_spec(method, share, testbed, spec.seed).name == spec.name
        )
        record = held_out(eval_metrics(spec, root), testbed)
        record["avg_at_n_mix"] = training_mix(record, share)
        entry = points.setdefault(str(share), {}).setdefault(method.label, {"run": spec.name})
        entry.setdefault("seeds", {})[str(spec.seed)] = record
    return {"points": points, "chose": list(settings.chose), "reference": "GRPO"}


def comparisons(summary: dict) -> dict[str, dict[str, dict]]:
    """{share: {method: {mix key: welch(method, GRPO)}}} over every seed of the summary."""
    out: dict[str, dict[str, dict]] = {}
    for share, methods in summary["points"].items():
        reference = methods.get(summary["reference"])
        if reference is None:
            continue
        out[share] = {
            label: {
                key: welch(seed_values(entry["seeds"], key), seed_values(reference["seeds"], key))
                for key, _ in MIXES
            }
            for label, entry in methods.items()
            if label != summary["reference"]
        }
    return out


def verdict(comparison: dict) -> str:
    """ "gain" (interval above 0), "loss" (below 0) or "neither"."""
    interval = comparison.get("interval")
    if not interval or interval[0] is None:
        return "n/a"
    if interval[0] > 0:
        return "gain"
    if interval[1] < 0:
        return "loss"
    return "neither"


def seeds_of(summary: dict) -> list[int]:
    return sorted(
        {
            int(s)
            for methods in summary["points"].values()
            for entry in methods.values()
            for s in entry["seeds"]
        }
    )


def cell(values: list) -> str:
    stats = describe(values)
    if stats["mean"] is None:
        return ""
    sd = "" if stats["sd"] is None else f" ± {stats['sd']:.3f}"
    return f"{stats['mean']:.3f}{sd}"


def markdown(summary: dict, testbed: Testbed) -> str:
    seeds = seeds_of(summary)
    lines = [
        "| training trap share | method | n | avg@32 at 50/50 | avg@32 at the training mix | "
        "plain avg@32 | trap avg@32 |",
        "|---|---|---|---|---|---|---|",
    ]
    for share, methods in summary["points"].items():
        for label, entry in methods.items():
            values = entry["seeds"]
            lines.append(
                f"| {share} | {label} | {len(values)} | "
                + " | ".join(
                    cell(seed_values(values, key))
                    for key in ("avg_at_n", "avg_at_n_mix", "avg_at_n_plain", "avg_at_n_trap")
                )
                + " |"
            )
    lines += [
        "",
        "Difference to GRPO at the same share: mean difference [Welch 95% interval], and the "
        "verdict (gain: interval above 0; loss: below 0)",
        "",
        "| training trap share | method | at 50/50 | verdict | at the training mix | verdict |",
        "|---|---|---|---|---|---|",
    ]
    for share, rows in comparisons(summary).items():
        for label, comparison in rows.items():
            lines.append(
                f"| {share} | {label} | "
                + " | ".join(
                    f"{interval_text(comparison[key])} | {verdict(comparison[key])}"
                    for key, _ in MIXES
                )
                + " |"
            )
    chose = summary["chose"]
    judged = [s for s in seeds if s not in chose]
    lines += [
        "",
        f"Seeds {seeds} (the targets were chosen on seeds {chose}; "
        f"{'judged on seeds ' + str(judged) if judged else 'no judging seed'}); ± is the sample "
        "standard deviation over seeds (ddof 1). The held-out split is half plain, half trap "
        "problems; the training mix weighs its per-kind avg@32 by the run's training share.",
    ]
    return "\n".join(lines) + "\n"


def claims(summary: dict, testbed: Testbed) -> list[dict]:
    seeds = seeds_of(summary)
    rows = []
    for share, methods in comparisons(summary).items():
        for label, comparison in methods.items():
            for key, mix in MIXES:
                rows.append(
                    {
                        "claim": f"regime: {label} vs GRPO at training trap share {share}, "
                        f"held out at {mix}",
                        "goal": "a map, not a goal: gain when the Welch 95% interval of the "
                        "difference in avg@32 lies above 0, loss when below",
                        "value": {**rounded(comparison[key]), "verdict": verdict(comparison[key])},
                        "seeds": ledger(seeds),
                        "met": verdict(comparison[key]) == "gain",
                        "kind": "map",  # a point of the map, not a goal: not counted as one
                    }
                )
    return rows


def figures(
    specs: list[RunSpec], root: Path, summary: dict, out: Path, testbed: Testbed
) -> list[str]:
    """The gain over GRPO against the training trap share, with 95% intervals, at 50/50 and at
    the training mix."""
    plt = pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    rows = comparisons(summary)
    shares = sorted(rows, key=float)
    labels = sorted({label for share in shares for label in rows[share]})
    for ax, (key, mix) in zip(axes, MIXES, strict=True):
        for offset, label in enumerate(labels):
            xs, ys, low, high = [], [], [], []
            for share in shares:
                comparison = rows[share].get(label, {}).get(key)
                if comparison is None or comparison["difference"] is None:
                    continue
                x = float(share) + (offset - (len(labels) - 1) / 2) * 0.006
                interval = comparison.get("interval") or [None, None]
                xs.append(x)
                ys.append(comparison["difference"])
                low.append(
                    comparison["difference"]
                    - (interval[0] if interval[0] is not None else comparison["difference"])
                )
                high.append(
                    (interval[1] if interval[1] is not None else comparison["difference"])
                    - comparison["difference"]
                )
            ax.errorbar(xs, ys, yerr=[low, high], marker="o", capsize=3, label=label)
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xlabel("trap share in training")
        ax.set_title(f"held out at {mix}")
    axes[0].set_ylabel("avg@32 − GRPO's (95% interval)")
    axes[0].legend(fontsize=8)
    name = f"{NAME}_gain.png"
    figure.tight_layout()
    figure.savefig(out / name, dpi=120)
    plt.close(figure)
    return [name]
