"""The recipe's transformations on real DataProto batches give exactly what dcrl.core gives."""

import json

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from verl.trainer.ppo.ray_trainer import RayPPOTrainer, compute_advantage

import dcrl.integrations.verl.register  # noqa: F401  (registers dcrl_icr, dcrl_ppo_clip)
from dcrl.core.advantages import group_ids, grpo_advantages
from dcrl.core.control import ControlDecision
from dcrl.core.logprobs import sampled_token_nll
from dcrl.core.regularizers import (
    aepo_mix_batch,
    aepo_num_reinforce,
    aepo_select_positives,
    correct_indicator,
    dcpo_alpha,
    dcpo_rho,
    dcpo_token_advantages,
    icr_bonus,
)
from dcrl.core.shaping import overlong_penalty
from dcrl.integrations.verl import transforms
from dcrl.integrations.verl.trainer import CONTROLLER_FILE, DcrlRayPPOTrainer
from dcrl.targets.aepo import AEPOConfig
from dcrl.targets.base import Target
from dcrl.targets.dcpo import DCPO
from dcrl.train.step import targets_of as step_targets
from tests.verl.helpers import make_batch
from tests.verl.recipe_harness import bare_trainer as harness_bare_trainer
from tests.verl.recipe_harness import config as harness_config


def _decision(previous_entropy: float, target: float = 0.5, weight: float | None = None):
    above = previous_entropy > target
    return ControlDecision(
        temperature=0.8 if above else 1.2,
        entropy_above_target=above,
        entropy_gap=target - previous_entropy,
        previous_entropy=previous_entropy,
        target_entropy=target,
        weight=weight,
    )


def _dense_groups(batch) -> torch.Tensor:
    """Group ids by first appearance, independent of transforms.group_index."""
    seen: dict[str, int] = {}
    return torch.tensor([seen.setdefault(u, len(seen)) for u in batch.non_tensor_batch["uid"]])


@pytest.mark.parametrize("lp_f", [True, False])
def test_icr_estimator_through_verl_compute_advantage_equals_dcrl_core(lp_f):
    batch = make_batch(seed=1)
    mask = batch.batch["response_mask"]
    algorithm = OmegaConf.create(
        {
            "dcrl": {
                "name": "icr",
                "bonus_total": 16.0,
                "lp_f": lp_f,
                "lp_f_max_length": 7,
                "lp_f_buffer": 4,
            }
        }
    )
    out = compute_advantage(batch, adv_estimator="dcrl_icr", config=algorithm)

    scores = batch.batch["token_level_rewards"].sum(-1)
    lengths = mask.sum(-1)
    rewards = scores + overlong_penalty(lengths, 7, 4) if lp_f else scores
    groups = _dense_groups(batch)
    expected, info = icr_bonus(
        grpo_advantages(rewards, groups), rewards, lengths, groups, bonus_total=16.0
    )
    assert info["num_selected"] > 0  # the bonus is exercised
    assert torch.equal(out.batch["advantages"], expected[:, None] * mask.float())
    assert torch.equal(out.batch["returns"], out.batch["advantages"])


def test_aepo_tempered_requests_take_the_first_prompts():
    gen_batch = make_batch(num_prompts=4, group_size=3, shuffle=False)
    requests = transforms.aepo_tempered_requests(gen_batch, 2, 3, 1.2)
    assert len(requests) == 6
    assert torch.equal(requests.batch["input_ids"], gen_batch.batch["input_ids"][:6])
    assert list(requests.non_tensor_batch["agent_name"]) == [transforms.TEMPERED_AGENT] * 6
    assert requests.non_tensor_batch[transforms.TEMPERATURE_KEY].tolist() == [1.2] * 6
    assert "agent_name" not in gen_batch.non_tensor_batch  # the request batch is untouched


@pytest.mark.parametrize("placement", ["front", "spread"])
@pytest.mark.parametrize("previous_entropy", [0.3, 0.9])
def test_aepo_splice_equals_dcrl_core(placement, previous_entropy):
    batch = make_batch(num_prompts=4, group_size=4, seed=4)
    tempered = make_batch(num_prompts=2, group_size=4, seed=5, shuffle=False)
    tempered.non_tensor_batch["uid"] = np.array(
        [f"prompt-{i // 4}" for i in range(8)], dtype=object
    )
    config = AEPOConfig(name="aepo", max_reinforce=4, placement=placement)
    decision = _decision(previous_entropy)
    spliced, metrics = transforms.aepo_splice(batch, tempered, decision, config)

    scores = batch.batch["rm_scores"].sum(-1)
    tempered_scores = tempered.batch["rm_scores"].sum(-1)
    positive = aepo_select_positives(tempered_scores, group_ids(2, 4), 0.05)
    positive_index = positive.nonzero().flatten()
    m = aepo_num_reinforce(
        len(positive_index), entropy_above_target=previous_entropy > 0.5, max_samples=4
    )
    keys = list(batch.batch.keys())
    expected = aepo_mix_batch(
        {
            **{k: batch.batch[k] for k in keys},
            "advantages": grpo_advantages(scores, _dense_groups(batch)),
        },
        {k: tempered.batch[k] for k in keys},
        positive_index[:m],
        placement=placement,
    )
    assert m > 0 and metrics["control/num_reinforce"] == m
    assert torch.equal(spliced.batch[transforms.AEPO_ADVANTAGES_KEY], expected["advantages"])
    assert torch.equal(spliced.batch["dcrl_is_reinforce"], expected["is_reinforce"])
    for key in keys:
        assert torch.equal(spliced.batch[key], expected[key]), key
    rows = expected["is_reinforce"].nonzero().flatten().numpy()
    assert (
        spliced.non_tensor_batch["uid"][rows]
        == tempered.non_tensor_batch["uid"][positive_index[:m].numpy()]
    ).all()
    assert len(spliced) == len(batch)


def test_entropy_signals_are_dcrl_sampled_nll():
    batch = make_batch(seed=6)
    mask = batch.batch["response_mask"]
    is_reinforce = torch.zeros(len(batch), dtype=torch.bool)
    is_reinforce[:3] = True
    batch.batch["dcrl_is_reinforce"] = is_reinforce
    entropy = torch.rand(mask.shape)
    signals = transforms.entropy_signals(batch, entropy)
    logprobs = batch.batch["old_log_probs"]
    # entropy_sums adds in float64, sampled_token_nll in float32: ~100 terms, rel error ~1e-7.
    nll = float(sampled_token_nll(logprobs, mask))
    assert signals["entropy/sampled_nll"] == pytest.approx(nll, rel=1e-6)
    on_policy = mask * (~is_reinforce)[:, None]
    on_policy_nll = float(sampled_token_nll(logprobs, on_policy))
    assert signals["entropy/on_policy_nll"] == pytest.approx(on_policy_nll, rel=1e-6)
    assert signals["entropy/full"] == pytest.approx(
        float((entropy * mask).sum() / mask.sum()), rel=1e-6
    )


def _bare_trainer(tmp_path, block: dict) -> DcrlRayPPOTrainer:
    """The recipe trainer without Ray workers: its __init__ minus RayPPOTrainer's."""
    trainer = DcrlRayPPOTrainer.__new__(DcrlRayPPOTrainer)
    trainer.config = OmegaConf.create(
        {
            "algorithm": {"dcrl": block},
            "actor_rollout_ref": {"rollout": {"temperature": 1.0, "n": 4}},
            "trainer": {
                "default_local_dir": str(tmp_path),
                "resume_mode": "auto",
                "resume_from_path": None,
            },
        }
    )
    original_init = RayPPOTrainer.__init__
    RayPPOTrainer.__init__ = lambda self, *args, **kwargs: None
    try:
        DcrlRayPPOTrainer.__init__(trainer, trainer.config)
    finally:
        RayPPOTrainer.__init__ = original_init
    return trainer


def test_dcpo_hooks_feed_dcrl_and_checkpoint_the_controller(tmp_path, monkeypatch):
    """The DCPO hooks around stub workers: the second pass runs at the controller's T, the
    update sees dcrl's advantages, the controller reads the entropy, and its state survives
    verl's checkpoint/resume."""
    batch = make_batch(seed=7)
    base_logits_scale = batch.batch.pop("old_log_probs")
    batch.batch.pop("old_log_probs_at_temperature")
    passes: list[float] = []

    def fake_old_log_prob(self, data):
        temperature = data.meta_info["temperature"]
        passes.append(temperature)
        out = type(data).from_dict(
            tensors={
                "old_log_probs": base_logits_scale / temperature,
                "entropys": torch.full_like(base_logits_scale, 0.7),
            }
        )
        return out, 0.0

    seen = {}

    def fake_update_actor(self, data):
        seen["advantages"] = data.batch["advantages"].clone()
        return type(data).from_dict(tensors={}, meta_info={"metrics": {"actor/pg_loss": 0.0}})

    monkeypatch.setattr(RayPPOTrainer, "_compute_old_log_prob", fake_old_log_prob)
    monkeypatch.setattr(RayPPOTrainer, "_update_actor", fake_update_actor)
    monkeypatch.setattr(RayPPOTrainer, "_save_checkpoint", lambda self: None)
    monkeypatch.setattr(RayPPOTrainer, "_load_checkpoint", lambda self: None)

    trainer = _bare_trainer(tmp_path, {"name": "dcpo", "target_entropy": 0.5})
    assert isinstance(trainer.dcrl_algorithm, DCPO)
    old_log_prob, _ = trainer._compute_old_log_prob(batch)
    assert passes == [1.0, 1.2]  # H_prev = 0 <= target: heat
    assert batch.meta_info["temperature"] == 1.0  # restored for verl's later calls
    batch = batch.union(old_log_prob)
    output = trainer._update_actor(batch)

    mask = batch.batch["response_mask"]
    scores = batch.batch["rm_scores"].sum(-1)
    correct = correct_indicator(scores, 0.05)
    rho = dcpo_rho(base_logits_scale / 1.2 * mask, base_logits_scale * mask, mask)
    alpha = dcpo_alpha(0.5, 0.0, correct, 0.1)
    expected = dcpo_token_advantages(
        grpo_advantages(scores, _dense_groups(batch)), correct, rho, alpha, mask
    )
    assert 0 < alpha < 1
    torch.testing.assert_close(seen["advantages"], expected, rtol=0, atol=0)
    metrics = output.meta_info["metrics"]
    nll = float(sampled_token_nll(base_logits_scale, batch.batch["response_mask"]))
    # dcrl.core.logprobs.entropy_sums sums in float64, sampled_token_nll in float32.
    assert metrics["entropy/sampled_nll"] == pytest.approx(nll, rel=1e-6)
    assert (
        trainer.dcrl_algorithm.target.controller.previous_entropy == metrics["entropy/sampled_nll"]
    )
    assert metrics["control/temperature"] == 1.2

    trainer.global_steps = 3
    (tmp_path / "global_step_3").mkdir()
    trainer._save_checkpoint()
    saved = json.loads((tmp_path / "global_step_3" / CONTROLLER_FILE).read_text())
    resumed = _bare_trainer(tmp_path, {"name": "dcpo", "target_entropy": 0.5})
    resumed.global_steps = 3
    resumed._load_checkpoint()
    assert resumed.dcrl_algorithm.state_dict() == saved
    assert (
        resumed.dcrl_algorithm.target.controller.decide()
        == trainer.dcrl_algorithm.target.controller.decide()
    )


class RowSwapTarget(Target):
    """A user's row-replacing target without the tempered-row splice's capabilities."""

    name = "row_swap"
    stage = "replace"


@pytest.mark.parametrize(
    "block, named",
    [
        # By what the algorithm does, not by its name: its policy loss, ...
        ({"name": "clip_cov"}, r"algorithm.dcrl.name='clip_cov'.*its policy loss is 'clip_cov'"),
        # ... whether it composes a target at all (GRPO runs on verl's own trainer), ...
        ({"name": "grpo"}, r"algorithm.dcrl.name='grpo'.*composes no target.*dcrl_grpo"),
        ({"name": "nonesuch"}, r"error: algorithm.dcrl.name='nonesuch'"),
        # ... a row replacement composed with other targets, ...
        (
            {"name": "composed", "targets": ["icr", "aepo"]},
            r"error: algorithm.dcrl.targets: 'aepo' replaces rows and is composed with icr",
        ),
        # ... a row replacement without what the splice needs, ...
        (
            {"name": "composed", "targets": [f"{__name__}:RowSwapTarget"]},
            r"'row_swap' replaces rows .* lacks .*: foreign_rows .*, decide\(\) .*, the "
            r"settings tempered_fraction, .*placement",
        ),
        # ... a loss term, which verl's actor loss would silently drop.
        (
            {"name": "composed", "targets": ["dcpo", "entropy_reg"]},
            r"its target entropy_reg adds a loss term",
        ),
    ],
    ids=["policy-loss", "no-target", "unknown", "replace-composed", "replace-incapable", "loss"],
)
def test_recipe_refuses_what_it_cannot_run(tmp_path, block, named):
    with pytest.raises(ValueError, match=named):
        _bare_trainer(tmp_path, block)


def test_an_estimator_runs_bonus_stage_targets_only():
    """verl's own trainer sees rewards, lengths and groups: a target that needs a scoring pass
    (DCPO, stage mix) is refused by what it does, naming it."""
    from dcrl.algorithms import make_algorithm
    from dcrl.targets.dcpo import DCPOConfig

    batch = make_batch(seed=1)
    with pytest.raises(ValueError, match=r"dcpo \(stage 'mix'\) needs more .*dcrl.integrations"):
        transforms.estimator_advantages(
            batch.batch["token_level_rewards"],
            batch.batch["response_mask"],
            batch.non_tensor_batch["uid"],
            make_algorithm(DCPOConfig(name="dcpo")),
        )


@pytest.mark.parametrize("norm_by_std", [True, False])
def test_dcrl_grpo_follows_verls_norm_adv_by_std_in_grpo(norm_by_std):
    """verl's `algorithm.norm_adv_by_std_in_grpo` through verl's compute_advantage: dcrl's GRPO
    gives verl's GRPO with the same setting (False: dcrl's advantage_std 'none')."""
    algorithm = OmegaConf.create({"norm_adv_by_std_in_grpo": norm_by_std, "dcrl": {"name": "grpo"}})
    advantages = {
        estimator: compute_advantage(
            make_batch(seed=2),
            adv_estimator=estimator,
            norm_adv_by_std_in_grpo=norm_by_std,
            config=algorithm,
        ).batch["advantages"]
        for estimator in ("grpo", "dcrl_grpo")
    }
    torch.testing.assert_close(advantages["dcrl_grpo"], advantages["grpo"])
    # The setting matters: only a division by the group std makes |A| > 1 on 0/1 scores.
    assert bool((advantages["grpo"].abs() > 1).any()) == norm_by_std


@pytest.mark.parametrize(
    "block", [{"name": "aepo"}, {"name": "composed", "targets": ["dcpo", "icr"]}]
)
def test_recipe_maps_norm_adv_by_std_in_grpo_false_to_advantage_std_none(tmp_path, block):
    config = harness_config(tmp_path, block)
    config.algorithm.norm_adv_by_std_in_grpo = False
    trainer = harness_bare_trainer(config)
    assert trainer.dcrl_config.advantage_std == "none"
    for target in step_targets(trainer.dcrl_algorithm):
        assert target.base.advantage_std == "none"


@pytest.mark.parametrize(
    "norm_by_std, advantage_std, named",
    [
        (
            False,
            "unbiased",
            r"norm_adv_by_std_in_grpo=False .*algorithm.dcrl.advantage_std='unbiased'",
        ),
        (True, "none", r"algorithm.dcrl.advantage_std='none' conflicts with algorithm.norm_adv"),
    ],
)
def test_recipe_refuses_a_grpo_std_that_contradicts_verls(
    tmp_path, norm_by_std, advantage_std, named
):
    config = harness_config(tmp_path, {"name": "dcpo", "advantage_std": advantage_std})
    config.algorithm.norm_adv_by_std_in_grpo = norm_by_std
    with pytest.raises(ValueError, match=named):
        harness_bare_trainer(config)
