"""Control over a range (issue 27): the centred regularizer terms behind `center_rho` (DCPO) and
`center_reinforce` (AEPO), off by default, and the control_range / control_diagnosis bench
experiments on synthetic runs (no training)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from PIL import Image

from bench.experiments import ALL, EXPERIMENTS, control_diagnosis, control_range
from bench.experiments.common import TESTBEDS, RunSpec
from bench.reproduce import main
from dcrl.core.control import ControlDecision
from dcrl.core.regularizers import aepo_mix_batch
from dcrl.targets.aepo import AEPOSettings, center_reinforce, scale_reinforce_rows
from dcrl.targets.dcpo import DCPOSettings, DCPOTargetConfig, dcpo_mix

EXPLORE = TESTBEDS["explore"]


def decision(temperature: float, weight: float | None = None) -> ControlDecision:
    return ControlDecision(
        temperature=temperature,
        entropy_above_target=False,
        entropy_gap=0.05,
        previous_entropy=0.1,
        target_entropy=0.15,
        weight=weight,
    )


def dcpo_inputs():
    torch.manual_seed(0)
    advantages = torch.tensor([1.0, -1.0, 0.5, -0.5])
    scores = torch.tensor([1.0, 0.0, 1.0, 0.0])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0], [1, 1, 1], [1, 0, 0]])
    old = torch.log(torch.rand(4, 3) * 0.9 + 0.05)
    hot = old * 0.5  # log π^T of a hotter distribution, as a tensor of the same shape
    return advantages, scores, mask, old, hot


def test_defaults_are_the_papers_terms():
    assert DCPOSettings.__dataclass_fields__["center_rho"].default is False
    assert AEPOSettings.__dataclass_fields__["center_reinforce"].default is False


def test_centred_dcpo_term_is_c_times_rho_minus_one():
    advantages, scores, mask, old, hot = dcpo_inputs()
    papers = DCPOSettings(target_entropy=0.15)
    centred = DCPOSettings(target_entropy=0.15, center_rho=True)
    step = decision(2.0, weight=3.0)
    a_papers, m_papers = dcpo_mix(advantages, scores, mask, old, hot, step, papers)
    a_centred, m_centred = dcpo_mix(advantages, scores, mask, old, hot, step, centred)
    alpha = m_papers["control/alpha"]
    assert m_centred["control/alpha"] == alpha
    correct = (scores > 0.05).float()[:, None]
    # the two differ by exactly α·c on every valid token: c·ρ − c·(ρ − 1) = c
    assert torch.allclose(a_papers - a_centred, alpha * correct * mask, atol=1e-6)
    assert torch.all(a_centred[mask == 0] == 0)


def test_centred_dcpo_term_vanishes_at_temperature_one():
    advantages, scores, mask, old, _ = dcpo_inputs()
    centred = DCPOSettings(target_entropy=0.15, center_rho=True)
    mixed, metrics = dcpo_mix(advantages, scores, mask, old, old, decision(1.0, 2.0), centred)
    alpha = metrics["control/alpha"]
    assert 0 < alpha < 1
    assert torch.allclose(mixed, (1 - alpha) * advantages[:, None] * mask, atol=1e-6)


def test_log_rho_term_is_c_times_the_log_ratio_and_vanishes_at_temperature_one():
    """log_rho: the target term is α·c·(ℓ^T − ℓ) on valid tokens, by hand from the two passes;
    max_rho clamps it at log max_rho; at T = 1 only GRPO's share is left."""
    advantages, scores, mask, old, hot = dcpo_inputs()
    settings = DCPOSettings(target_entropy=0.15, log_rho=True)
    mixed, metrics = dcpo_mix(advantages, scores, mask, old, hot, decision(2.0, 3.0), settings)
    alpha = metrics["control/alpha"]
    correct = (scores > 0.05).float()[:, None]
    expected = ((1 - alpha) * advantages[:, None] + alpha * correct * (hot - old)) * mask
    assert torch.allclose(mixed, expected, atol=1e-6)
    clipped = DCPOSettings(target_entropy=0.15, log_rho=True, max_rho=1.5)
    mixed, _ = dcpo_mix(advantages, scores, mask, old, hot, decision(2.0, 3.0), clipped)
    term = ((hot - old).clamp(max=math.log(1.5))) * correct * alpha
    assert torch.allclose(mixed, ((1 - alpha) * advantages[:, None] + term) * mask, atol=1e-6)
    same, metrics = dcpo_mix(advantages, scores, mask, old, old, decision(1.0, 2.0), settings)
    alpha = metrics["control/alpha"]
    assert torch.allclose(same, (1 - alpha) * advantages[:, None] * mask, atol=1e-6)


def test_log_rho_is_its_own_centred_term():
    for bad in ({"center_rho": True}, {"use_rho": False}):
        with pytest.raises(ValueError, match="log_rho=true is its own centred term"):
            DCPOTargetConfig(name="dcpo", target_entropy=0.15, log_rho=True, **bad).validate()
    DCPOTargetConfig(name="dcpo", target_entropy=0.15, log_rho=True).validate()


def test_center_rho_needs_rho():
    with pytest.raises(ValueError, match="center_rho=true needs use_rho=true"):
        DCPOTargetConfig(
            name="dcpo", target_entropy=0.15, center_rho=True, use_rho=False
        ).validate()
    DCPOTargetConfig(name="dcpo", target_entropy=0.15, center_rho=True).validate()


def test_centred_aepo_rows_balance_the_token_mass():
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0], [1, 1, 0, 0]])
    on_policy = {
        "input_ids": torch.arange(20).reshape(5, 4),
        "response_mask": mask,
        "advantages": torch.tensor([0.5, -0.5, 1.0, -1.0, 0.2]),
    }
    tempered = {
        "input_ids": torch.arange(20, 40).reshape(5, 4),
        "response_mask": torch.tensor([[1, 1, 1, 1]] * 5),
    }
    mixed = aepo_mix_batch(on_policy, tempered, torch.tensor([0, 3]))  # rows 0, 1 replaced
    before = mixed["advantages"].clone()
    scores = torch.tensor([1.0, 1.0, 1.0, 0.0, 1.0])  # rows 2 and 4: correct, kept
    beta = center_reinforce(mixed, scores)
    assert beta == pytest.approx(8 / 6)  # 2 tempered rows × 4 tokens against 4 + 2 tokens
    delta = mixed["advantages"] - before
    assert torch.allclose(delta[[0, 1, 3]], torch.zeros(3, 4))  # REINFORCE and wrong rows
    assert torch.allclose(delta[2], -beta * mask[2].float())
    assert torch.allclose(delta[4], -beta * mask[4].float())
    # equal token mass: Σ(+1 on the tempered rows) + Σ(−β on the own correct rows) = 0
    reinforce_mass = float(mixed["response_mask"][mixed["is_reinforce"]].sum())
    assert reinforce_mass - beta * float(mask[[2, 4]].sum()) == pytest.approx(0.0)


def test_centred_aepo_without_rows_changes_nothing():
    mask = torch.ones(3, 2, dtype=torch.long)
    on_policy = {"response_mask": mask, "advantages": torch.tensor([1.0, -1.0, 0.0])}
    mixed = aepo_mix_batch(on_policy, {"response_mask": mask}, torch.zeros(0, dtype=torch.long))
    before = mixed["advantages"].clone()
    assert center_reinforce(mixed, torch.ones(3)) == 0.0
    assert torch.equal(mixed["advantages"], before)


# -- the bench experiments ---------------------------------------------------------------------
def write_log(root: Path, spec: RunSpec, entropies: list[float], nll_factor: float = 1.0) -> None:
    run_dir = spec.run_dir(root)
    run_dir.mkdir(parents=True, exist_ok=True)
    rows = [
        {
            "step": step,
            "entropy/on_policy_full": value,  # the held signal
            "entropy/on_policy_nll": value * nll_factor,
            "reward/accuracy": 0.8,
            "length/mean": 20.0,
            "length/truncated_frac": 0.0,
        }
        for step, value in enumerate(entropies, start=1)
    ]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_named_only_experiments_stay_out_of_all():
    assert list(EXPERIMENTS) == ["entropy", "sweep", "exploration", "compression", "combined"]
    named = {"control_range", "control_diagnosis", "baselines", "regime"}
    assert set(ALL) == set(EXPERIMENTS) | named
    for module in (control_range, control_diagnosis):
        assert module.NAME in ALL and set(module.SETTINGS) == {"explore"}


def test_range_specs_targets_and_order():
    specs = control_range.specs([4], EXPLORE)
    settings = control_range.SETTINGS["explore"]
    range_runs = [s for s in specs if s.controller == control_range.RANGE]
    assert len(range_runs) == 2 * len(settings.factors)
    assert specs[: len(range_runs)] == range_runs  # the range first, references after
    first = range_runs[0]
    assert first.name == "aepo-H0.6x-range"
    assert first.target == round(0.6 * EXPLORE.start_entropy, 4)
    assert f"algorithm.target_entropy={first.target}" in first.overrides
    assert "algorithm.center_reinforce=true" in first.overrides
    dcpo = next(s for s in range_runs if s.recipe == "dcpo")
    assert "algorithm.center_rho=true" in dcpo.overrides
    assert not any("max_rho" in setting for setting in dcpo.overrides)  # ρ unclipped
    reference = [s for s in specs if s.controller == "bang_bang"]
    assert reference and all("algorithm.controller=bang_bang" in s.overrides for s in reference)
    factors = [s.labels["factor"] for s in range_runs if s.recipe == "aepo"]
    assert min(factors) <= 0.6 and max(factors) >= 1.4


def test_every_run_of_an_algorithm_has_its_batch_references_included():
    specs = control_range.specs([4], EXPLORE)
    batch = dict(control_range.SETTINGS["explore"].batch)
    assert set(batch) == {"aepo", "dcpo"}
    for spec in specs:  # range settings and the papers' bang-bang: the same answers per step
        assert all(o in spec.overrides for o in batch[spec.recipe]), spec.name
    # a later setting wins on the command line: nothing after the batch sets it again
    for spec in specs:
        keys = [o.split("=")[0] for o in spec.overrides]
        assert keys.count("train.prompts_per_step") == 1


def test_run_batch_reads_the_runs_config_and_the_noise_text_names_it(tmp_path):
    assert control_range.run_batch(tmp_path) == (32, 8)  # no config: the recipes' batch
    (tmp_path / "config.yaml").write_text("train:\n  prompts_per_step: 64\nrollout:\n  n: 8\n")
    assert control_range.run_batch(tmp_path) == (64, 8)
    summary = {
        "points": {
            "a": {"end_noise": {"prompts": 64, "samples": 8}},
            "b": {"end_noise": {"prompts": 32, "samples": 8}},
            "c": {},
        }
    }
    assert control_range.batch_sizes(summary) == (
        "32 prompts × 8 answers or 64 prompts × 8 answers"
    )
    assert control_range.batch_sizes({"points": {}}) == "32 prompts × 8 answers"


def test_range_goal_needs_every_seed_and_the_whole_span(tmp_path):
    specs = [s for s in control_range.specs([1, 2], EXPLORE) if s.controller == "range"]
    for spec in specs:
        target = spec.target
        wobble = 0.05 * target
        values = [EXPLORE.start_entropy] * 20 + [target + wobble, target - wobble] * 10
        if spec.recipe == "dcpo" and spec.labels["factor"] == 1.4 and spec.seed == 2:
            values = [EXPLORE.start_entropy] * 20 + [target * 0.85] * 20  # one seed misses
        write_log(tmp_path, spec, values, nll_factor=1.1)  # the NLL alone 10% above: not judged
    summary = control_range.summarize(specs, tmp_path, EXPLORE, None)
    aepo, dcpo = summary["goals"]["aepo"], summary["goals"]["dcpo"]
    assert aepo["targets_held"] == [0.6, 0.8, 1.0, 1.2, 1.4] and aepo["goal_met"]
    assert dcpo["missed"] == [1.4] and not dcpo["goal_met"]
    point = summary["points"]["aepo-H1.0x-range"]
    assert point["n"] == 2
    assert point["mean_rms_relative_error"] == pytest.approx(0.05)
    assert point["sd_rms_relative_error"] == pytest.approx(0.0)
    # the NLL's error, by hand: (1.1·(1 ± 0.05) − 1) = 0.155 and 0.045 → RMS √((0.155² + 0.045²)/2)
    assert point["mean_rms_relative_error_nll"] == pytest.approx(math.hypot(0.155, 0.045) / 2**0.5)
    missed = summary["points"]["dcpo-H1.4x-range"]
    assert missed["max_rms_relative_error"] == pytest.approx(0.15)
    assert math.isclose(missed["mean_rms_relative_error"], (0.05 + 0.15) / 2)
    assert aepo["judged_on_choice_seeds"]
    text = control_range.markdown(summary, EXPLORE)
    assert "missed 1.4×" in text and "met: no" in text and "met: yes" in text
    rows = control_range.claims(summary, EXPLORE)
    assert [r["met"] for r in rows] == [True, False]
    assert rows[1]["value"]["largest_rms_per_target"]["1.4"] == pytest.approx(0.15)
    names = control_range.figures(specs, tmp_path, summary, tmp_path, EXPLORE)
    assert all((tmp_path / name).is_file() for name in names)


def test_named_experiment_refuses_another_testbed(capsys):
    assert main(["--experiment", "control_range", "--testbed", "overthink", "--dry-run"]) == 2
    assert "no settings for the overthink testbed" in capsys.readouterr().out


def test_token_kinds_of_the_explore_answers():
    kinds = control_diagnosis.token_kinds
    assert kinds("f72#72", 7) == ["fork", "arithmetic", "arithmetic", "decision"] + [
        "answer",
        "answer",
        "end",
    ]
    assert kinds("g#84", 5) == ["fork", "decision", "answer", "answer", "end"]
    assert kinds("f72,35+47=72#72", 16)[3] == "decision"
    assert kinds("f72,35+47=72#72", 16).count("arithmetic") == 2 + 8


def test_diagnosis_run_record_reads_authority():
    rows = [
        {
            "entropy/on_policy_nll": 0.1 + 0.001 * step,
            "reward/accuracy": 0.8,
            "length/mean": 20.0,
            "control/temperature": 2.0,
            "control/weight": 10.0,
            "control/num_reinforce": 40.0,
            "aepo/num_positives": 40.0,
        }
        for step in range(40)
    ]
    record = control_diagnosis.run_record(rows)
    assert record["entropy_1_3"] == pytest.approx(0.101)
    assert record["entropy_max_5_step_mean"] == pytest.approx(0.1 + 0.001 * 37)
    assert record["temperature_mean"] == 2.0 and record["reinforce_rows_mean"] == 40.0
    assert record["step_to_step_sd"] == pytest.approx(0.0, abs=1e-9)


def test_reinforce_rows_scaled_up_to_the_weight_asked_for():
    mask = torch.ones(4, 2, dtype=torch.long)
    on_policy = {"response_mask": mask, "advantages": torch.tensor([1.0, -1.0, 0.5, -0.5])}

    def mixed_batch():
        return aepo_mix_batch(on_policy, {"response_mask": mask}, torch.tensor([0, 1]))

    config = AEPOSettings(max_reinforce=4, reinforce_scale_max=3.0)
    mixed = mixed_batch()
    # w = 1: 4 rows asked, 2 there: each counts twice
    assert scale_reinforce_rows(mixed, decision(2.0, weight=1.0), config) == 2.0
    assert torch.equal(mixed["advantages"][:2], torch.full((2, 2), 2.0))
    assert torch.equal(mixed["advantages"][2:], torch.tensor([[0.5, 0.5], [-0.5, -0.5]]))
    mixed = mixed_batch()
    assert scale_reinforce_rows(mixed, decision(2.0, weight=10.0), config) == 3.0  # capped
    mixed = mixed_batch()
    assert scale_reinforce_rows(mixed, decision(2.0, weight=0.25), config) == 1.0  # never < 1
    for unscaled in (AEPOSettings(max_reinforce=4), config):
        mixed = mixed_batch()
        weight = None if unscaled is config else 1.0  # the papers' rule, or the default 1
        assert scale_reinforce_rows(mixed, decision(2.0, weight=weight), unscaled) is None
        assert torch.equal(mixed["advantages"][:2], torch.ones(2, 2))
    # the centred counterweight balances the scaled mass
    mixed = mixed_batch()
    scale_reinforce_rows(mixed, decision(2.0, weight=1.0), config)
    assert center_reinforce(mixed, torch.tensor([1.0, 1.0, 1.0, 1.0])) == pytest.approx(2.0)


def test_batch_noise_of_a_constant_policy_is_zero_and_grows_with_spread():
    groups = [g for g in range(40) for _ in range(16)]
    flat = control_diagnosis.batch_noise([2.0] * 640, [20.0] * 640, groups, draws=200)
    assert flat["sd"] == pytest.approx(0.0, abs=1e-12)
    spread = [(4.0 if row % 4 == 0 else 1.0) for row in range(640)]
    noisy = control_diagnosis.batch_noise(spread, [20.0] * 640, groups, draws=200)
    assert 0.0 < noisy["relative_sd"] < 0.2
    # twice the prompts per step: independent prompts, so the SD falls by √2 (2000 draws give
    # each SD to about 1/√(2·2000) ≈ 1.6%, their ratio to about 2.2%: 10% is over 4 of those)
    small = control_diagnosis.batch_noise(spread, [20.0] * 640, groups, 32, 8, draws=2000)
    large = control_diagnosis.batch_noise(spread, [20.0] * 640, groups, 64, 8, draws=2000)
    assert (large["prompts"], large["samples"]) == (64, 8)
    assert small["sd"] / large["sd"] == pytest.approx(2**0.5, rel=0.10)


def test_top_share_by_hand():
    """20 rows: equal rows put 1/20 in the top row (5%); one row of 19 among nineteen 1s puts
    19/38 there; 40 rows take their top 2."""
    assert control_diagnosis.top_share([1.0] * 20) == pytest.approx(0.05)
    assert control_diagnosis.top_share([19.0] + [1.0] * 19) == pytest.approx(0.5)
    assert control_diagnosis.top_share([3.0, 3.0] + [1.0] * 38) == pytest.approx(6 / 44)
    assert control_diagnosis.top_share([]) == 0.0


def test_gain_reference_scales_both_gains_with_the_target():
    from dcrl.core.control import PIController, make_controller

    def effort(controller, entropies):
        for value in entropies:
            controller.update(value)
        return controller.decide()

    kwargs = dict(proportional_gain=100.0, integral_gain=5.0, temperature_max=2.0, weight_max=50)
    plain = PIController(0.08, initial_entropy=0.08, **kwargs)
    scheduled = PIController(0.08, initial_entropy=0.08, gain_reference=0.16, **kwargs)
    at_reference = PIController(0.16, initial_entropy=0.16, gain_reference=0.16, **kwargs)
    reference_plain = PIController(0.16, initial_entropy=0.16, **kwargs)
    a = effort(plain, [0.075, 0.07])
    b = effort(scheduled, [0.075, 0.07])
    assert b.weight == pytest.approx(a.weight / 2)  # half the target, half the gains
    assert 1.0 < b.temperature < a.temperature <= 2.0 or b.temperature == a.temperature == 2.0
    c = effort(at_reference, [0.15, 0.14])
    d = effort(reference_plain, [0.15, 0.14])
    assert (c.temperature, c.weight) == (d.temperature, d.weight)  # the given gains at H_ref
    # the default is no scheduling, and the state round-trips
    assert PIController(0.1).gain_reference is None
    rebuilt = make_controller("pi", **scheduled.state_dict()["config"])
    rebuilt.load_state_dict(scheduled.state_dict())
    assert rebuilt.decide() == scheduled.decide()
    with pytest.raises(ValueError, match="gain_reference must be > 0"):
        PIController(0.1, gain_reference=0.0)


def test_derivative_gain_brakes_on_the_entropys_last_change():
    """By hand, target 0.1, k_p = 10, k_d = 50, no integral, T in 0.5-2: after 0.06 then 0.08 the
    gap is 0.02 and the change +0.02, so e = 10·0.02 − 50·0.02 = −0.8 (T = 0.5 bound, the rise
    already carries the entropy on) where the same loop without k_d heats, e = +0.2 (T = 1.2).
    With smoothing β = 0.5 the change is that of the smoothed value: 0.07 − 0.06 = 0.01."""
    from dcrl.core.control import PIController, make_controller

    kwargs = dict(proportional_gain=10.0, integral_gain=0.0, temperature_min=0.5)
    kwargs["temperature_max"] = 2.0
    braking = PIController(0.1, derivative_gain=50.0, **kwargs)
    plain = PIController(0.1, **kwargs)
    for controller in (braking, plain):
        controller.update(0.06)
        assert controller.change == 0.0  # one measurement: no change yet
        controller.update(0.08)
    assert braking.change == pytest.approx(0.02)
    assert braking.decide().temperature == 0.5  # clipped from 1 − 0.8
    assert plain.decide().temperature == pytest.approx(1.2)
    smoothed = PIController(0.1, derivative_gain=50.0, entropy_smoothing=0.5, **kwargs)
    smoothed.update(0.06)
    smoothed.update(0.08)
    assert smoothed.change == pytest.approx(0.01)
    assert smoothed.decide().temperature == pytest.approx(1.0 + 10 * 0.03 - 50 * 0.01)
    # the change is state: it survives a checkpoint; off (0) leaves the saved config as before
    rebuilt = make_controller("pi", **braking.state_dict()["config"])
    rebuilt.load_state_dict(braking.state_dict())
    assert rebuilt.decide() == braking.decide()
    # off, the saved config and state keep the layout of checkpoints written before it existed
    assert "derivative_gain" not in plain.config() and "change" not in plain.state_dict()["state"]
    PIController(0.1, **kwargs).load_state_dict(plain.state_dict())
    with pytest.raises(ValueError, match="derivative_gain must be >= 0"):
        PIController(0.1, derivative_gain=-1.0)


def test_weight_min_makes_the_push_linear_below_saturation():
    """By hand, target 0.5, k_p = 10, no integral, T up to 2, weight up to 5: a gap of 0.02
    gives e = 0.2, so T = 1.2 and the weight e/(T_max − 1) = 0.2; with weight_min = 1 the weight
    is 1, so the push (T − 1)·weight is 0.2 = e instead of e² = 0.04. Past saturation (gap 0.3,
    e = 3) both give weight 3; at the target (e = 0) the floor's weight 1 meets T = 1."""
    from dcrl.core.control import PIController

    kwargs = dict(proportional_gain=10.0, integral_gain=0.0, temperature_max=2.0, weight_max=5)
    for measured, temperature, plain_weight, floor_weight in [
        (0.48, 1.2, 0.2, 1.0),
        (0.2, 2.0, 3.0, 3.0),
        (0.5, 1.0, 0.0, 1.0),
    ]:
        floor = PIController(0.5, weight_min=1.0, initial_entropy=measured, **kwargs)
        plain = PIController(0.5, initial_entropy=measured, **kwargs)
        assert (
            floor.decide().temperature == plain.decide().temperature == pytest.approx(temperature)
        )
        assert plain.decide().weight == pytest.approx(plain_weight)
        assert floor.decide().weight == pytest.approx(floor_weight)
    assert "weight_min" not in plain.config() and floor.config()["weight_min"] == 1.0
    with pytest.raises(ValueError, match="weight_min=2.0 needs weight_max set"):
        PIController(0.1, weight_min=2.0)
    with pytest.raises(ValueError, match="weight_min=6.0 needs weight_max set and >= weight_min"):
        PIController(0.1, weight_min=6.0, **kwargs)


def test_target_ramp_moves_the_aim_from_the_first_measurement():
    """By hand, target 0.2, ramp 4 steps, k_p = 10, no integral: the first measurement 0.1
    starts the ramp, so after it the aim is 0.1 + 0.1·1/4 = 0.125 and T = 1 + 10·(0.125 − 0.1)
    = 1.25 (without the ramp: 1 + 10·0.1 = 2.0); after 3 more measurements of 0.1 the aim is
    the target. The decision's target stays 0.2 (what is logged and judged); its gap and
    above/below follow the aim. The ramp's start survives a checkpoint."""
    from dcrl.core.control import PIController, make_controller

    kwargs = dict(proportional_gain=10.0, integral_gain=0.0, temperature_max=2.0)
    ramped = PIController(0.2, target_ramp=4, **kwargs)
    assert ramped.decide().temperature == 2.0  # no measurement yet: the target (T clipped)
    ramped.update(0.1)
    decision = ramped.decide()
    assert decision.temperature == pytest.approx(1.25)
    assert decision.entropy_gap == pytest.approx(0.025) and decision.target_entropy == 0.2
    assert PIController(0.2, **kwargs).decide().temperature == 2.0
    rebuilt = make_controller("pi", **ramped.state_dict()["config"])
    rebuilt.load_state_dict(json.loads(json.dumps(ramped.state_dict())))
    assert rebuilt.decide() == decision
    for _ in range(3):
        ramped.update(0.1)
    assert ramped.decide().entropy_gap == pytest.approx(0.1)
    ramped.update(0.1)  # past the ramp: the target
    assert ramped.decide().entropy_gap == pytest.approx(0.1)
    with pytest.raises(ValueError, match="target_ramp must be a whole number"):
        PIController(0.2, target_ramp=-1)


# the hand-computed PI loop of the hold tests: k_p = 10, k_i = 1, T in [0.5, 3], a 2-step ramp
HAND_PI = {
    "proportional_gain": 10.0,
    "integral_gain": 1.0,
    "temperature_min": 0.5,
    "temperature_max": 3.0,
    "target_ramp": 2,
}


def test_hold_gain_scales_the_proportional_gain_once_the_target_is_reached():
    """By hand, target 0.2, k_p = 10, k_i = 1, ramp 2 steps, hold_gain 0.25, T in [0.5, 3]:
    measurements 0.1, 0.15 (the aim 0.15 after the ramp's first step, the target not reached):
    the integral holds gaps 0.05 (aim 0.15 − 0.1) and 0.05 (target 0.2 − 0.15) = 0.1, so
    T = 1 + 10·0.05 + 1·0.1 = 1.6; then 0.21 (ramp done, past the target from below): holding,
    gap −0.01, integral 0.09, T = 1 + 0.25·10·(−0.01) + 1·0.09 = 1.065 (the integral's push
    kept, the proportional answer to the overshoot a quarter). Without hold_gain the same
    measurements give 1 − 0.1 + 0.09 = 0.99. The hold survives a checkpoint; a start above the
    target reaches it from above."""
    from dcrl.core.control import PIController, make_controller

    held = PIController(0.2, hold_gain=0.25, **HAND_PI)
    plain = PIController(0.2, **HAND_PI)
    for controller in (held, plain):
        controller.update(0.1)
        controller.update(0.15)
    assert not held.holding
    assert held.decide().temperature == pytest.approx(1.6)
    assert plain.decide().temperature == pytest.approx(1.6)
    for controller in (held, plain):
        controller.update(0.21)
    assert held.holding
    assert held.decide().temperature == pytest.approx(1.065)
    assert plain.decide().temperature == pytest.approx(0.99)
    assert "hold_gain" not in plain.config() and held.config()["hold_gain"] == 0.25
    rebuilt = make_controller("pi", **held.state_dict()["config"])
    rebuilt.load_state_dict(json.loads(json.dumps(held.state_dict())))
    assert rebuilt.holding and rebuilt.decide() == held.decide()
    # once reached, the hold stays, also when the entropy falls back below the target
    held.update(0.1)
    assert held.holding
    cooling = PIController(0.2, hold_gain=0.5, proportional_gain=10.0, integral_gain=0.0)
    cooling.update(0.3)
    cooling.update(0.25)
    assert not cooling.holding
    cooling.update(0.2)
    assert cooling.holding
    for bad in (0.0, 1.5, float("nan")):
        with pytest.raises(ValueError, match="hold_gain"):
            PIController(0.2, hold_gain=bad)


def test_hold_integral_scales_the_integral_once_at_the_crossing():
    """By hand, the setting of the hold_gain test (target 0.2, k_p = 10, k_i = 1, ramp 2 steps,
    T in [0.5, 3]) with hold_integral f: measurements 0.1 and 0.15 build the integral to 0.1
    (T = 1.6 whatever f); 0.21 crosses the target, so the integral becomes f·0.1 before the new
    gap −0.01 is added: T = 1 + 10·(−0.01) + (f·0.1 − 0.01) = 0.89 at f = 0 (reset), 0.94 at
    f = 0.5, 0.99 at f = 1 (off). Only the first crossing scales it: 0.19 next adds +0.01 to
    what is left (T = 1 + 0.1 + 0 = 1.1 at f = 0). The scaled integral and the hold survive a
    checkpoint; out-of-range factors are refused by name."""
    from dcrl.core.control import PIController, make_controller

    expected = {0.0: 0.89, 0.5: 0.94, 1.0: 0.99}
    controllers = {f: PIController(0.2, hold_integral=f, **HAND_PI) for f in expected}
    for factor, controller in controllers.items():
        controller.update(0.1)
        controller.update(0.15)
        assert controller.integral == pytest.approx(0.1)
        assert controller.decide().temperature == pytest.approx(1.6)
        controller.update(0.21)
        assert controller.integral == pytest.approx(factor * 0.1 - 0.01)
        assert controller.decide().temperature == pytest.approx(expected[factor])
    reset = controllers[0.0]
    assert reset.holding and not controllers[1.0].holding  # f = 1 changes nothing, tracks nothing
    assert (
        reset.config()["hold_integral"] == 0.0 and "hold_integral" not in controllers[1.0].config()
    )
    rebuilt = make_controller("pi", **reset.state_dict()["config"])
    rebuilt.load_state_dict(json.loads(json.dumps(reset.state_dict())))
    assert rebuilt.holding and rebuilt.decide() == reset.decide()
    reset.update(0.19)
    assert reset.integral == pytest.approx(0.0)
    assert reset.decide().temperature == pytest.approx(1.1)
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="hold_integral"):
            PIController(0.2, hold_integral=bad)


def test_probe_table_reads_each_runs_target_signal_and_both_errors(tmp_path):
    """A probe controlled on the full-vocabulary entropy: its table row names the signal and
    gives the RMS relative error of both series. By hand: second half of the NLL at 0.11 and
    0.09 around 0.1 → RMS 10%; the full entropy at 0.1 throughout → 0% (a log from before
    `entropy/on_policy_full` existed: its `entropy/full` is read)."""
    run_dir = tmp_path / "dcpo-full-H0.1-seed1"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(
        "algorithm:\n  name: dcpo\n  target_entropy: 0.1\n  entropy_signal: full\n",
        encoding="utf-8",
    )
    rows = [
        {
            "step": step,
            "entropy/on_policy_nll": 0.2 if step <= 10 else (0.11 if step % 2 else 0.09),
            "entropy/full": 0.2 if step <= 10 else 0.1,
            "reward/accuracy": 0.5,
            "length/mean": 12.0,
        }
        for step in range(1, 21)
    ]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    table = control_range.probe_table([run_dir])
    row = table.splitlines()[-1]
    # the settings column: what differs from configs/explore-dcpo.yaml (its signal is the NLL)
    assert row == (
        "| dcpo-full-H0.1-seed1 | algorithm.entropy_signal=full | 0.1 | 20 | 0.1000 | 0.0% | 0.0% "
        "| — | 10.0% | 0.500 | 12.0 |"
    )


def test_at_bound_share_counts_the_second_halfs_steps_at_either_temperature_bound(tmp_path):
    """By hand: second half T = 2.0, 0.8, 1.3, 2.0 between bounds 0.8 and 2.0 → 3 of 4 at a
    bound; a log without a temperature gives nan. A config without bounds takes its recipe's
    (configs/explore-dcpo.yaml: 0.8 and 2.0), a probe's own override wins."""
    rows = [{"control/temperature": t} for t in (1.0, 1.0, 1.0, 1.0, 2.0, 0.8, 1.3, 2.0)]
    assert control_range.at_bound_share(rows, 0.8, 2.0) == pytest.approx(0.75)
    assert math.isnan(control_range.at_bound_share([{"step": 1}] * 4, 0.8, 2.0))
    assert control_range.percent(0.75) == "75%" and control_range.percent(math.nan) == "—"
    bare = {"algorithm": {"name": "dcpo"}}
    assert control_range.temperature_bounds(bare) == (0.8, 2.0)
    hotter = {"algorithm": {"name": "dcpo", "temperature_high": 1.5}}
    assert control_range.temperature_bounds(hotter) == (0.8, 1.5)
    overthink = {"algorithm": {"name": "dcpo"}, "model": {"name": "tiny-overthink"}}
    assert control_range.recipe_of(overthink)["data"]["task"] == "arith"
    assert control_range.probe_label(overthink) == "dcpo (tiny-overthink)"
    assert control_range.probe_label(bare) == "dcpo"


def test_step_swing_is_the_second_halfs_successive_difference_noise():
    """By hand: second half 1.0, 1.1, 1.0, 1.1 → differences +0.1, −0.1, +0.1 (mean 1/30, sample
    SD √(2/150) ≈ 0.11547), / √2 / mean 1.05 ≈ 0.07776; a straight ramp has no swing; too few
    steps give nan."""
    assert control_range.step_swing([9.0] * 4 + [1.0, 1.1, 1.0, 1.1]) == pytest.approx(
        math.sqrt(2.0 / 150.0) / math.sqrt(2.0) / 1.05
    )
    assert control_range.step_swing([0.1 * k for k in range(1, 11)]) == pytest.approx(
        0.0, abs=1e-12
    )
    assert math.isnan(control_range.step_swing([1.0, 2.0, 3.0, 4.0]))


def test_probe_choice_groups_runs_by_settings_and_judges_the_worst_seed(tmp_path):
    """Four probes of two settings: the group with ρ clipped is labelled by the clip alone (the
    signal both share is left out); per target the largest seed's RMS decides. By hand: a run
    alternating ±d around its target in the second half has RMS exactly d."""

    def probe(name: str, seed: int, target: float, swing: float, clip: str = "") -> Path:
        run_dir = tmp_path / name
        run_dir.mkdir()
        (run_dir / "config.yaml").write_text(
            f"algorithm:\n  name: dcpo\n  target_entropy: {target}\n"
            f"  entropy_signal: full\n{clip}train:\n  seed: {seed}\n",
            encoding="utf-8",
        )
        rows = [
            {
                "step": step,
                "entropy/full": target * (1 + (swing if step % 2 else -swing)),
                "reward/accuracy": 0.5,
                "length/mean": 10.0,
            }
            for step in range(1, 21)
        ]
        (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        return run_dir

    runs = [
        probe("a1", 1, 0.1, 0.05),
        probe("a2", 2, 0.1, 0.12),  # one seed over 10%: not held
        probe("a3", 1, 0.2, 0.02),
        probe("b1", 1, 0.1, 0.04, clip="  max_rho: 3\n"),
    ]
    lines = control_range.probe_choice(runs).splitlines()
    assert lines[2:] == [
        "| dcpo | (none) | 0.1 | 1, 2 | 12.0% | no |",
        "| dcpo | (none) | 0.2 | 1 | 2.0% | yes |",
        "| dcpo | (none) | **all** | | | 1 of 2 targets |",
        "| dcpo | algorithm.max_rho=3 | 0.1 | 1 | 4.0% | yes |",
        "| dcpo | algorithm.max_rho=3 | **all** | | | 1 of 1 targets |",
    ]


def test_probes_main_writes_the_named_readme_block_with_its_command(tmp_path):
    """`--readme=hold` writes the table into the control-probes-hold block (the plain
    control-probes block untouched) under the command that made it; without --readme the
    table is only returned; a folder contributes its runs, files and unfinished runs skipped."""
    folder = tmp_path / "diag"
    for name in ("dcpo-b-H0.1", "dcpo-a-H0.1"):
        run_dir = folder / name
        run_dir.mkdir(parents=True)
        (run_dir / "config.yaml").write_text(
            "algorithm:\n  name: dcpo\n  target_entropy: 0.1\n", encoding="utf-8"
        )
        row = {"entropy/on_policy_nll": 0.1, "reward/accuracy": 1.0, "length/mean": 9.0}
        rows = [{"step": s, **row} for s in (1, 2)]
        (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "unfinished").mkdir()
    (folder / "dcpo-a-H0.1.log").write_text("step 1\n")
    readme = tmp_path / "README.md"
    blocks = (
        "<!-- bench:control-probes -->\nold\n<!-- /bench:control-probes -->\n"
        "<!-- bench:control-probes-hold -->\nold\n<!-- /bench:control-probes-hold -->\n"
    )
    readme.write_text("intro\n" + blocks, encoding="utf-8")
    table = control_range.probes_main([str(folder)], readme)
    runs, choice = table.split("\n\n")
    assert [line.split(" | ")[0] for line in runs.splitlines()[2:]] == [
        "| dcpo-a-H0.1",
        "| dcpo-b-H0.1",
    ]
    assert choice == control_range.probe_choice(
        sorted((folder / n) for n in ("dcpo-a-H0.1", "dcpo-b-H0.1"))
    )
    assert readme.read_text(encoding="utf-8") == "intro\n" + blocks  # no --readme: untouched
    control_range.probes_main(["--readme=hold", str(folder)], readme)
    text = readme.read_text(encoding="utf-8")
    assert "<!-- bench:control-probes -->\nold\n" in text
    made_by = f"<!-- made by: python -m bench.experiments.control_range --readme=hold {folder} -->"
    assert f"<!-- bench:control-probes-hold -->\n{made_by}\n{table}" in text


def test_readme_sentence_from_the_claims_rows(tmp_path):
    """bench/claims_readme.py writes README.md's control-range block from the claims rows the
    summary makes: each algorithm's held targets, the largest seed's RMS per target, the verdict
    and which seeds chose and which judged."""
    from bench.claims_readme import control_range_block

    specs = [s for s in control_range.specs([4, 5], EXPLORE) if s.controller == "range"]
    for spec in specs:
        target = spec.target
        values = [EXPLORE.start_entropy] * 30 + [target * 1.05, target * 0.95] * 15
        if spec.recipe == "aepo" and spec.labels["factor"] == 0.6 and spec.seed == 5:
            values = [EXPLORE.start_entropy] * 30 + [target * 1.2] * 30  # one seed misses
        write_log(tmp_path, spec, values)
    rows = control_range.claims(control_range.summarize(specs, tmp_path, EXPLORE, None), EXPLORE)
    # each algorithm's own choice seeds: AEPO's settings chosen on seeds 1-2, DCPO's on 1-3
    assert [r["seeds"] for r in rows] == [
        {"chose": [1, 2], "used": [4, 5], "judged": True},
        {"chose": [1, 2, 3], "used": [4, 5], "judged": True},
    ]
    text = control_range_block(rows)
    aepo, dcpo = text.splitlines()[:2]
    assert aepo.startswith("- AEPO: held within 10% RMS on every seed at 0.8×, 1.0×, 1.2×, 1.4×")
    assert (
        "0.6×: 20.0%" in aepo and "goal missed (seeds 4, 5, settings chosen on seeds 1, 2)" in aepo
    )
    assert "(5 of 5 targets" in dcpo and "1.4×: 5.0%" in dcpo and "goal **met**" in dcpo
    assert control_range_block([{"claim": "other", "met": True}]) is None
    # the same goal re-run on a seed new to the bench: its own line, naming its command
    unseen = [{**rows[1], "seeds": {"chose": [1], "used": [9], "judged": True}, "command": "c9"}]
    line = control_range_block(rows, unseen).splitlines()[2]
    assert line.startswith("- DCPO on seed 9 (new to the bench), `c9`: held within 10% RMS")
    assert "goal **met** (seeds 9, settings chosen on seed 1)" in line
    assert rows[1]["settings"] == control_range.range_settings(EXPLORE, "dcpo")
    assert "algorithm.center_rho=true" in rows[1]["settings"]
    assert "train.prompts_per_step=64" in rows[1]["settings"]
    # a new seed's verdict made with other range settings (older, or none recorded) does not
    # judge the current ones, and its line says so
    for settings in (None, ["algorithm.center_rho=true"]):
        older = [{**unseen[0], "settings": settings}]
        line = control_range_block(rows, older).splitlines()[2]
        assert "made with earlier range settings than the rows above" in line
        assert "current ones); it held within 10% RMS on every seed at" in line
    assert "earlier range settings" not in control_range_block(rows, unseen)  # the same: a judge


def test_an_algorithm_left_out_has_no_goal_row(tmp_path):
    """`--only 'dcpo-H.*-range'` (DCPO's range runs on a new seed): AEPO has no points, so no
    goal row says it held "0 of 0 targets"; DCPO's row is judged on the seed that ran."""
    specs = [
        s
        for s in control_range.specs([9], EXPLORE)
        if s.controller == "range" and s.recipe == "dcpo"
    ]
    for spec in specs:
        write_log(tmp_path, spec, [spec.target] * 60)
    summary = control_range.summarize(specs, tmp_path, EXPLORE, None)
    assert list(summary["goals"]) == ["dcpo"]
    (row,) = control_range.claims(summary, EXPLORE)
    assert row["claim"].startswith("control range: dcpo holds") and row["met"] is True
    assert row["seeds"] == {"chose": [1, 2, 3], "used": [9], "judged": True}
    # its figures have DCPO's panels only (one column, not an empty one for AEPO)
    names = control_range.figures(specs, tmp_path, summary, tmp_path, EXPLORE)
    assert all((tmp_path / name).is_file() for name in names)
    width = Image.open(tmp_path / "control_range_curves.png").size[0]
    assert width == 6 * 110  # figsize 6 inches per algorithm at 110 dpi


def test_range_settings_against_the_papers_bang_bang_by_hand(tmp_path):
    """At 0.6x and 1.4x on seeds 4-6: the range settings alternate ±5% around the target (RMS 5%
    on every seed), the bang-bang sits 20%, 30%, 25% off (RMS exactly that). Difference 0.25 − 0.05
    = 0.20, SDs 0.05 and 0, standard error 0.05/√3, df 2, t(0.975, 2) = 4.302653: half-width
    0.124207, interval [0.075793, 0.324207] above 0, so the row is met; a bang-bang as tight as
    the range settings (RMS 5%) is not."""
    from bench.claims_readme import control_range_block

    specs = control_range.specs([4, 5, 6], EXPLORE)
    offsets = {4: 1.2, 5: 1.3, 6: 1.25}

    def write_all(bang_bang_tight: bool) -> list[dict]:
        for spec in specs:
            target = spec.target
            second = [target * 1.05, target * 0.95] * 15
            if spec.controller == "bang_bang" and not bang_bang_tight:
                second = [target * offsets[spec.seed]] * 30
            write_log(tmp_path, spec, [EXPLORE.start_entropy] * 30 + second)
        summary = control_range.summarize(specs, tmp_path, EXPLORE, None)
        return control_range.claims(summary, EXPLORE)

    rows = write_all(bang_bang_tight=False)
    compared = [r for r in rows if "bang-bang" in r["claim"]]
    assert [r["claim"] for r in compared] == [
        "control range: aepo's range settings hold 0.6x and 1.4x more tightly than the papers' "
        "bang-bang",
        "control range: dcpo's range settings hold 0.6x and 1.4x more tightly than the papers' "
        "bang-bang",
    ]
    for row, chose in zip(compared, ([1, 2], [1, 2, 3]), strict=True):
        assert row["met"] and row["seeds"] == {"chose": chose, "used": [4, 5, 6], "judged": True}
        for key in ("0.6x", "1.4x"):
            value = row["value"][key]
            assert value["difference"] == pytest.approx(0.2, abs=1e-4)
            assert value["interval_95"] == pytest.approx([0.0758, 0.3242], abs=1e-4)
            assert value["sd"] == [pytest.approx(0.05, abs=1e-4), pytest.approx(0.0, abs=1e-4)]
    assert "- AEPO against the papers' bang-bang" in control_range_block(rows)
    assert not any(r["met"] for r in write_all(bang_bang_tight=True) if "bang-bang" in r["claim"])
