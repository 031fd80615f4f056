"""The baselines bench experiment (issue 27) on synthetic runs (no training), and the `fixed`
entropy controller its "T fixed" ablation runs with."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.experiments import ALL, EXPERIMENTS, NAMED_ONLY, baselines
from bench.experiments.common import EVAL_DIR, TESTBEDS, RunSpec
from bench.experiments.stats import welch
from bench.reproduce import main
from dcrl.core.control import make_controller

EXPLORE = TESTBEDS["explore"]


def test_fixed_controller_keeps_its_temperature_and_its_state():
    controller = make_controller("fixed", target_entropy=0.1, temperature_max=1.2)
    for entropy in (0.0, 0.05, 0.5):
        controller.update(entropy)
        decision = controller.decide()
        assert decision.temperature == 1.2
        assert decision.entropy_gap == pytest.approx(0.1 - entropy)  # α still sees the gap
    cold = make_controller("fixed", target_entropy=0.1, temperature=0.9)
    cold.update(0.01)
    assert cold.decide().temperature == 0.9
    state = json.loads(json.dumps(controller.state_dict()))
    rebuilt = make_controller(state["name"], **state["config"])
    rebuilt.load_state_dict(state)
    assert rebuilt.decide() == controller.decide()
    with pytest.raises(ValueError, match="temperature must be > 0"):
        make_controller("fixed", target_entropy=0.1, temperature=0.0)


def test_fixed_controller_with_a_weight_is_an_open_loop_push_dcpo_reads():
    """controller_options.weight fixes the weight every step, whatever the entropy: DCPO's α is
    then a/(1 + a), a = w·cap/p, by hand w = 3, cap 0.1, p = 3/4 correct → a = 0.4, α = 2/7,
    the same far above and far below the target. Without it the weight stays the algorithm's
    (None); a negative weight is refused by name; the weight survives a checkpoint."""
    import torch

    from dcrl.core.regularizers import dcpo_alpha

    pushed = make_controller("fixed", target_entropy=0.1, temperature=2.0, weight=3.0)
    correct = torch.tensor([1.0, 1.0, 1.0, 0.0])
    for entropy in (0.01, 0.5):
        pushed.update(entropy)
        decision = pushed.decide()
        assert (decision.temperature, decision.weight) == (2.0, 3.0)
        alpha = dcpo_alpha(
            decision.target_entropy, decision.previous_entropy, correct, 0.1, weight=decision.weight
        )
        assert alpha == pytest.approx(2.0 / 7.0)
    assert make_controller("fixed", target_entropy=0.1).decide().weight is None
    assert "weight" not in make_controller("fixed", target_entropy=0.1).config()
    state = json.loads(json.dumps(pushed.state_dict()))
    rebuilt = make_controller(state["name"], **state["config"])
    rebuilt.load_state_dict(state)
    assert rebuilt.decide() == pushed.decide()
    with pytest.raises(ValueError, match="weight must be >= 0"):
        make_controller("fixed", target_entropy=0.1, weight=-1.0)


def test_the_fixed_ablation_loads_from_the_recipe():
    from dcrl.train.config import load_run_config

    method = next(m for m in baselines.SETTINGS["explore"].methods if "fixed" in m.label)
    spec = method.run(EXPLORE, 1)
    config = load_run_config(EXPLORE.recipe_path(spec.recipe), list(spec.overrides))
    controller = config.algorithm.make_controller()
    controller.update(0.5)  # far above the target: bang-bang would cool, fixed does not
    assert (config.algorithm.controller, controller.decide().temperature) == ("fixed", 1.2)
    assert config.algorithm.target_entropy == 0.1 and config.train.keep_checkpoints == 0


def test_every_method_loads_and_the_runs_go_seed_by_seed():
    from dcrl.train.config import load_run_config

    specs = baselines.specs([1, 2], EXPLORE)
    methods = baselines.SETTINGS["explore"].methods
    assert len(specs) == 2 * len(methods) and len({s.name for s in specs}) == len(methods)
    assert [s.seed for s in specs] == [1] * len(methods) + [2] * len(methods)
    names = {m.label: m.run(EXPLORE, 1).name for m in methods}
    # dcrl's runs are exploration's (the same settings, so the same run directories)
    assert names["DCPO (dcrl)"] == "dcpo-H0.1-pi" and names["AEPO (dcrl)"] == "aepo-H0.06-pi"
    assert names["DCPO (papers)"] == "dcpo-H0.1-bang_bang"
    algorithms = {}
    for spec in specs[: len(methods)]:
        config = load_run_config(EXPLORE.recipe_path(spec.recipe), list(spec.overrides))
        algorithms[spec.name] = config.algorithm
    assert algorithms["dcpo-H0.1-bang_bang"].controller == "bang_bang"
    assert algorithms["dcpo-H0.1-bang_bang"].temperature_high == 1.2
    assert algorithms["dcpo-H0.1-bang_bang-norho"].use_rho is False
    assert algorithms["entropy_reg"].name == "entropy_reg"
    assert algorithms["clip_higher"].clip_high == 0.28
    assert {a.name for a in algorithms.values()} >= {"clip_cov", "kl_cov", "entropy_adv"}
    # named only: `--experiment all` does not grow
    assert "baselines" in NAMED_ONLY and "baselines" not in EXPERIMENTS and "baselines" in ALL


def held_out(avg: float, pass16: float, trap_avg: float) -> dict:
    def part(a: float, p: float) -> dict:
        return {"avg@32": a, "pass@k": {"1": a, "16": p}, "length": {"mean": 20.0}}

    plain_avg = 2 * avg - trap_avg
    return {
        **part(avg, pass16),
        "by_group": {
            "key": "kind",
            "groups": {"plain": part(plain_avg, 1.0), "trap": part(trap_avg, pass16)},
        },
    }


def write_run(root: Path, spec: RunSpec, metrics: dict, responses: dict[str, str]) -> None:
    folder = spec.run_dir(root) / EVAL_DIR
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.json").write_text(json.dumps(metrics))
    lines = [{"problem_id": pid, "response": text} for pid, text in responses.items()]
    (folder / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    probe = spec.run_dir(root) / baselines.PROBE_DIR / "step40"
    probe.mkdir(parents=True)
    (probe / "metrics.json").write_text("{}")
    (probe / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    step = spec.run_dir(root) / "checkpoints" / "step_000040"
    step.mkdir(parents=True)


def test_summary_table_and_claims_judge_on_the_seeds_that_did_not_choose(tmp_path):
    """GRPO at 0.50 ± noise on every seed; DCPO (dcrl) clearly above on seeds 4-6 too; Entropy-Reg
    above on seeds 1-3 only (the seeds that chose): judged on 4-6 it is a miss."""
    traps = baselines.trap_problems(EXPLORE, 2)
    trap_ids = [p.id for p in traps]
    seeds = [1, 2, 3, 4, 5, 6]
    chosen = {"grpo", "DCPO (dcrl)", "Entropy-Reg"}
    specs = [
        s
        for s in baselines.specs(seeds, EXPLORE)
        if baselines.method_of(s, EXPLORE).label in chosen
    ]
    noise = {1: 0.0, 2: 0.01, 3: -0.01, 4: 0.005, 5: -0.005, 6: 0.0}
    for spec in specs:
        label = baselines.method_of(spec, EXPLORE).label
        gain = {"grpo": 0.0, "DCPO (dcrl)": 0.1, "Entropy-Reg": 0.1 if spec.seed <= 3 else 0.0}
        avg = 0.5 + gain[label] + noise[spec.seed]
        decomposing = {"grpo": "f72#72", "DCPO (dcrl)": "d7+5=12,40+30=70,70+12=82#82"}
        text = decomposing.get(label, "f72#72")
        write_run(
            tmp_path, spec, held_out(avg, avg + 0.3, avg - 0.3), dict.fromkeys(trap_ids, text)
        )
    summary = baselines.summarize(specs, tmp_path, EXPLORE, None)
    dcpo = summary["methods"]["DCPO (dcrl)"]
    assert dcpo["seeds"][4]["decompose_share_trap"] == 1.0
    assert summary["methods"]["grpo"]["seeds"][4]["decompose_share_trap"] == 0.0
    assert dcpo["seeds"][4]["decompose_over_training"] == {"40": 1.0}
    assert baselines.judged_seeds(summary) == [4, 5, 6]
    rows = {r["claim"]: r for r in baselines.claims(summary, EXPLORE)}
    dcpo_row = rows["baselines: DCPO (dcrl) beats GRPO on the held-out split"]
    reg_row = rows["baselines: Entropy-Reg beats GRPO on the held-out split"]
    assert dcpo_row["met"] is True and reg_row["met"] is False
    assert dcpo_row["seeds"] == {"chose": [1, 2, 3], "used": [4, 5, 6], "judged": True}
    judged = dcpo_row["value"]["judged"]["avg_at_n"]
    expected = welch([0.605, 0.595, 0.6], [0.505, 0.495, 0.5])
    assert judged["n"] == [3, 3] and judged["difference"] == pytest.approx(0.1)
    assert judged["interval_95"] == pytest.approx(expected["interval"], abs=1e-4)
    assert judged["sd"][0] == pytest.approx(0.005)  # sample SD of 0.605, 0.595, 0.600
    assert reg_row["value"]["all"]["avg_at_n"]["n"] == [6, 6]
    table = baselines.markdown(summary, EXPLORE)
    # avg@32 of DCPO over seeds 1-6: 0.600, 0.610, 0.590, 0.605, 0.595, 0.600, sample SD
    # √(0.00025 / 5) = 0.00707
    assert (
        "| DCPO (dcrl) | PI on T 0.8-2 and weight ≤ 10×, target 0.10 | 6 | 0.600 ± 0.007 |" in table
    )
    assert "Difference to GRPO (the judging seeds [4, 5, 6])" in table
    assert "| Entropy-Reg | " in table


def test_claims_without_judging_seeds_are_not_met(tmp_path):
    specs = [s for s in baselines.specs([1, 2], EXPLORE) if s.name in ("grpo", "dcpo-H0.1-pi")]
    for spec in specs:
        avg = 0.9 if spec.name != "grpo" else 0.1 + 0.01 * spec.seed
        write_run(tmp_path, spec, held_out(avg, avg, avg / 2), {})
    summary = baselines.summarize(specs, tmp_path, EXPLORE, None)
    (row,) = baselines.claims(summary, EXPLORE)
    assert row["seeds"] == {"chose": [1, 2, 3], "used": [], "judged": False}
    assert row["met"] is False
    assert row["value"]["all"]["avg_at_n"]["interval_95"][0] > 0  # in-sample, it would pass


def test_dry_run_lists_the_methods_of_each_seed(tmp_path, capsys):
    argv = ["--experiment", "baselines", "--seeds", "7", "--dry-run"]
    argv += ["--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "o")]
    assert main(argv) == 0
    plan = [line for line in capsys.readouterr().out.splitlines() if "to train" in line]
    assert len(plan) == len(baselines.SETTINGS["explore"].methods)
