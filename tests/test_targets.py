"""Target distributions (dcrl.targets) and their composition (dcrl.algorithms.composed): the
composed algorithm validates its `targets` list before the model loads, one error line naming
the key; a composition of one target logs exactly its preset's run; DCPO + ICR compose in the
documented order, recomputed from dcrl.core; the row replacement comes last whatever the list
order; a user's target loads from a 'package.module:Class' path; the best-of-n target's core
formula matches a plain loop. Each algorithm's numbers are pinned by
tests/test_algorithm_reference.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from dcrl.algorithms.base import StepContext, TrainBatch
from dcrl.config import ConfigError
from dcrl.core import losses as core_losses
from dcrl.core.advantages import grpo_advantages
from dcrl.core.control import ControlDecision, EntropyController
from dcrl.core.regularizers import (
    best_of_n_bonus,
    correct_indicator,
    dcpo_alpha,
    dcpo_rho,
    dcpo_token_advantages,
    icr_bonus,
)
from dcrl.core.shaping import overlong_penalty
from dcrl.targets import StepDraft, Target, TargetError
from dcrl.train.config import load_run_config
from dcrl.train.trainer import Trainer
from tests.helpers import record_prepare, tiny_config

torch.set_num_threads(1)

# ------------------------------------------------------------------------------------------
# 1. Composition.
# ------------------------------------------------------------------------------------------


def decide_by_hand(controller: EntropyController) -> tuple[ControlDecision, dict[str, float]]:
    """The controller's decision and the control/* metrics a controlled target logs with it."""
    decision = controller.decide()
    metrics = {
        "control/temperature": decision.temperature,
        "entropy/target": decision.target_entropy,
        "control/previous_entropy": decision.previous_entropy,
    }
    if decision.weight is not None:
        metrics["control/weight"] = decision.weight
    return decision, metrics


def policy_loss_by_hand(cfg, mb: TrainBatch, logprobs: torch.Tensor, counts: dict[str, float]):
    """The registered policy loss with the config's PPO options (no target adds a loss term)."""
    loss_fn = core_losses.get_policy_loss(cfg.policy_loss)
    old_logprobs = logprobs.detach() if mb.old_logprobs is None else mb.old_logprobs
    return loss_fn(
        logprobs,
        old_logprobs,
        mb.advantages,
        mb.response_mask,
        clip_low=cfg.clip_low,
        clip_high=cfg.clip_high,
        dual_clip=cfg.dual_clip,
        log_ratio_clamp=cfg.log_ratio_clamp,
        agg_mode=cfg.loss_agg_mode,
        num_tokens=counts["num_tokens"],
        num_sequences=counts["num_sequences"],
    )


def assert_same_train_batch(actual: TrainBatch, expected: TrainBatch) -> None:
    for name in ("input_ids", "attention_mask", "response_mask", "advantages"):
        assert torch.equal(getattr(actual, name), getattr(expected, name)), name
    if expected.old_logprobs is None:
        assert actual.old_logprobs is None
    else:
        assert torch.equal(actual.old_logprobs, expected.old_logprobs)
    assert actual.extras.keys() == expected.extras.keys()
    for name, value in expected.extras.items():
        assert torch.equal(actual.extras[name], value), name


def check_each_step(trainer: Trainer, expected_prepare: Any) -> list[dict[str, float]]:
    """Train; on each step call `expected_prepare(batch, scores, ctx)` just before the
    algorithm's own prepare, and check that train batch, metrics and the loss are identical.
    Returns the compared steps' metrics."""
    config = trainer.config.algorithm
    original = trainer.algorithm.prepare
    compared: list[dict[str, float]] = []

    def prepare(batch, scores, ctx):
        expected, expected_metrics = expected_prepare(batch, scores, ctx)
        actual, metrics = original(batch, scores, ctx)
        assert_same_train_batch(actual, expected)
        assert metrics == expected_metrics

        # The loss of the whole batch at log-probs a fixed perturbation away from π_old.
        generator = torch.Generator().manual_seed(len(compared))
        base = expected.old_logprobs
        if base is None:
            base = -torch.rand(expected.response_mask.shape, generator=generator)
        logprobs = base + 0.3 * torch.randn(base.shape, generator=generator)
        mask = expected.response_mask
        counts = {"num_tokens": float(mask.sum()), "num_sequences": float(len(mask))}
        loss, loss_metrics = trainer.algorithm.loss(actual, logprobs, None, counts)
        expected_loss, expected_loss_metrics = policy_loss_by_hand(
            config, expected, logprobs, counts
        )
        assert torch.equal(loss, expected_loss)
        assert loss_metrics == expected_loss_metrics
        compared.append(metrics)
        return actual, metrics

    trainer.algorithm.prepare = prepare
    history = trainer.fit()
    assert len(compared) == len(history) == trainer.config.train.steps
    return compared


def controller_now(trainer: Trainer, config: Any, state: dict[str, Any]) -> EntropyController:
    """A fresh controller of `config` in a controlled target's checkpoint `state` (the layout is
    part of the test: {"controller": ...})."""
    controller = config.make_controller()
    controller.load_state_dict(state["controller"])
    return controller


def without_timings(metrics: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if not k.startswith(("time/", "perf/"))}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("preset", "preset_overrides", "composed_overrides"),
    [
        ("dcpo", ["algorithm.max_rho=3.0"], ["algorithm.targets=[{name: dcpo, max_rho: 3.0}]"]),
        ("icr", [], ["algorithm.targets=[icr]", "algorithm.log_ratio_clamp=20"]),
    ],
)
def test_a_composed_run_of_one_target_logs_exactly_its_preset_run(
    tmp_path, preset, preset_overrides, composed_overrides
):
    expected = Trainer(tiny_config(tmp_path / "preset", preset, *preset_overrides)).fit()
    composed = Trainer(tiny_config(tmp_path / "composed", "composed", *composed_overrides))
    actual = composed.fit()
    assert [without_timings(m) for m in actual] == [without_timings(m) for m in expected]
    assert composed.config.run_dir.name == "composed"


@pytest.mark.slow
def test_dcpo_and_icr_compose_bonus_first_then_the_token_mix(tmp_path):
    """Â' = (1 − α)(Â_GRPO(r + LP-F) + ICR bonus) + α·c·ρ, the documented order, recomputed from
    the core functions; DCPO's T = 1 pass is the batch's old log-probs; the state holds one
    entry per target."""
    trainer = Trainer(
        tiny_config(
            tmp_path / "run",
            "composed",
            "rollout.max_new_tokens=48",
            "algorithm.targets=[{name: icr, bonus_total: 8, lp_f_max_length: 40, "
            "lp_f_buffer: 20}, {name: dcpo, target_entropy: 2.0}]",
        )
    )
    dcpo = trainer.algorithm.targets[1].config

    def expected_prepare(batch, scores, ctx):
        state = trainer.algorithm.state_dict()
        assert state["targets"][0] == {}  # icr keeps no state, dcpo its controller's
        controller = controller_now(trainer, dcpo, state["targets"][1])
        rewards = scores + overlong_penalty(batch.response_lengths, 40, 20)
        advantages = grpo_advantages(rewards, batch.group_index)
        advantages, info = icr_bonus(
            advantages, rewards, batch.response_lengths, batch.group_index, bonus_total=8.0
        )
        assert info["num_selected"] > 0
        decision, metrics = decide_by_hand(controller)
        correct = correct_indicator(scores)
        (ids, attention), mask = batch.sequences(), batch.response_mask
        old_logprobs, _ = ctx.logprob_pass(ids, attention, mask)
        at_temperature, _ = ctx.logprob_pass(ids, attention, mask, temperature=decision.temperature)
        rho = dcpo_rho(at_temperature, old_logprobs, mask)
        alpha = dcpo_alpha(2.0, decision.previous_entropy, correct)
        assert 0 < alpha < 1
        selected = torch.zeros(len(batch), dtype=torch.bool)
        selected[info["selected_index"]] = True
        train_batch = TrainBatch(
            input_ids=ids,
            attention_mask=attention,
            response_mask=mask,
            old_logprobs=old_logprobs,
            advantages=dcpo_token_advantages(advantages, correct, rho, alpha, mask),
            extras={"icr_selected": selected},
        )
        valid = mask.bool()
        metrics.update(
            {
                "reward/shaped_mean": float(rewards.mean()),
                "icr/num_selected": float(info["num_selected"]),
                "icr/bonus": float(info["bonus_per_response"]),
                "icr/selected_length": float(info["selected_length_mean"]),
                "control/alpha": alpha,
                "dcpo/rho_mean": float(rho[valid & correct[:, None]].mean()),
                "dcpo/rho_max": float(rho[valid].max()),
                "dcpo/correct_frac": float(correct.float().mean()),
            }
        )
        return train_batch, metrics

    compared = check_each_step(trainer, expected_prepare)
    assert any(m["reward/shaped_mean"] < m["dcpo/correct_frac"] for m in compared)  # LP-F bit
    state = trainer.algorithm.state_dict()
    assert state["targets"][1]["controller"]["state"]["num_updates"] == 2


@pytest.mark.slow
def test_the_row_replacement_comes_last_whatever_the_list_order(tmp_path):
    """[best_of_n, aepo, icr]: the two bonuses (list order) on the GRPO advantages, then AEPO's
    tempered rows replace the first m rows with +1 and clear the bonus marks there."""
    trainer = Trainer(
        tiny_config(
            tmp_path / "run",
            "composed",
            "train.prompts_per_step=8",
            "train.mini_batch_prompts=8",
            "train.micro_batch_size=16",
            "rollout.max_new_tokens=24",
            "algorithm.targets=[{name: best_of_n, weight: 0.5}, {name: aepo, max_reinforce: 3, "
            "tempered_fraction: 0.5}, {name: icr, bonus_total: 4, lp_f: false}]",
        )
    )
    steps = record_prepare(trainer)
    history = trainer.fit()
    for step, metrics in zip(steps, history, strict=True):
        batch, train_batch = step.batch, step.train_batch
        advantages = grpo_advantages(step.scores, batch.group_index)
        advantages, best = best_of_n_bonus(advantages, step.scores, batch.group_index, 0.5)
        advantages, info = icr_bonus(
            advantages, step.scores, batch.response_lengths, batch.group_index, bonus_total=4.0
        )
        num_reinforce = int(metrics["control/num_reinforce"])
        assert num_reinforce > 0 and len(best) > 0 and info["num_selected"] > 0
        is_reinforce = torch.arange(len(batch)) < num_reinforce
        assert torch.equal(train_batch.extras["is_reinforce"], is_reinforce)
        mask = train_batch.response_mask
        assert torch.equal(train_batch.advantages[is_reinforce], mask[is_reinforce])
        width = batch.response_mask.shape[1]
        on_policy = batch.response_mask[~is_reinforce]
        assert torch.equal(
            train_batch.advantages[~is_reinforce, :width],
            advantages[~is_reinforce, None] * on_policy,
        )
        assert not train_batch.advantages[~is_reinforce, width:].any()
        for name, selected in (
            ("best_of_n_selected", best),
            ("icr_selected", info["selected_index"]),
        ):
            marks = torch.zeros(len(batch), dtype=torch.bool)
            marks[selected] = True
            assert torch.equal(train_batch.extras[name], marks & ~is_reinforce), name
        assert metrics["best_of_n/num_selected"] == len(best)


def test_best_of_n_bonus_picks_each_groups_first_top_reward_like_a_plain_loop():
    generator = torch.Generator().manual_seed(0)
    rewards = torch.randint(0, 3, (40,), generator=generator).float() / 2  # ties and flat groups
    group_index = torch.arange(10).repeat_interleave(4)[torch.randperm(40, generator=generator)]
    rewards[group_index == 3] = 1.0  # flat groups: no best
    rewards[group_index == 7] = 0.0
    advantages = torch.randn(40, generator=generator)
    new, selected = best_of_n_bonus(advantages, rewards, group_index, weight=0.7)

    expected = []
    for group in range(10):
        rows = [i for i in range(40) if int(group_index[i]) == group]
        values = [float(rewards[i]) for i in rows]
        if max(values) > min(values):
            expected.append(min(i for i in rows if float(rewards[i]) == max(values)))
    assert selected.tolist() == sorted(expected)
    assert len(expected) == 8
    bonus = torch.zeros(40)
    bonus[expected] = 0.7
    assert torch.equal(new, advantages + bonus)
    with pytest.raises(ValueError, match="weight must be >= 0"):
        best_of_n_bonus(advantages, rewards, group_index, weight=-1.0)


def test_dcpo_sizes_alpha_by_the_controllers_target_not_the_configs():
    """dcpo_mix reads 𝓗 from the decision it is given (the controller's), so a decision whose
    target differs from the settings' gives α = a/(1 + a), a = min(|𝓗 − H_prev|, cap)/p with the
    decision's 𝓗."""
    from dcrl.targets.dcpo import DCPOSettings, dcpo_mix

    advantages = torch.tensor([1.0, -1.0, 0.5, -0.5])
    scores = torch.tensor([1.0, 0.0, 1.0, 0.0])  # p = 1/2
    mask = torch.ones(4, 3)
    old = torch.full((4, 3), -1.0)
    decision = ControlDecision(
        temperature=1.2,
        entropy_above_target=False,
        entropy_gap=0.05,
        previous_entropy=0.1,
        target_entropy=0.15,
    )
    _, metrics = dcpo_mix(
        advantages, scores, mask, old, old, decision, DCPOSettings(target_entropy=5.0)
    )
    a = min(abs(0.15 - 0.1), 0.1) / 0.5  # 0.1; the settings' 5.0 would give the cap, 0.2
    assert metrics["control/alpha"] == pytest.approx(a / (1 + a), rel=1e-12)


# ------------------------------------------------------------------------------------------
# 2. Configuration errors and a user's target.
# ------------------------------------------------------------------------------------------

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "targets"

BAD_TARGETS = {
    "unknown name": ("[dcpo, icrr]", r"algorithm\.targets\[1\]\.name: unknown target 'icrr'"),
    "no name": ("[{bonus_total: 4}]", r"algorithm\.targets\[0\]\.name: missing"),
    "unknown key": ("[{name: icr, bonus_totl: 4}]", r"algorithm\.targets\[0\]\.bonus_totl: not a"),
    "bad value": ("[{name: icr, mode: sum}]", r"algorithm\.targets\[0\]\.mode: 'sum' is not"),
    "failed validation": (
        "[{name: aepo, tempered_fraction: 2}]",
        r"algorithm\.targets\[0\]\.tempered_fraction must be > 0 and ≤ 1",
    ),
    "controller settings": (
        "[{name: dcpo, weight_max: 3}]",
        r"algorithm\.targets\[0\]\.weight_max=3.0 needs controller: pi",
    ),
    "two controllers": (
        "[aepo, icr, dcpo]",
        r"algorithm\.targets\[2\]\.name: 'dcpo' is a second entropy controller target after "
        r"targets\[0\] \('aepo'\)",
    ),
    "not importable": (
        "[{name: 'no_such_module_xyz:Target'}]",
        r"algorithm\.targets\[0\]\.name: cannot import module 'no_such_module_xyz'",
    ),
    "not a target": (
        "[{name: 'my_target:final_answer'}]",
        r"algorithm\.targets\[0\]\.name: 'my_target:final_answer' is <function",
    ),
    "not a list": ("7", r"algorithm\.targets: expected a list, got 7"),
}


@pytest.mark.parametrize("case", sorted(BAD_TARGETS))
def test_a_bad_target_entry_is_one_error_naming_its_key(monkeypatch, case):
    monkeypatch.syspath_prepend(str(EXAMPLES))
    value, message = BAD_TARGETS[case]
    overrides = ["algorithm.name=composed", f"algorithm.targets={value}"]
    with pytest.raises(ConfigError, match=message) as error:
        load_run_config(None, overrides)
    assert "\n" not in str(error.value)


@pytest.mark.slow
def test_a_user_target_loads_from_its_import_path_and_keeps_its_state(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))
    from my_target import MajorityVote, final_answer, majority_agreement

    overrides = (
        "algorithm.targets=[{name: 'my_target:MajorityVote', weight: 0.25, min_agreement: 0}]",
        "rollout.max_new_tokens=24",
    )
    trainer = Trainer(tiny_config(tmp_path / "run", "composed", *overrides))
    (target,) = trainer.algorithm.targets
    assert isinstance(target, MajorityVote) and target.config.weight == 0.25
    steps = record_prepare(trainer)
    history = trainer.fit()

    total = 0
    for step, metrics in zip(steps, history, strict=True):
        answers = [final_answer(text) for text in step.batch.response_texts]
        agrees = majority_agreement(answers, step.batch.group_index, 0.0)
        assert agrees.any()
        advantages = grpo_advantages(step.scores, step.batch.group_index) + 0.25 * agrees
        mask = step.train_batch.response_mask
        assert torch.equal(step.train_batch.advantages, advantages[:, None] * mask)
        assert torch.equal(step.train_batch.extras["majority_vote_selected"], agrees)
        total += int(agrees.sum())
        assert metrics["majority_vote/total_agreeing"] == total
        assert "reward/shaped_mean" not in metrics  # no target shaped the reward
    assert trainer.algorithm.state_dict() == {"targets": [{"total_agreeing": total}]}
    restored = Trainer(tiny_config(tmp_path / "restored", "composed", *overrides)).algorithm
    restored.load_state_dict(trainer.algorithm.state_dict())
    assert restored.targets[0].total_agreeing == total


@pytest.mark.slow
def test_a_composed_run_with_a_user_target_resumes_exactly(tmp_path, monkeypatch):
    """Killed in step 3 and resumed from the saved config.yaml and checkpoint: the controller's
    and the user target's state come back, and the run logs what it logs uninterrupted."""
    from tests.test_resume import RESUME_OPTIONS, check_interrupted_run, run_until_killed

    monkeypatch.syspath_prepend(str(EXAMPLES))
    targets = "algorithm.targets=[dcpo, {name: icr, bonus_total: 8}, 'my_target:MajorityVote']"
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    Trainer(tiny_config(straight, "composed", *RESUME_OPTIONS, targets)).fit()
    run_until_killed(interrupted, "composed", "save", targets)
    check_interrupted_run(straight, interrupted, "save")


class PerTokenBonus(Target):
    """Breaks the contract: a bonus-stage target that returns per-token advantages."""

    name = "per_token_bonus"

    def apply(self, draft: StepDraft, ctx: StepContext) -> dict[str, float]:
        draft.advantages = draft.advantages[:, None] * draft.response_mask
        return {}


class BorrowedMetric(Target):
    """Breaks the contract: logs a metric name the icr target logs."""

    name = "borrowed_metric"

    def apply(self, draft: StepDraft, ctx: StepContext) -> dict[str, float]:
        return {"icr/bonus": 0.0}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("targets", "message"),
    [
        ("['tests.test_targets:PerTokenBonus']", "'per_token_bonus' .* declare stage = 'mix'"),
        ("[icr, 'tests.test_targets:BorrowedMetric']", "'borrowed_metric' logs 'icr/bonus'"),
    ],
)
def test_a_target_that_breaks_the_contract_stops_the_step_with_its_name(tmp_path, targets, message):
    trainer = Trainer(tiny_config(tmp_path / "run", "composed", f"algorithm.targets={targets}"))
    with pytest.raises(TargetError, match=message):
        trainer.train_step()
