"""The claims summary in README.md and bench/README.md, written from the claims.json files.

    python bench/claims_readme.py

Reads bench/results/explore/claims.json (seeds 1-3, which chose the settings),
bench/results/explore/seeds-4-5-6/claims.json (seeds 4-6, which judge them) and
bench/results/claims.json (the overthink testbed), and writes the `claims` block of
bench/README.md (the count and a table of every row) and the `claims-count` block of README.md
(the counts), and the tables of bench/README.md's sections (blocks `explore-<experiment>`,
`overthink-<experiment>` and `baselines`) from results/explore/<experiment>.md and
results/<experiment>.md, so that no one retypes a count, a table or
a verdict.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
CHOSE = RESULTS / "explore" / "claims.json"
JUDGED = RESULTS / "explore" / "seeds-4-5-6" / "claims.json"
# The control range's goal re-run on a seed the bench never used (DCPO's range settings only).
UNSEEN_CONTROL = RESULTS / "explore" / "seed-9" / "claims.json"
OVERTHINK = RESULTS / "claims.json"


def load(path: Path) -> list[dict]:
    return json.loads(path.read_text()) if path.is_file() else []


def goals(rows: list[dict]) -> list[dict]:
    """The rows that are goals: not the points of a map (the regime experiment's, kind "map"),
    which bench/README.md and README.md show in their own tables."""
    return [r for r in rows if r.get("kind") != "map"]


def count(rows: list[dict]) -> tuple[int, int]:
    rows = goals(rows)
    return sum(bool(r["met"]) for r in rows), len(rows)


def interval(value: dict, digits: int = 3) -> str | None:
    """`+0.103 [+0.021, +0.185]` of a stats.rounded() value, None for other values."""
    if not isinstance(value, dict) or "difference" not in value:
        return None
    if value["difference"] is None:
        return "n/a"
    text = f"{value['difference']:+.{digits}f}"
    if value.get("interval_95") is None:
        return text + " (n < 2)"
    low, high = value["interval_95"]
    return f"{text} [{low:+.{digits}f}, {high:+.{digits}f}]"


def sides(value: dict, digits: int = 3) -> str | None:
    """`0.634 ± 0.065 (n 3) vs 0.531 ± 0.021 (n 3)`: the two means a difference is of, each with
    its sample SD and number of seeds (a side measured once, n 1, has no SD); None when the value
    does not store them."""
    n, mean, sd = value.get("n"), value.get("mean"), value.get("sd")
    if not (isinstance(n, list) and isinstance(mean, list) and len(n) == len(mean) == 2):
        return None
    sd = sd if isinstance(sd, list) and len(sd) == 2 else [None, None]
    if None in mean:
        return None
    return " vs ".join(
        f"{m:.{digits}f}" + (f" ± {s:.{digits}f}" if s is not None else "") + f" (n {k})"
        for k, m, s in zip(n, mean, sd, strict=True)
    )


def stated(value: dict) -> str | None:
    """interval() followed by sides() in parentheses where the value stores them."""
    text = interval(value)
    if text is None:
        return None
    both = sides(value)
    return text if both is None else f"{text} ({both})"


NAMES = {
    "avg_at_n": "avg@n",
    "pass_at_16": "pass@16",
    "length_margin": "length",
    "accuracy_difference": "accuracy",
    "length_difference": "length",
    "accuracy_vs_dcpo": "acc. vs DCPO",
    "accuracy_vs_icr": "acc. vs ICR",
}


def brief(value: object) -> str:
    """A row's value in a table cell: its differences with their 95% intervals and the two
    sides' means, sample SDs and n where it has them, else its numbers as stored."""
    if isinstance(value, dict) and "judged" in value and "all" in value:  # the baselines rows
        return brief({k: value["judged"][k] for k in ("avg_at_n", "pass_at_16")})
    text = stated(value) if isinstance(value, dict) else None
    if text is not None:
        return text
    if isinstance(value, dict):
        parts = [f"{NAMES.get(k, k)} {stated(v)}" for k, v in value.items() if interval(v)]
        if parts:
            return "; ".join(parts)
    return json.dumps(value, separators=(", ", ": "))


def verdict(row: dict | None) -> str:
    """ "**met**" or "missed", with the seeds the verdict is on when the row says."""
    if row is None:
        return "not run"
    text = "**met**" if row["met"] else "missed"
    used = (row.get("seeds") or {}).get("used")
    if used is not None:
        text += f" (seeds {', '.join(map(str, used)) or 'none yet'})"
    return text


def bench_block(chose: list[dict], judged: list[dict], overthink: list[dict]) -> str:
    met, total = count(chose)
    judged_met, judged_total = count(judged)
    lines = [
        f"**{met} of {total} goals met** in `results/explore/claims.json` (the default seeds "
        f"1–3; the baselines' and the control range's rows are judged on the seeds their "
        f"verdicts name), **{judged_met} of {judged_total}** "
        f"on seeds 4–6 (`results/explore/seeds-4-5-6/claims.json`); on `tiny-overthink` "
        f"{count(overthink)[0]} of {count(overthink)[1]}. The settings the bench chose (the "
        "best targets, the trap share, the controller's gains) were chosen on seeds 1–3, so "
        'their verdicts there are in-sample; seeds 4–6 test them. A "beats" goal is met only '
        "when the Welch 95% interval of the difference of the means over seeds lies above 0 (or "
        "above the goal's margin); a value reads difference [95% interval] (the first side's "
        "mean ± sample SD (n seeds) vs the second's; a side measured once, such as the "
        "pretrained policy or a fixed 0, has n 1 and no SD).",
        "",
        "| claim | goal | verdict | value | verdict, seeds 4–6 | value, seeds 4–6 |",
        "|---|---|---|---|---|---|",
    ]
    by_claim = {r["claim"]: r for r in judged}
    for row in goals(chose):
        other = by_claim.get(row["claim"])
        cells = [
            row["claim"],
            row["goal"],
            verdict(row),
            brief(row["value"]),
            verdict(other),
            "" if other is None else brief(other["value"]),
        ]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def readme_block(chose: list[dict], judged: list[dict], overthink: list[dict]) -> str:
    met, total = count(chose)
    judged_met, judged_total = count(judged)
    over_met, over_total = count(overthink)
    return (
        f"Goals met on `tiny-explore`: {met} of {total} on seeds 1–3, {judged_met} of "
        f"{judged_total} on seeds 4–6 (the seeds that test the settings chosen on 1–3); on "
        f'`tiny-overthink` {over_met} of {over_total}. A "beats" goal is met only when the '
        "Welch 95% interval of the difference over seeds excludes 0; every row, with its n, "
        "means, sample SDs and interval, is in `bench/results/explore/claims.json` and the table "
        "in [bench/README.md](bench/README.md#where-the-claims-stand)."
    )


def regime_block(rows: list[dict]) -> str | None:
    """README.md's map of DCPO's and AEPO's gain over GRPO against the training trap share,
    from the regime experiment's rows of claims.json (None when it has not run)."""
    points = [r for r in rows if r.get("kind") == "map" and r["claim"].startswith("regime:")]
    if not points:
        return None
    cells: dict[tuple[str, str], dict[str, str]] = {}
    for row in points:
        # "regime: <method> vs GRPO at training trap share <s>, held out at <mix>"
        head, mix = row["claim"][len("regime: ") :].rsplit(", held out at ", 1)
        method, share = head.split(" vs GRPO at training trap share ")
        value = row["value"]
        cells.setdefault((share, method), {})[mix] = f"{interval(value)} ({value['verdict']})"
    seeds = sorted({s for r in points for s in r["seeds"]["used"]})
    lines = [
        "| training trap share | method | avg@32 − GRPO's, held out at 50/50 | at the training mix |",
        "|---|---|---|---|",
    ]
    for (share, method), by_mix in sorted(cells.items(), key=lambda c: (float(c[0][0]), c[0][1])):
        lines.append(
            f"| {share} | {method} | {by_mix.get('50/50', '')} | {by_mix.get('training mix', '')} |"
        )
    lines += [
        "",
        f"Seeds {', '.join(map(str, seeds))}; difference [Welch 95% interval] (gain: the interval "
        "above 0, loss: below 0). Made by `python bench/reproduce.py --experiment regime --seeds "
        "4 5 6`; the full table is bench/results/explore/regime.md.",
    ]
    return "\n".join(lines)


def _algorithm_of(row: dict) -> str:
    """DCPO of "control range: dcpo holds ..." or "control range: dcpo's range settings ..."."""
    return row["claim"][len("control range: ") :].split(" ", 1)[0].removesuffix("'s").upper()


def held_line(row: dict) -> str:
    """A control range goal row in words: where it held on every seed, the largest seed's RMS
    per target, the verdict and which seeds chose and which judged."""
    value, seeds = row["value"], row.get("seeds", {})
    largest = ", ".join(
        f"{factor}×: {rms:.1%}" for factor, rms in value["largest_rms_per_target"].items()
    )
    held = ", ".join(f"{f}×" for f in value["targets_held"]) or "none"
    chose = seeds.get("chose", [])
    return (
        f"held within 10% RMS on every seed at {held} "
        f"({len(value['targets_held'])} of {len(value['largest_rms_per_target'])} targets; "
        f"the largest seed's RMS per target: {largest}); goal "
        f"{'**met**' if row['met'] else 'missed'} (seeds "
        f"{', '.join(map(str, seeds.get('used', [])))}, settings chosen on "
        f"seed{'s' if len(chose) > 1 else ''} {', '.join(map(str, chose))})"
    )


def control_range_block(rows: list[dict], unseen: list[dict] = ()) -> str | None:
    """README.md's sentence per algorithm on holding five targets from 0.6× to 1.4× the start,
    from the control_range experiment's rows of claims.json (None when it has not run), and the
    same goal on seeds new to the bench (`unseen`: the rows of UNSEEN_CONTROL, if run)."""
    mine = [r for r in goals(rows) if r["claim"].startswith("control range:")]
    if not mine:
        return None
    lines = []
    for row in mine:
        algorithm, value = _algorithm_of(row), row["value"]
        if "largest_rms_per_target" not in value:  # a comparison with the papers' bang-bang
            compared = "; ".join(f"at {key}: {stated(v)}" for key, v in value.items())
            lines.append(
                f"- {algorithm} against the papers' bang-bang at the same targets (its RMS error "
                f"minus the range settings'): {compared}; tighter by the interval at every one: "
                f"{'**met**' if row['met'] else 'missed'}."
            )
            continue
        lines.append(f"- {algorithm}: {held_line(row)}.")
    current = {  # the settings each algorithm's goal row above was made with
        _algorithm_of(r): r.get("settings") for r in mine if "largest_rms_per_target" in r["value"]
    }
    for row in goals(list(unseen)):
        if not row["claim"].startswith("control range:"):
            continue
        if "largest_rms_per_target" not in row["value"]:
            continue
        used = row.get("seeds", {}).get("used", [])
        new = bool(used) and not set(used) & BENCH_SEEDS
        stale = row.get("settings") != current.get(_algorithm_of(row))
        lines.append(
            f"- {_algorithm_of(row)} on seed{'s' if len(used) > 1 else ''} "
            f"{', '.join(map(str, used))}"
            + (" (new to the bench)" if new else "")
            + f", `{row['command']}`: "
            + (
                "made with earlier range settings than the rows above, so it does not judge "
                "them (the command re-runs it with the current ones); it "
                if stale
                else ""
            )
            + f"{held_line(row)}."
        )
    lines.append(
        "\nMade by `python bench/reproduce.py --experiment control_range --seeds 4 5 6`; the table "
        'and the probes that chose the settings are in bench/README.md, "Control over a range".'
    )
    return "\n".join(lines)


# Seeds the bench's experiments use by default or for their held-out check (1-3, 4-6); a
# verdict on any other seed is on seeds new to the bench.
BENCH_SEEDS = frozenset(range(1, 7))


BEATS_GRPO = " beats GRPO on the held-out split"  # the baselines' rows against GRPO end so


def baselines_block(rows: list[dict]) -> str | None:
    """README.md's sentence on the papers' comparison table: which of its methods beat GRPO by
    the interval, on which seeds (None when the baselines experiment has not run)."""
    mine = [
        r
        for r in goals(rows)
        if r["claim"].startswith("baselines: ") and r["claim"].endswith(BEATS_GRPO)
    ]
    if not mine:
        return None
    used = sorted({s for r in mine for s in (r.get("seeds") or {}).get("used", [])})
    new = [s for s in used if s not in BENCH_SEEDS]
    winners = [r["claim"][len("baselines: ") : -len(BEATS_GRPO)] for r in mine if r["met"]]
    return (
        f"In the papers' comparison table (bench/README.md, \"The papers' comparison table\"), "
        f"judged on seeds {', '.join(map(str, used))}"
        + (f" ({', '.join(map(str, new))} new to the bench)" if new else "")
        + f", {len(winners)} of its {len(mine)} methods "
        + ("beats" if len(winners) == 1 else "beat")
        + " GRPO held out by the Welch 95% "
        "interval on both avg@32 and pass@16" + (f": {', '.join(winners)}." if winners else ".")
    )


def main() -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from readme_blocks import write_block

    chose, judged, overthink = load(CHOSE), load(JUDGED), load(OVERTHINK)
    write_block(REPO / "bench" / "README.md", "claims", bench_block(chose, judged, overthink))
    write_block(REPO / "README.md", "claims-count", readme_block(chose, judged, overthink))
    regime = regime_block(chose)
    if regime is not None:
        write_block(REPO / "README.md", "regime", regime)
    baselines = baselines_block(chose)
    if baselines is not None:
        write_block(REPO / "README.md", "baselines-verdict", baselines)
    control = control_range_block(chose, load(UNSEEN_CONTROL))
    if control is not None:
        write_block(REPO / "README.md", "control-range", control)
    named_only = ("baselines", "regime", "control_range")
    for name in ("entropy", "sweep", "exploration", "compression", "combined", *named_only):
        table = RESULTS / "explore" / f"{name}.md"
        if table.is_file():
            block = name if name in named_only else f"explore-{name}"
            write_block(REPO / "bench" / "README.md", block, table.read_text())
        table = RESULTS / f"{name}.md"  # the overthink testbed's
        if name not in named_only and table.is_file():
            write_block(REPO / "bench" / "README.md", f"overthink-{name}", table.read_text())
    print(f"claims: {count(chose)} (seeds 1-3), {count(judged)} (seeds 4-6)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
