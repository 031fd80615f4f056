"""The verl adapter runs dcrl's step protocol: a composed DCPO + ICR step through the recipe
trainer's hooks gives the advantages written out from dcrl.core for the same fixed batch
(tests/step_fixture.py, which tests/test_step_protocol.py checks dcrl's own path against), and
ICR alone through verl's `compute_advantage` (the registered dcrl_icr estimator) equals ICR's
part of it. verl's actor is the fixed policy of the fixture."""

import numpy as np
import torch
from omegaconf import OmegaConf
from verl import DataProto
from verl.trainer.ppo.ray_trainer import RayPPOTrainer, compute_advantage

import dcrl.integrations.verl.register  # noqa: F401  (registers dcrl_icr)
from dcrl.core.advantages import grpo_advantages
from dcrl.core.regularizers import icr_bonus
from dcrl.core.shaping import overlong_penalty
from dcrl.integrations.verl.trainer import DcrlRayPPOTrainer
from tests import step_fixture


def _verl_batch(order: torch.Tensor) -> DataProto:
    """The fixture's batch as verl holds it at the old-log-prob pass, rows in `order` (verl's
    balance_batch reorders them)."""
    batch = step_fixture.fixed_batch()
    mask = batch["response_mask"]
    rewards = torch.zeros(mask.shape)
    rows = torch.arange(len(mask))
    rewards[rows, mask.sum(-1) - 1] = batch["scores"]
    tensors = {
        "prompts": batch["prompt_ids"],
        "responses": batch["response_ids"],
        "input_ids": torch.cat([batch["prompt_ids"], batch["response_ids"]], dim=-1),
        "attention_mask": torch.cat([batch["prompt_mask"], mask], dim=-1),
        "response_mask": mask,
        "rm_scores": rewards,
    }
    uids = np.array([f"uid-{int(g)}" for g in batch["group_index"]], dtype=object)
    return DataProto.from_dict(
        tensors={key: value[order] for key, value in tensors.items()},
        non_tensors={"uid": uids[order.numpy()]},
        meta_info={"temperature": 1.0},
    )


def _fixed_policy_pass(self, data):
    temperature = data.meta_info["temperature"]
    logprobs = step_fixture.policy_logprobs(
        data.batch["responses"], data.batch["response_mask"], temperature
    )
    return DataProto.from_dict(
        tensors={"old_log_probs": logprobs, "entropys": torch.full_like(logprobs, 0.3)}
    ), 0.0


def test_composed_dcpo_icr_through_the_verl_recipe_gives_dcrl_cores_advantages(monkeypatch):
    seen = {}

    def update_actor(self, data):
        seen["advantages"] = data.batch["advantages"].clone()
        return DataProto.from_dict(tensors={}, meta_info={"metrics": {}})

    monkeypatch.setattr(RayPPOTrainer, "_compute_old_log_prob", _fixed_policy_pass)
    monkeypatch.setattr(RayPPOTrainer, "_update_actor", update_actor)
    monkeypatch.setattr(RayPPOTrainer, "__init__", lambda self, config, **kw: None)
    config = OmegaConf.create(
        {
            "algorithm": {"dcrl": {"name": "composed", "targets": step_fixture.TARGETS}},
            "actor_rollout_ref": {"rollout": {"temperature": 1.0, "n": 4}},
            "trainer": {"default_local_dir": "unused", "resume_mode": "disable"},
        }
    )
    trainer = DcrlRayPPOTrainer(config)
    trainer.config = config
    (dcpo, _) = trainer.dcrl_algorithm.targets
    decision = dcpo.controller.decide()

    order = torch.randperm(16, generator=torch.Generator().manual_seed(5))
    batch = _verl_batch(order)
    old_log_prob, _ = trainer._compute_old_log_prob(batch)
    batch = batch.union(old_log_prob)
    output = trainer._update_actor(batch)

    expected, alpha, selected = step_fixture.expected_advantages(decision)
    assert alpha > 0 and selected > 0
    # verl's row order changes the order of the group sums (float32): a few roundings of values
    # of the advantages' size; in the fixture's order the two are bit-identical (dcrl's path).
    tolerance = 4 * torch.finfo(torch.float32).eps * float(expected.abs().max())
    torch.testing.assert_close(seen["advantages"], expected[order], rtol=0, atol=tolerance)
    metrics = output.meta_info["metrics"]
    assert metrics["control/alpha"] == alpha and metrics["icr/num_selected"] == selected
    assert dcpo.controller.previous_entropy == metrics["entropy/sampled_nll"]


def test_icr_estimator_on_verls_own_trainer_is_the_protocols_icr():
    order = torch.arange(16)
    batch = _verl_batch(order)
    batch.batch["token_level_rewards"] = batch.batch["rm_scores"]
    icr = {key: value for key, value in step_fixture.TARGETS[1].items() if key != "name"}
    out = compute_advantage(
        batch, adv_estimator="dcrl_icr", config=OmegaConf.create({"dcrl": {"name": "icr", **icr}})
    )
    fixture = step_fixture.fixed_batch()
    mask, scores, groups = fixture["response_mask"], fixture["scores"], fixture["group_index"]
    lengths = mask.sum(-1)
    rewards = scores + overlong_penalty(lengths, step_fixture.LP_F_MAX, step_fixture.LP_F_BUFFER)
    expected, info = icr_bonus(
        grpo_advantages(rewards, groups),
        rewards,
        lengths,
        groups,
        bonus_total=step_fixture.BONUS_TOTAL,
    )
    assert info["num_selected"] > 0
    assert torch.equal(out.batch["advantages"], expected[:, None] * mask.float())
