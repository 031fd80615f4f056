"""What the bench experiments share (bench/reproduce.py drives them; bench/README.md reads them):
the testbeds, run specs, a run's training log and held-out metrics, statistics over seeds and
steps, and table formatting.

A testbed is a family of recipes (dcrl/recipes/<prefix>-<algorithm>.yaml) with its own results folder.
Each experiment module keeps its own constants per testbed (targets, lengths, tolerances) in a
small table keyed by the testbed's name; constants still to be measured are listed in that
entry's `placeholders` and reported by the driver (and in the results JSON) until filled in.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
EVAL_DIR = "eval-test"  # a run's held-out evaluation, inside its run directory


@dataclass(frozen=True)
class Testbed:
    """A family of recipes and where its results go.

    name: what `--testbed` calls it.
    recipe_prefix: recipes are dcrl/recipes/<recipe_prefix>-<recipe>.yaml.
    results: the default `--out` (JSON, markdown, figures, claims.json).
    runs: the default `--runs` (run directories).
    group_by: the problem meta key the held-out metrics are broken down by (None: overall only).
    kinds: the values of that key (table columns, in this order).
    start_entropy: the pretrained policy's sampled-token entropy on the training prompts (nats
        per token, the first steps of a GRPO run); targets of a testbed with `relative_targets`
        are multiples of it.
    relative_targets: the experiments' target entropies are given as multiples of
        `start_entropy` (run names then read e.g. `dcpo-H1.25x-pi`).
    steps: training steps per run, the default of `--steps` (the recipes' own).
    placeholders: the constants above that are not measured yet.
    """

    name: str
    recipe_prefix: str
    results: Path
    runs: Path
    steps: int = 60
    group_by: str | None = None
    kinds: tuple[str, ...] = ()
    start_entropy: float | None = None
    relative_targets: bool = False
    placeholders: tuple[str, ...] = ()

    def recipe_path(self, recipe: str) -> Path:
        return REPO / "dcrl" / "recipes" / f"{self.recipe_prefix}-{recipe}.yaml"

    def target_value(self, target: float) -> float:
        """The target entropy (nats per token) a table's `target` stands for."""
        if not self.relative_targets:
            return target
        assert self.start_entropy is not None, f"testbed {self.name}: start_entropy is unknown"
        return round(target * self.start_entropy, 4)

    def target_label(self, target: float) -> str:
        """How a run's name spells the target: `0.15`, or `1.25x` for a relative one."""
        return f"{target}x" if self.relative_targets else str(target)


TESTBEDS = {
    # 1-3 step arithmetic chains whose re-checks can slip (dcrl/recipes/tiny-*.yaml, bench/README.md).
    "overthink": Testbed(
        name="overthink",
        recipe_prefix="tiny",
        results=REPO / "bench" / "results",
        runs=REPO / "runs" / "bench",
        start_entropy=0.175,
    ),
    # The `explore` task (dcrl/recipes/explore-*.yaml, model tiny-explore): its problems carry
    # meta["kind"], "plain" or "trap".
    "explore": Testbed(
        name="explore",
        recipe_prefix="explore",
        results=REPO / "bench" / "results" / "explore",
        runs=REPO / "runs" / "bench" / "explore",
        steps=40,  # dcrl/recipes/explore-*.yaml
        group_by="kind",
        kinds=("plain", "trap"),
        # Measured: the first 3 steps of a GRPO run of dcrl/recipes/explore-grpo.yaml (seed 1),
        # 0.123, 0.112, 0.108 nats per sampled token.
        start_entropy=0.115,
    ),
}

# The papers' code-faithful controller, and dcrl's (the recipes' own settings).
CONTROLLER_OVERRIDES = {
    "bang_bang": (
        "algorithm.controller=bang_bang",
        "algorithm.temperature_high=1.2",
        "algorithm.temperature_low=0.8",
        "algorithm.weight_max=null",
        "algorithm.initial_entropy=0.0",
        "algorithm.controller_options={}",
        "algorithm.entropy_signal=sampled_nll",
    ),
    "pi": (),
}
CONTROLLERS = tuple(CONTROLLER_OVERRIDES)


@dataclass(frozen=True)
class RunSpec:
    """One training run: a recipe (dcrl/recipes/<prefix>-<recipe>.yaml), a seed and overrides.

    target and controller describe a run that holds an entropy target (nats per token)."""

    name: str
    recipe: str
    seed: int
    overrides: tuple[str, ...] = ()
    target: float | None = None
    controller: str | None = None
    labels: dict = field(default_factory=dict, compare=False, hash=False)

    def run_dir(self, root: Path) -> Path:
        return root / f"{self.name}-seed{self.seed}"


def controlled(
    testbed: Testbed, algorithm: str, target: float, controller: str, seed: int
) -> RunSpec:
    """A run of `algorithm` holding `target` (a table's value) with `controller`."""
    value = testbed.target_value(target)
    return RunSpec(
        f"{algorithm}-H{testbed.target_label(target)}-{controller}",
        algorithm,
        seed,
        (f"algorithm.target_entropy={value}", *CONTROLLER_OVERRIDES[controller]),
        value,
        controller,
    )


# -- reading runs -------------------------------------------------------------------------------
def metrics_of(run_dir: Path) -> list[dict]:
    """The records of a run's metrics.jsonl, in order."""
    from dcrl.train.sinks import read_metrics_log

    return [record for _, record in read_metrics_log(run_dir / "metrics.jsonl")]


def eval_metrics(spec: RunSpec, root: Path) -> dict:
    """The run's held-out metrics (`dcrl.eval`'s metrics.json)."""
    return json.loads((spec.run_dir(root) / EVAL_DIR / "metrics.json").read_text())


def series(rows: list[dict], key: str) -> list[float]:
    return [r[key] for r in rows if r.get(key) is not None]


def entropy_series(rows: list[dict]) -> list[float]:
    """The policy's own sampled-token entropy per step (AEPO's tempered rows left out)."""
    from dcrl.train.sinks import policy_entropy

    return [v for v in map(policy_entropy, rows) if v is not None]


def avg_at_n(metrics: dict) -> float:
    """avg@n of a metrics dict (overall, or one kind's)."""
    return next(value for key, value in metrics.items() if key.startswith("avg@"))


def pass_at(metrics: dict, k: int = 16) -> float:
    """pass@k of a metrics dict, or pass@(largest k) when it has no k (a quick run's small n)."""
    curve = metrics["pass@k"]
    return curve.get(str(k), curve[max(curve, key=int)])


def by_kind(metrics: dict, testbed: Testbed) -> dict[str, dict]:
    """The metrics of each kind of problem ({} on a testbed without kinds)."""
    if testbed.group_by is None:
        return {}
    groups = metrics.get("by_group")
    if groups is None or groups.get("key") != testbed.group_by:
        raise ValueError(
            f"these held-out metrics are not broken down by {testbed.group_by!r}: delete the "
            f"{EVAL_DIR} folder of the run to evaluate it again"
        )
    return {kind: groups["groups"][kind] for kind in testbed.kinds if kind in groups["groups"]}


def held_out(metrics: dict, testbed: Testbed, k: int = 16) -> dict:
    """avg@n, pass@k and mean length, overall and (suffixed `_<kind>`) per kind of problem."""
    record = {
        "avg_at_n": avg_at_n(metrics),
        f"pass_at_{k}": pass_at(metrics, k),
        "length": metrics["length"]["mean"],
    }
    for kind, values in by_kind(metrics, testbed).items():
        record[f"avg_at_n_{kind}"] = avg_at_n(values)
        record[f"pass_at_{k}_{kind}"] = pass_at(values, k)
        record[f"length_{kind}"] = values["length"]["mean"]
    return record


# -- statistics ---------------------------------------------------------------------------------
def mean(values: list[float]) -> float:
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else float("nan")


def spread(values: list[float]) -> float:
    """The sample standard deviation over seeds (ddof = 1; 0 for one seed): the "±" of the
    bench's tables (bench/experiments/stats.py has the intervals)."""
    values = [v for v in values if v is not None]
    if any(math.isnan(v) for v in values):
        return float("nan")  # a seed without the value (e.g. no target): no spread either
    return statistics.stdev(values) if len(values) > 1 else 0.0


def second_half(values: list[float]) -> list[float]:
    """The steps of the run's second half (the middle step counts to it for an odd count)."""
    return values[len(values) // 2 :]


def rms_relative_error(values: list[float], target: float) -> float:
    """Root mean square over the second-half steps of (H_t − target) / target."""
    half = second_half(values)
    if not half:
        return float("nan")
    return math.sqrt(statistics.fmean(((value - target) / target) ** 2 for value in half))


def add_seed_statistics(entry: dict, with_spread: bool = True) -> None:
    """Add mean_<key> (and spread_<key>) over entry["seeds"] for each key of a seed's record."""
    seeds = list(entry["seeds"].values())
    for key in seeds[0]:
        entry[f"mean_{key}"] = mean([s.get(key) for s in seeds])
        if with_spread:
            entry[f"spread_{key}"] = spread([s.get(key) for s in seeds])


# -- tables -------------------------------------------------------------------------------------
def escape_cell(text: str) -> str:
    """Text for a markdown table cell: a literal | would end the cell."""
    return text.replace("|", "\\|")


def fmt(value: object, digits: int = 3) -> str:
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return "" if value is None else str(value)


def yes_no(value: bool | None) -> str:
    return "—" if value is None else ("yes" if value else "no")


def rms_cell(entry: dict, shown: bool) -> str:
    """A table's "RMS rel. error" cell with the bar that ends it ("" when the table has no such
    column; blank for a setting without a target)."""
    if not shown:
        return ""
    if "mean_rms_relative_error" not in entry:
        return " | "
    return f"{entry['mean_rms_relative_error']:.1%} | "


def pyplot():
    """matplotlib's pyplot, drawing to files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
