"""The one step protocol (dcrl.train.step) that dcrl's trainer, the TRL adapter and the verl
adapter call: the entropy signals from one dcrl.core function, refusals by what a target does,
and a composed DCPO + ICR step that gives the advantages written out from dcrl.core
(tests/step_fixture.py; tests/verl/test_step_protocol.py checks the verl adapter on the same
batch, tests/test_integration_trl.py the TRL adapter)."""

from __future__ import annotations

import pytest
import torch

from dcrl.algorithms import StepContext, make_algorithm
from dcrl.algorithms.base import AlgorithmConfig
from dcrl.algorithms.composed import Composed, ComposedConfig
from dcrl.algorithms.grpo import GRPOConfig
from dcrl.core.logprobs import entropy_signals, entropy_sums
from dcrl.rollout.base import RolloutBatch
from dcrl.targets import StepDraft, Target, TargetConfig
from dcrl.targets.aepo import AEPOConfig
from dcrl.targets.dcpo import DCPOConfig
from dcrl.train import step
from dcrl.train.config import load_run_config
from dcrl.train.recipes import recipe_path
from dcrl.train.trainer import Trainer
from tests import step_fixture
from tests.helpers import TEST_REWARD, record_prepare


def test_entropy_sums_and_signals_by_hand():
    logprobs = torch.tensor([[-1.0, -2.0, -7.0], [-3.0, -7.0, -7.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    is_reinforce = torch.tensor([False, True])
    entropy = torch.tensor([[0.5, 0.5, 9.0], [1.0, 9.0, 9.0]])
    sums = entropy_sums(logprobs, mask, is_reinforce, entropy)
    # Σ NLL = 1 + 2 + 3 over 3 tokens; the on-policy row alone: 1 + 2 over 2; Σ entropy = 2,
    # of which the on-policy row's 0.5 + 0.5.
    assert sums.tolist() == [6.0, 3.0, 3.0, 2.0, 2.0, 1.0]
    assert entropy_signals(sums) == {
        "entropy/sampled_nll": 2.0,
        "entropy/on_policy_nll": 1.5,
        "entropy/full": pytest.approx(2.0 / 3.0),
        "entropy/on_policy_full": 0.5,
    }
    # Summing the parts (micro-batches, processes) first gives the whole batch's signals.
    parts = entropy_sums(logprobs[:1], mask[:1], is_reinforce[:1], entropy[:1]) + entropy_sums(
        logprobs[1:], mask[1:], is_reinforce[1:], entropy[1:]
    )
    assert torch.equal(parts, sums)
    assert entropy_signals(entropy_sums(logprobs, mask * 0))["entropy/sampled_nll"] == 0.0


class SwapRows(Target):
    """A user's target that replaces rows, under a name the adapters have never heard of."""

    name = "swap_rows"
    stage = "replace"

    def apply(self, draft: StepDraft, ctx: StepContext) -> dict[str, float]:
        return {}


def test_row_replacement_is_found_by_stage_not_by_name():
    composed = make_algorithm(ComposedConfig(name="composed", targets=["icr", "aepo"]))
    assert [t.name for t in step.row_replacing_targets(composed)] == ["aepo"]
    assert step.replaces_rows(make_algorithm(AEPOConfig(name="aepo")))
    assert not step.replaces_rows(make_algorithm(DCPOConfig(name="dcpo")))
    assert not step.replaces_rows(make_algorithm(GRPOConfig()))
    custom = Composed(AlgorithmConfig(), [SwapRows(TargetConfig(name="x"), AlgorithmConfig())])
    assert step.replaces_rows(custom)


def _fixed_rollout_batch() -> tuple[RolloutBatch, torch.Tensor]:
    return step_fixture.rollout_batch(), step_fixture.fixed_batch()["scores"]


def test_composed_dcpo_icr_step_gives_the_advantages_of_dcrl_core():
    algorithm = make_algorithm(ComposedConfig(name="composed", targets=step_fixture.TARGETS))
    rollout, scores = _fixed_rollout_batch()
    width = step_fixture.RESPONSE_LENGTH

    def logprob_pass(input_ids, attention_mask, response_mask, temperature=1.0, with_entropy=False):
        return step_fixture.policy_logprobs(input_ids[:, -width:], response_mask, temperature), None

    (dcpo, _) = algorithm.targets
    decision = dcpo.controller.decide()
    ctx = StepContext(step=1, rollout=None, logprob_pass=logprob_pass)
    train_batch, metrics = step.prepare(algorithm, rollout, scores, ctx)
    expected, alpha, selected = step_fixture.expected_advantages(decision)
    assert alpha > 0 and selected > 0  # both targets act on this batch
    assert metrics["control/alpha"] == alpha and metrics["icr/num_selected"] == selected
    torch.testing.assert_close(train_batch.advantages, expected, rtol=0, atol=0)


@pytest.mark.slow
def test_dcrl_trainer_trains_one_composed_dcpo_icr_step(tmp_path, monkeypatch):
    """The recipe tiny-dcpo-icr, shrunk to one small step: dcrl's trainer runs it through the
    protocol, both targets act, and the entropy signal reaches DCPO's controller."""
    config = load_run_config(
        recipe_path("tiny-dcpo-icr"),
        [
            "model.name=tiny",
            f"data.reward={TEST_REWARD}",
            "data.train_size=32",
            "rollout.n=4",
            "rollout.max_new_tokens=12",
            "rollout.batch_size=16",
            "train.steps=1",
            "train.prompts_per_step=4",
            "train.mini_batch_prompts=2",
            "train.micro_batch_size=8",
            "train.save_every=0",
            "log.console=false",
            "log.tensorboard=false",
            f"log.output_dir={tmp_path / 'run'}",
        ],
    )
    trainer = Trainer(config)
    steps = record_prepare(trainer)
    fed_back = []
    original_after_update = step.after_update
    monkeypatch.setattr(
        step,
        "after_update",
        lambda algorithm, sums: (
            fed_back.append((algorithm, sums)) or original_after_update(algorithm, sums)
        ),
    )
    metrics = trainer.train_step()
    assert len(steps) == 1
    for name in ("control/alpha", "icr/num_selected", "entropy/on_policy_nll", "entropy/full"):
        assert name in metrics, name
    # The update's entropy reaches the controllers through the protocol, as in the adapters.
    ((algorithm, sums),) = fed_back
    assert algorithm is trainer.algorithm
    assert entropy_signals(sums) == {name: metrics[name] for name in step.ENTROPY_SIGNALS}
    (dcpo, _) = trainer.algorithm.targets
    assert dcpo.controller.previous_entropy == metrics["entropy/on_policy_nll"]


def test_step_context_takes_one_logprob_pass_under_its_new_or_old_name():
    def logprob_pass(*args, **kwargs):
        return "pass", None

    new = StepContext(step=3, rollout=None, logprob_pass=logprob_pass)
    old = StepContext(step=3, rollout=None, score=logprob_pass)  # the deprecated keyword
    assert new == old
    assert old.logprob_pass is logprob_pass and new.score is logprob_pass
    assert new.old_logprobs(None, None, None) == "pass"
    assert StepContext(3, None, logprob_pass, True).old_logprobs(None, None, None) is None
    with pytest.raises(TypeError, match="one log-prob pass"):
        StepContext(step=3, rollout=None)
    with pytest.raises(TypeError, match="one log-prob pass"):
        StepContext(step=3, rollout=None, logprob_pass=logprob_pass, score=logprob_pass)
