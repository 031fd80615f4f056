"""bench/experiments/stats.py: n, mean and sample SD, the t quantile, and the Welch interval of a
difference of means, against values worked out by hand (or closed forms and printed t tables)."""

from __future__ import annotations

import json
import math

import pytest

from bench.experiments.stats import (
    against_constant,
    beats,
    describe,
    interval_text,
    rounded,
    seed_values,
    t_cdf,
    t_quantile,
    welch,
)


def test_describe_uses_the_sample_standard_deviation():
    """[1, 2, 3, 6]: mean 3, squared deviations 4 + 1 + 0 + 9 = 14, sample variance 14 / 3."""
    result = describe([1.0, 2.0, None, 3.0, 6.0])
    assert result["n"] == 4
    assert result["mean"] == pytest.approx(3.0)
    assert result["sd"] == pytest.approx(math.sqrt(14 / 3))
    assert describe([0.5]) == {"n": 1, "mean": 0.5, "sd": None}
    assert describe([]) == {"n": 0, "mean": None, "sd": None}


@pytest.mark.parametrize(
    ("df", "expected"),
    [
        # df = 1: the Cauchy quantile tan(π (p − ½)) = tan(0.475 π)
        (1.0, math.tan(0.475 * math.pi)),
        # df = 2: t = (2p − 1) √(2 / (4 p (1 − p))) = 0.95 √(2 / 0.0975)
        (2.0, 0.95 * math.sqrt(2 / 0.0975)),
        # printed tables (two-sided 95%)
        (4.0, 2.7764),
        (5.0, 2.5706),
        (10.0, 2.2281),
        (30.0, 2.0423),
        (1000.0, 1.9623),
    ],
)
def test_t_quantile_975_against_closed_forms_and_tables(df, expected):
    assert t_quantile(0.975, df) == pytest.approx(expected, abs=1e-4)
    assert t_quantile(0.025, df) == pytest.approx(-expected, abs=1e-4)
    assert t_cdf(expected, df) == pytest.approx(0.975, abs=1e-5)


def test_t_cdf_is_symmetric_and_a_half_at_zero():
    for df in (1.0, 2.5, 7.3):
        assert t_cdf(0.0, df) == pytest.approx(0.5)
        assert t_cdf(1.3, df) + t_cdf(-1.3, df) == pytest.approx(1.0)
    # fractional df lies between its whole neighbours
    assert t_quantile(0.975, 4.0) > t_quantile(0.975, 4.5) > t_quantile(0.975, 5.0)


def test_welch_interval_by_hand_equal_spreads():
    """a = [3, 4, 5], b = [1, 2, 3]: means 4 and 2, both sample SDs 1, so the difference is 2 with
    standard error √(1/3 + 1/3) = √(2/3) = 0.816497 and Welch's df = (2/3)² / ((1/3)²/2 + (1/3)²/2)
    = 4; t(0.975, 4) = 2.776445, half-width 2.776445 × 0.816497 = 2.266958: [−0.266958, 4.266958].
    The interval holds 0, so "a beats b" is not met."""
    result = welch([3.0, 4.0, 5.0], [1.0, 2.0, 3.0])
    assert result["difference"] == pytest.approx(2.0)
    assert result["df"] == pytest.approx(4.0)
    assert result["interval"] == pytest.approx([-0.266958, 4.266958], abs=1e-5)
    assert not beats(result)
    assert beats(result, margin=-0.3)  # "at most 0.3 worse" is met


def test_welch_interval_by_hand_unequal_spreads():
    """a = [10, 12, 14, 16] (mean 13, sample variance 20/3), b = [1, 2, 3] (mean 2, variance 1):
    difference 11; v_a = (20/3)/4 = 5/3, v_b = 1/3, standard error √2 = 1.414214;
    df = 2² / ((5/3)²/3 + (1/3)²/2) = 4 / (25/27 + 1/18) = 4 / (53/54) = 216/53 = 4.075472.
    The interval is 11 ± t(0.975, 4.075) × √2, which lies above 0: met."""
    result = welch([10.0, 12.0, 14.0, 16.0], [1.0, 2.0, 3.0])
    assert result["difference"] == pytest.approx(11.0)
    assert result["df"] == pytest.approx(216 / 53)
    half = t_quantile(0.975, 216 / 53) * math.sqrt(2)
    assert 2.7764 * math.sqrt(2) > half > 2.5706 * math.sqrt(2)  # between df 4 and 5
    assert result["interval"] == pytest.approx([11 - half, 11 + half])
    assert beats(result)
    assert not beats(result, margin=11.0)


def test_a_tie_and_a_single_seed_are_not_met():
    tie = welch([0.5, 0.6, 0.7], [0.5, 0.6, 0.7])
    assert tie["difference"] == pytest.approx(0.0)
    assert tie["interval"][0] < 0 < tie["interval"][1]
    assert not beats(tie)
    one = welch([0.9], [0.1, 0.2])
    assert one["difference"] == pytest.approx(0.75)
    assert one["interval"] is None and not beats(one)
    assert interval_text(one) == "+0.750 [n < 2]"
    # no spread on either side: the interval is the difference itself
    flat = welch([1.0, 1.0], [0.0, 0.0])
    assert flat["interval"] == [1.0, 1.0] and beats(flat)


def test_rounded_and_seed_values():
    result = welch([3.0, 4.0, 5.0], [1.0, 2.0, 3.0])
    row = rounded(result)
    assert row["n"] == [3, 3] and row["mean"] == [4.0, 2.0] and row["sd"] == [1.0, 1.0]
    assert row["interval_95"] == [-0.267, 4.267]
    assert interval_text(result) == "+2.000 [-0.267, +4.267]"
    seeds = {"2": {"x": 0.2, "by_kind": {"trap": {"x": 0.1}}}, "10": {"x": 0.5}, "1": {"x": 0.3}}
    assert seed_values(seeds, "x") == [0.3, 0.2, 0.5]
    assert seed_values(seeds, "x", "by_kind", "trap") == [None, 0.1, None]


def test_reclaim_rewrites_verdicts_and_sample_sds_from_stored_results(tmp_path):
    """An exploration result stored with the population SD and the old ">=" verdict: --reclaim
    recomputes the ± as the sample SD and the verdict by the interval rule (a tie is a miss),
    and the README blocks count the rows of claims.json."""
    from bench.claims_readme import bench_block, brief, readme_block
    from bench.reproduce import main

    def curve(avg: float) -> dict:
        return {"avg_at_n": avg, "pass_at_k": {"1": avg, "16": 0.9}}

    def entry(values: list[float]) -> dict:
        return {
            "seeds": {str(i + 1): curve(v) for i, v in enumerate(values)},
            "avg_at_n": sum(values) / len(values),
            "avg_at_n_spread": 0.5,  # stale: recomputed
            "pass_at_k": {"1": 0.5, "16": 0.9},
            "pass_at_k_spread": {"1": 0.0, "16": 0.0},
        }

    summary = {
        "curves": {
            "pretrained": curve(0.4),
            "grpo": entry([0.5, 0.6]),
            "dcpo": entry([0.5, 0.6]),
            "aepo": entry([0.5, 0.6]),
        },
        "goals": {
            name: {
                "k": "16",
                "target": target,
                f"{name}_avg_at_n": 0.55,
                "grpo_avg_at_n": 0.55,
                f"{name}_pass_at_k": 0.9,
                "grpo_pass_at_k": 0.9,
                "goal_met": True,
            }
            for name, target in (("dcpo", "0.1"), ("aepo", "0.06"))
        },
    }
    record = {"command": "python bench/reproduce.py --experiment exploration", "summary": summary}
    (tmp_path / "exploration.json").write_text(json.dumps(record))
    argv = ["--reclaim", "--experiment", "exploration", "--out", str(tmp_path)]
    argv += ["--runs", str(tmp_path / "runs")]
    assert main(argv) == 0
    rows = json.loads((tmp_path / "claims.json").read_text())
    assert [r["met"] for r in rows] == [False, False]
    assert rows[0]["command"] == record["command"]
    assert rows[0]["value"]["avg_at_n"]["sd"] == [pytest.approx(0.0707, abs=1e-4)] * 2
    stored = json.loads((tmp_path / "exploration.json").read_text())
    assert stored["summary"]["curves"]["grpo"]["avg_at_n_spread"] == pytest.approx(math.sqrt(0.005))
    assert stored["summary"]["goals"]["dcpo"]["goal_met"] is False  # the stored verdict too
    assert (
        "(verdicts: python bench/reproduce.py --reclaim"
        in (tmp_path / "exploration.md").read_text()
    )
    block = bench_block(rows, [], [])
    assert block.startswith("**0 of 2 goals met**")
    assert "missed (seeds 1, 2)" in block and "avg@n +0.000 [" in block
    assert readme_block(rows, rows[:1], []).startswith("Goals met on `tiny-explore`: 0 of 2 on")
    assert brief({"difference": 0.1, "interval_95": None}) == "+0.100 (n < 2)"
    judged = {"difference": 0.1, "interval_95": [0.05, 0.15]}
    baselines_value = {"judged": dict.fromkeys(("avg_at_n", "pass_at_16", "avg_at_n_trap"), judged)}
    baselines_value["all"] = baselines_value["judged"]
    assert (
        brief(baselines_value) == "avg@n +0.100 [+0.050, +0.150]; pass@16 +0.100 [+0.050, +0.150]"
    )


def test_claims_cells_state_each_sides_mean_sd_and_n():
    """A claims-table cell carries, beside the difference and its interval, both sides' means,
    sample SDs and seed counts as claims.json stores them (bench.experiments.stats.rounded); a
    side measured once has no SD; a value without them keeps the bare interval."""
    from bench.claims_readme import brief

    value = rounded(welch([0.5, 0.6, 0.7], [0.4, 0.5]))
    # difference 0.6 − 0.45 = 0.15; SDs 0.1 and 0.070711
    assert brief(value).endswith("(0.600 ± 0.100 (n 3) vs 0.450 ± 0.071 (n 2))")
    assert brief(value).startswith("+0.150 [")
    constant = {"n": [1, 3], "mean": [0.0, -0.07], "sd": [None, 0.02]}
    constant |= {"difference": 0.07, "interval_95": [0.02, 0.12]}
    assert brief(constant) == "+0.070 [+0.020, +0.120] (0.000 (n 1) vs -0.070 ± 0.020 (n 3))"
    both = brief({"avg_at_n": value, "pass_at_16": {"difference": 0.1, "interval_95": None}})
    assert both.startswith("avg@n +0.150 [") and "(n 2)); pass@16 +0.100 (n < 2)" in both


def test_readme_names_the_baselines_that_beat_grpo_and_the_seeds_new_to_the_bench():
    from bench.claims_readme import baselines_block

    def row(method: str, met: bool) -> dict:
        seeds = {"chose": [1, 2, 3], "used": [4, 5, 6, 7, 8], "judged": True}
        claim = f"baselines: {method} beats GRPO on the held-out split"
        return {"claim": claim, "met": met, "seeds": seeds}

    rows = [row("DCPO (dcrl)", True), row("Clip-Cov", False)]
    rows.append({"claim": "baselines: DCPO (papers) beats DCPO (papers), ρ ≡ 1 (ablation)"})
    assert baselines_block(rows) == (
        "In the papers' comparison table (bench/README.md, \"The papers' comparison table\"), "
        "judged on seeds 4, 5, 6, 7, 8 (7, 8 new to the bench), 1 of its 2 methods beats GRPO "
        "held out by the Welch 95% interval on both avg@32 and pass@16: DCPO (dcrl)."
    )
    assert baselines_block([row("Clip-Cov", False)]).endswith(
        "0 of its 1 methods beat GRPO held "
        "out by the Welch 95% interval on both avg@32 and pass@16."
    )
    assert baselines_block([]) is None


def test_against_a_constant_by_hand():
    """[0.5, 0.6, 0.7] against 0.9 measured once: difference 0.3, sample SD 0.1, standard error
    0.1/√3 = 0.057735, df 2, t(0.975, 2) = 4.302653: half-width 0.248414, [0.051586, 0.548414]."""
    result = against_constant([0.5, 0.6, 0.7], 0.9)
    assert result["difference"] == pytest.approx(0.3)
    assert result["df"] == 2
    assert result["interval"] == pytest.approx([0.051586, 0.548414], abs=1e-5)
    assert beats(result)
    assert not beats(against_constant([0.5, 0.9, 1.0], 0.9))  # the interval holds 0
