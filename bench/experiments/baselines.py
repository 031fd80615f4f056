"""baselines: the papers' comparison table in miniature. GRPO, DCPO and AEPO as the papers run
them (bang-bang controller, T 0.8 / 1.2), dcrl's controlled DCPO and AEPO (the recipes' PI
controller), the entropy baselines the papers compare with (Entropy-Reg, Entropy-Adv, Clip-Cov,
KL-Cov, clip-higher) and GRPO sampling hotter, all with the same budget (the recipes' steps,
prompts and group size), plus two ablations of the papers' DCPO: ρ ≡ 1 (`use_rho=false`) and T
fixed at 1.2 (`controller: fixed`). Explore testbed only; run when named.

Each run is evaluated held out as exploration does it (avg@32, pass@16, per kind), and its
checkpoints (steps 10, 20, 30, 40; the pretrained policy as step 0) on a small probe of held-out
trap problems: the share of those samples that decompose, the strategy that solves traps
(dcrl.tasks.explore), over training.

Statistics (bench/experiments/stats.py): per method n, mean and sample SD over seeds; each
method's difference to GRPO with a Welch 95% interval. The settings that were chosen (DCPO's and
AEPO's targets, from the sweep; the recipes' trap share) were chosen on seeds 1-3 (`chose`), so
a claim is judged on the other seeds only (4, 5, 6, ...): met when the interval of the difference
on those seeds lies above 0.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

from .common import (
    EVAL_DIR,
    RunSpec,
    Testbed,
    controlled,
    eval_metrics,
    fmt,
    held_out,
    pyplot,
    yes_no,
)
from .stats import CHOSE, beats, describe, interval_text, ledger, rounded, seed_values, welch

NAME = "baselines"
CLAIM_PREFIXES = ("baselines",)
PROBE_DIR = "probe-traps"  # a run's decomposition probes, one folder per step


@dataclass(frozen=True)
class Method:
    """One row of the table: `label` (the table's name), `kind` ("papers", "dcrl", "baseline",
    "ablation", "reference") and how to make its run for a seed (`run(testbed, seed)`)."""

    label: str
    kind: str
    recipe: str = "grpo"
    overrides: tuple[str, ...] = ()
    algorithm: str | None = None  # an entropy-controlled run: algorithm, target, controller
    target: float | None = None
    controller: str | None = None
    name: str | None = None  # the run's name (default: label)
    settings: str = ""  # what the table says about its settings

    def run(self, testbed: Testbed, seed: int) -> RunSpec:
        if self.algorithm is not None:
            spec = controlled(testbed, self.algorithm, self.target, self.controller, seed)
            name = self.name or spec.name
            return replace(spec, name=name, overrides=(*spec.overrides, *self.overrides))
        return RunSpec(self.name or self.label, self.recipe, seed, self.overrides)


@dataclass(frozen=True)
class Settings:
    """methods: the table's rows, the reference (GRPO) first.
    chose: the seeds the settings were chosen on; claims are judged on the others.
    ablations: (method, ablated method) pairs whose difference is a claim of its own.
    probe_problems, probe_samples: held-out trap problems and samples per checkpoint probe."""

    methods: tuple[Method, ...]
    chose: tuple[int, ...] = CHOSE
    ablations: tuple[tuple[str, str], ...] = ()
    probe_problems: int = 32
    probe_samples: int = 8
    placeholders: tuple[str, ...] = ()


# Every run keeps its checkpoints (steps 10-40) for the decomposition probe; the setting does
# not change training, and bench/reproduce.py's same_settings ignores it.
KEEP = ("train.keep_checkpoints=0",)

SETTINGS = {
    "explore": Settings(
        methods=(
            Method("grpo", "reference", overrides=KEEP, settings="the recipe"),
            # The papers' methods: bang-bang on T (0.8 / 1.2), T only, the papers' weights, at
            # the targets chosen for dcrl's runs in the sweep (seeds 1-3): DCPO 0.10, AEPO 0.06.
            Method(
                "DCPO (papers)",
                "papers",
                algorithm="dcpo",
                target=0.10,
                controller="bang_bang",
                overrides=KEEP,
                settings="bang-bang T 0.8/1.2, target 0.10",
            ),
            Method(
                "AEPO (papers)",
                "papers",
                algorithm="aepo",
                target=0.06,
                controller="bang_bang",
                overrides=KEEP,
                settings="bang-bang T 0.8/1.2, target 0.06",
            ),
            Method(
                "DCPO (dcrl)",
                "dcrl",
                algorithm="dcpo",
                target=0.10,
                controller="pi",
                overrides=KEEP,
                settings="PI on T 0.8-2 and weight ≤ 10×, target 0.10",
            ),
            Method(
                "AEPO (dcrl)",
                "dcrl",
                algorithm="aepo",
                target=0.06,
                controller="pi",
                overrides=KEEP,
                settings="PI on T 0.8-2 and weight ≤ 10×, target 0.06",
            ),
            # dcrl's AEPO with its tempered prompts drawn from the groups with mixed outcomes
            # (a dcrl extension; the same target, chosen on nothing: judged on every seed).
            Method(
                "AEPO (dcrl), mixed prompts",
                "dcrl",
                algorithm="aepo",
                target=0.06,
                controller="pi",
                name="aepo-H0.06-pi-mixed",
                overrides=("algorithm.tempered_prompts=mixed", *KEEP),
                settings="as AEPO (dcrl), re-sampling the most mixed prompts at T",
            ),
            # The baselines, each with its defaults (the papers' settings; `dcrl algorithms`).
            Method(
                "Entropy-Reg",
                "baseline",
                name="entropy_reg",
                overrides=("algorithm.name=entropy_reg", *KEEP),
                settings="coef 0.01",
            ),
            Method(
                "Entropy-Adv",
                "baseline",
                name="entropy_adv",
                overrides=("algorithm.name=entropy_adv", *KEEP),
                settings="α 0.4, κ 2",
            ),
            Method(
                "Clip-Cov",
                "baseline",
                name="clip_cov",
                overrides=("algorithm.name=clip_cov", *KEEP),
                settings="the paper's defaults",
            ),
            Method(
                "KL-Cov",
                "baseline",
                name="kl_cov",
                overrides=("algorithm.name=kl_cov", *KEEP),
                settings="the paper's defaults",
            ),
            Method(
                "clip-higher",
                "baseline",
                name="clip_higher",
                overrides=("algorithm.name=clip_higher", *KEEP),
                settings="ε_high 0.28",
            ),
            Method(
                "GRPO at T 1.2",
                "baseline",
                name="grpo-T1.2",
                overrides=("rollout.temperature=1.2", *KEEP),
                settings="rollouts at T = 1.2",
            ),
            # Ablations of the papers' DCPO: without its ratio ρ, and with T no longer steered.
            Method(
                "DCPO (papers), ρ ≡ 1",
                "ablation",
                algorithm="dcpo",
                target=0.10,
                controller="bang_bang",
                name="dcpo-H0.1-bang_bang-norho",
                overrides=("algorithm.use_rho=false", *KEEP),
                settings="use_rho=false",
            ),
            Method(
                "DCPO (papers), T fixed 1.2",
                "ablation",
                algorithm="dcpo",
                target=0.10,
                controller="bang_bang",
                name="dcpo-H0.1-fixedT1.2",
                overrides=("algorithm.controller=fixed", *KEEP),
                settings="controller fixed: T = 1.2 every step",
            ),
        ),
        ablations=(
            ("DCPO (papers)", "DCPO (papers), ρ ≡ 1"),
            ("DCPO (papers)", "DCPO (papers), T fixed 1.2"),
        ),
    ),
}

METRICS = (  # (key of a seed's record, the table's name)
    ("avg_at_n", "avg@32"),
    ("pass_at_16", "pass@16"),
    ("avg_at_n_trap", "trap avg@32"),
    ("pass_at_16_trap", "trap pass@16"),
    ("avg_at_n_plain", "plain avg@32"),
    ("pass_at_16_plain", "plain pass@16"),
    ("decompose_share_trap", "decomposing (traps)"),
)
GOAL_METRICS = ("avg_at_n", "pass_at_16")  # a "beats" claim needs both


def specs(seeds: list[int], testbed: Testbed) -> list[RunSpec]:
    """Seed by seed (every method of the first seed, then the second, ...), so that an
    interrupted reproduction has whole seeds done."""
    methods = SETTINGS[testbed.name].methods
    return [method.run(testbed, seed) for seed in seeds for method in methods]


def evaluated(specs: list[RunSpec], testbed: Testbed) -> list[RunSpec]:
    return specs


def uses_pretrained(testbed: Testbed) -> bool:
    return True


def method_of(spec: RunSpec, testbed: Testbed) -> Method:
    return next(
        m for m in SETTINGS[testbed.name].methods if m.run(testbed, spec.seed).name == spec.name
    )


# -- decomposition on traps ---------------------------------------------------------------------
def trap_problems(testbed: Testbed, limit: int | None = None) -> list:
    """The held-out problems of kind "trap" (the first `limit` of them)."""
    from bench.reproduce import recipe
    from dcrl.eval import load_eval_data

    data = load_eval_data(None, run_config=recipe(testbed))
    traps = [p for p in data.problems if p.meta.get(testbed.group_by) == "trap"]
    return traps[:limit] if limit is not None else traps


def decompose_share(samples_file: Path, trap_ids: set[str] | None) -> float | None:
    """The share of the trap problems' samples in a samples.jsonl that decompose (None: every
    sample is of a trap problem)."""
    from dcrl.tasks.explore import strategy_of

    if not samples_file.is_file():
        return None
    strategies = []
    for line in samples_file.read_text().splitlines():
        record = json.loads(line)
        if (trap_ids is None or record["problem_id"] in trap_ids) and "response" in record:
            strategies.append(strategy_of(record["response"]))
    return sum(s == "decompose" for s in strategies) / len(strategies) if strategies else None


def probe(model, out_dir: Path, testbed: Testbed, settings: Settings, seed: int) -> float | None:
    """The decomposition share of `model` (a name, a directory or a (model, tokenizer) pair) on
    the probe's held-out trap problems; kept in out_dir (reused when it holds a finished probe)."""
    from bench.reproduce import evaluate_one

    if not (out_dir / "metrics.json").is_file():
        sizes = (settings.probe_problems, settings.probe_samples)
        evaluate_one(model, out_dir, seed, *sizes, testbed, kind="trap")
    return decompose_share(out_dir / "samples.jsonl", None)


def checkpoint_model(run_dir: Path, step_dir: Path):
    """The policy of a run at a checkpoint: the final policy's architecture and tokenizer with
    the checkpoint's weights."""
    from safetensors.torch import load_model

    from dcrl.models.loading import load_policy

    model, tokenizer = load_policy(run_dir / "policy")
    load_model(model, str(step_dir / "model.safetensors"))
    return model.eval(), tokenizer


def probes_over_training(spec: RunSpec, root: Path, testbed: Testbed) -> dict[str, float]:
    """{step: decomposition share on the probe's traps} for each checkpoint the run kept."""
    settings = SETTINGS[testbed.name]
    run_dir = spec.run_dir(root)
    shares = {}
    for step_dir in sorted((run_dir / "checkpoints").glob("step_*")):
        step = int(step_dir.name.split("_")[1])
        out_dir = run_dir / PROBE_DIR / f"step{step}"
        model = (
            None if (out_dir / "metrics.json").is_file() else checkpoint_model(run_dir, step_dir)
        )
        share = probe(model, out_dir, testbed, settings, spec.seed)
        if share is not None:
            shares[str(step)] = share
    return shares


# -- summary ------------------------------------------------------------------------------------
def summarize(specs: list[RunSpec], root: Path, testbed: Testbed, pretrained: dict | None) -> dict:
    settings = SETTINGS[testbed.name]
    traps = {p.id for p in trap_problems(testbed)}
    methods: dict[str, dict] = {}
    for spec in specs:
        method = method_of(spec, testbed)
        entry = methods.setdefault(
            method.label, {"kind": method.kind, "run": spec.name, "settings": method.settings}
        )
        record = held_out(eval_metrics(spec, root), testbed)
        record["decompose_share_trap"] = decompose_share(
            spec.run_dir(root) / EVAL_DIR / "samples.jsonl", traps
        )
        record["decompose_over_training"] = probes_over_training(spec, root, testbed)
        entry.setdefault("seeds", {})[spec.seed] = record
    base = None
    if pretrained is not None:
        base = held_out(pretrained, testbed)
        base["decompose_share_trap"] = decompose_share(
            root / "base" / EVAL_DIR / "samples.jsonl", traps
        )
        from bench.reproduce import recipe

        model_name = recipe(testbed)["model"]["name"]
        probe_dir = root / "base" / PROBE_DIR / "step0"
        base["decompose_probe"] = probe(model_name, probe_dir, testbed, settings, 1)
    return {"methods": methods, "pretrained": base, "chose": list(settings.chose)}


def comparisons(summary: dict, seeds: str) -> dict[str, dict]:
    """{method: {metric: welch(method, GRPO)}} on "all" seeds or the "judged" ones (those not in
    summary["chose"])."""
    methods = summary["methods"]
    reference = methods.get("grpo")
    if reference is None:
        return {}
    chose = {int(s) for s in summary["chose"]}

    def kept(entry: dict) -> dict:
        if seeds == "all":
            return entry["seeds"]
        return {s: r for s, r in entry["seeds"].items() if int(s) not in chose}

    result = {}
    for label, entry in methods.items():
        if label == "grpo":
            continue
        mine, theirs = kept(entry), kept(reference)
        result[label] = {
            key: welch(seed_values(mine, key), seed_values(theirs, key)) for key, _ in METRICS
        }
    return result


def judged_seeds(summary: dict) -> list[int]:
    chose = {int(s) for s in summary["chose"]}
    seen = {int(s) for entry in summary["methods"].values() for s in entry["seeds"]}
    return sorted(seen - chose)


def cell(stats: dict | None) -> str:
    """`mean ± sample SD` of a describe() result ("" without values)."""
    if stats is None or stats["mean"] is None:
        return ""
    sd = "" if stats["sd"] is None else f" ± {stats['sd']:.3f}"
    return f"{stats['mean']:.3f}{sd}"


def over_training(entry: dict) -> dict[str, dict]:
    """{step: describe(decomposition share over seeds)}."""
    steps = sorted({int(k) for s in entry["seeds"].values() for k in s["decompose_over_training"]})
    return {
        str(step): describe(
            [s["decompose_over_training"].get(str(step)) for s in entry["seeds"].values()]
        )
        for step in steps
    }


def markdown(summary: dict, testbed: Testbed) -> str:
    methods = summary["methods"]
    lines = [
        "| method | settings | n | " + " | ".join(name for _, name in METRICS) + " |",
        "|---|---|---|" + "---|" * len(METRICS),
    ]
    base = summary.get("pretrained")
    if base is not None:
        lines.append(
            "| pretrained | | | " + " | ".join(fmt(base.get(key)) for key, _ in METRICS) + " |"
        )
    for label, entry in methods.items():
        seeds = entry["seeds"]
        lines.append(
            f"| {label} | {entry['settings']} | {len(seeds)} | "
            + " | ".join(cell(describe(seed_values(seeds, key))) for key, _ in METRICS)
            + " |"
        )
    judged = judged_seeds(summary)
    titles = (
        ("judged", f"the judging seeds {judged or '(none yet)'}"),
        ("all", "all seeds; in-sample for the settings chosen on seeds 1-3, not a verdict"),
    )
    for which, title in titles:
        rows = comparisons(summary, which)
        lines += [
            "",
            f"Difference to GRPO ({title}): mean difference [Welch 95% interval]",
            "",
            "| method | " + " | ".join(name for _, name in METRICS) + " | beats GRPO |",
            "|---|" + "---|" * len(METRICS) + "---|",
        ]
        for label, comparison in rows.items():
            met = all(beats(comparison[key]) for key in GOAL_METRICS)
            lines.append(
                f"| {label} | "
                + " | ".join(interval_text(comparison[key]) for key, _ in METRICS)
                + f" | {yes_no(met)} |"
            )
    steps = sorted({int(s) for e in methods.values() for s in over_training(e)})
    if steps:
        start = fmt((base or {}).get("decompose_probe"))
        lines += [
            "",
            "Share of samples that decompose on held-out trap problems over training "
            "(probe: mean ± sample SD over seeds; step 0 is the pretrained policy):",
            "",
            "| method | 0 | " + " | ".join(str(s) for s in steps) + " |",
            "|---|---|" + "---|" * len(steps),
        ]
        for label, entry in methods.items():
            shares = over_training(entry)
            lines.append(
                f"| {label} | {start} | "
                + " | ".join(cell(shares.get(str(s))) for s in steps)
                + " |"
            )
    lines += [
        "",
        f"n: seeds per method; ± is the sample standard deviation over seeds (ddof 1). Settings "
        f"were chosen on seeds {summary['chose']}; a claim is judged on the other seeds "
        f"({judged or 'none yet'}): met when the Welch 95% interval of the difference to GRPO "
        "lies above 0 for both avg@32 and pass@16.",
    ]
    return "\n".join(lines) + "\n"


def claims(summary: dict, testbed: Testbed) -> list[dict]:
    judged = judged_seeds(summary)
    judged_rows = comparisons(summary, "judged")
    all_rows = comparisons(summary, "all")

    def row(claim: str, goal: str, judged_cmp: dict, all_cmp: dict) -> dict:
        met = bool(judged) and all(beats(judged_cmp[key]) for key in GOAL_METRICS)
        return {
            "claim": claim,
            "goal": goal,
            "value": {
                "judged": {key: rounded(judged_cmp[key]) for key, _ in METRICS},
                "all": {key: rounded(all_cmp[key]) for key, _ in METRICS},
            },
            "seeds": ledger(judged),
            "met": met,
        }

    goal = (
        "Welch 95% interval of the difference in held-out avg@32 and in pass@16 above 0, on "
        "the judging seeds"
    )
    rows = [
        row(f"baselines: {label} beats GRPO on the held-out split", goal, judged_rows[label], c)
        for label, c in all_rows.items()
    ]
    methods = summary["methods"]
    chose_set = {int(s) for s in summary["chose"]}
    for method, ablated in SETTINGS[testbed.name].ablations:
        if method not in methods or ablated not in methods:
            continue

        def pick(label: str, judged_only: bool) -> dict:
            seeds = methods[label]["seeds"]
            return {s: r for s, r in seeds.items() if not judged_only or int(s) not in chose_set}

        cmp_judged = {
            key: welch(seed_values(pick(method, True), key), seed_values(pick(ablated, True), key))
            for key, _ in METRICS
        }
        cmp_all = {
            key: welch(
                seed_values(pick(method, False), key), seed_values(pick(ablated, False), key)
            )
            for key, _ in METRICS
        }
        rows.append(
            row(f"baselines: {method} beats {ablated} (ablation)", goal, cmp_judged, cmp_all)
        )
    return rows


def figures(
    specs: list[RunSpec], root: Path, summary: dict, out: Path, testbed: Testbed
) -> list[str]:
    """The decomposition share on trap problems over training, one line per method."""
    plt = pyplot()
    figure, axes = plt.subplots(figsize=(7, 4.5))
    base = summary.get("pretrained") or {}
    for label, entry in summary["methods"].items():
        shares = over_training(entry)
        if not shares:
            continue
        steps, values = [int(s) for s in shares], [s["mean"] for s in shares.values()]
        if base.get("decompose_probe") is not None:
            steps, values = [0, *steps], [base["decompose_probe"], *values]
        axes.plot(steps, values, marker="o", label=label)
    axes.set_xlabel("training step")
    axes.set_ylabel("share of trap samples that decompose")
    axes.set_title("Decomposition on held-out traps (mean of seeds)")
    axes.legend(fontsize=7)
    name = f"{NAME}_decomposition.png"
    figure.tight_layout()
    figure.savefig(out / name, dpi=120)
    plt.close(figure)
    return [name]
