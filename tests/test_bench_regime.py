"""The regime bench experiment (issue 27: the gain over GRPO against the training trap share) on
synthetic per-seed records (no training): the runs it asks for, the training-mix accuracy by
hand, the verdicts and the table."""

from __future__ import annotations

import pytest

from bench.experiments import ALL, EXPERIMENTS, NAMED_ONLY, baselines, regime
from bench.experiments.common import TESTBEDS

EXPLORE = TESTBEDS["explore"]


def test_runs_at_the_recipe_share_are_the_baselines_runs_and_the_others_load():
    from dcrl.train.config import load_run_config

    assert "regime" in NAMED_ONLY and "regime" in ALL and "regime" not in EXPERIMENTS
    specs = regime.specs([4], EXPLORE)
    settings = regime.SETTINGS["explore"]
    assert len(specs) == len(settings.shares) * len(settings.methods)
    baseline_runs = {m.run(EXPLORE, 4) for m in baselines.SETTINGS["explore"].methods}
    at_recipe = [s for s in specs if "traps" not in s.name]
    assert {s.name for s in at_recipe} == {"grpo", "dcpo-H0.1-pi", "aepo-H0.06-pi"}
    assert set(at_recipe) <= baseline_runs  # same names, same overrides: reused, not retrained
    for spec in specs:
        config = load_run_config(EXPLORE.recipe_path(spec.recipe), list(spec.overrides))
        share = float(spec.name.split("traps")[1]) if "traps" in spec.name else 0.1
        assert config.data.task_options["trap_share"] == share
        assert config.train.keep_checkpoints == 0


def test_training_mix_by_hand():
    record = {"avg_at_n_plain": 0.9, "avg_at_n_trap": 0.3}
    assert regime.training_mix(record, 0.0) == pytest.approx(0.9)
    assert regime.training_mix(record, 0.2) == pytest.approx(0.8 * 0.9 + 0.2 * 0.3)
    assert regime.training_mix({"avg_at_n_plain": 0.9}, 0.2) is None


def synthetic() -> dict:
    """GRPO, DCPO and AEPO at two shares over three seeds: DCPO clearly ahead at 0.1 (the
    interval above 0), AEPO clearly behind at 0.35, everything else a tie."""

    def seeds(values):
        return {
            str(seed): {"avg_at_n": v, "avg_at_n_mix": v - 0.01}
            for seed, v in zip((4, 5, 6), values, strict=True)
        }

    return {
        "chose": [1, 2, 3],
        "reference": "GRPO",
        "points": {
            "0.1": {
                "GRPO": {"seeds": seeds([0.50, 0.52, 0.51])},
                "DCPO (dcrl)": {"seeds": seeds([0.60, 0.61, 0.62])},
                "AEPO (dcrl)": {"seeds": seeds([0.48, 0.53, 0.52])},
            },
            "0.35": {
                "GRPO": {"seeds": seeds([0.70, 0.71, 0.72])},
                "DCPO (dcrl)": {"seeds": seeds([0.66, 0.74, 0.71])},
                "AEPO (dcrl)": {"seeds": seeds([0.60, 0.61, 0.60])},
            },
        },
    }


def test_verdicts_follow_the_interval_and_every_point_is_a_claim():
    summary = synthetic()
    rows = regime.comparisons(summary)
    assert regime.verdict(rows["0.1"]["DCPO (dcrl)"]["avg_at_n"]) == "gain"
    assert rows["0.1"]["DCPO (dcrl)"]["avg_at_n"]["difference"] == pytest.approx(0.10)
    assert regime.verdict(rows["0.35"]["AEPO (dcrl)"]["avg_at_n"]) == "loss"
    assert regime.verdict(rows["0.1"]["AEPO (dcrl)"]["avg_at_n"]) == "neither"
    assert regime.verdict(rows["0.35"]["DCPO (dcrl)"]["avg_at_n_mix"]) == "neither"
    claims = regime.claims(summary, EXPLORE)
    assert len(claims) == 2 * 2 * 2  # shares × methods × (50/50, training mix)
    met = [c["claim"] for c in claims if c["met"]]
    assert met == [
        "regime: DCPO (dcrl) vs GRPO at training trap share 0.1, held out at 50/50",
        "regime: DCPO (dcrl) vs GRPO at training trap share 0.1, held out at training mix",
    ]
    assert all(c["seeds"]["judged"] for c in claims)  # seeds 4-6 chose nothing
    table = regime.markdown(summary, EXPLORE)
    assert "| 0.35 | AEPO (dcrl) | -0.107 [" in table and "| loss |" in table
    assert "judged on seeds [4, 5, 6]" in table


def test_map_points_are_not_counted_as_goals_and_get_their_own_readme_table():
    from bench.claims_readme import bench_block, count, regime_block

    claims = regime.claims(synthetic(), EXPLORE)
    goal = {"claim": "sweep: something", "goal": "g", "value": 1, "met": False}
    assert count([goal, *claims]) == (0, 1)  # two map points are "gain", neither a goal
    assert "regime:" not in bench_block([goal, *claims], [], [])
    table = regime_block([goal, *claims])
    assert table.count("\n| 0.") == 4  # two shares × two methods, 0.1 first
    assert table.index("| 0.1 |") < table.index("| 0.35 |")
    assert "| 0.1 | DCPO (dcrl) | +0.100 [" in table and "(gain)" in table
    assert "(loss)" in table and "Seeds 4, 5, 6" in table
    assert regime_block([goal]) is None
