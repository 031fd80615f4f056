"""AEPO's `measure_replaced` (a dcrl extension, bench/README.md "Control over a range"): the
controller reads the entropy of all the policy's own answers of the step, the on-policy rows the
REINFORCE rows replace included, instead of the rows left after the swap."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from bench.experiments.control_range import signal_series
from dcrl.algorithms import make_algorithm
from dcrl.targets.aepo import AEPOConfig, all_own_entropy
from dcrl.train.config import load_run_config
from dcrl.train.sinks import policy_entropy
from dcrl.train.trainer import Trainer
from tests.helpers import record_prepare, tiny_config, tiny_overrides


def test_all_own_entropy_weights_the_kept_and_replaced_rows_by_tokens():
    """By hand: 30 kept tokens at NLL 1.0 / entropy 0.8, and 10 replaced tokens summing to 20
    (NLL) and 6 (entropy): (30 + 20) / 40 = 1.25 and (24 + 6) / 40 = 0.75."""
    update = {"entropy/on_policy_nll": 1.0, "entropy/on_policy_full": 0.8}
    replaced = {"nll": 20.0, "entropy": 6.0, "tokens": 10.0, "kept_tokens": 30.0}
    assert all_own_entropy(update, replaced) == {
        "entropy/all_own_nll": pytest.approx(1.25),
        "entropy/all_own_full": pytest.approx(0.75),
    }
    nothing = {"nll": 0.0, "entropy": 0.0, "tokens": 0.0, "kept_tokens": 30.0}
    assert all_own_entropy(update, nothing) == {
        "entropy/all_own_nll": 1.0,
        "entropy/all_own_full": pytest.approx(0.8),
    }


def test_measure_replaced_needs_an_on_policy_signal():
    with pytest.raises(ValueError, match="measure_replaced=true .* on_policy_full"):
        AEPOConfig(measure_replaced=True, entropy_signal="full").validate()
    AEPOConfig(measure_replaced=True, entropy_signal="on_policy_full").validate()


def _reference_entropy(model: torch.nn.Module, batch, rows: list[int]) -> tuple[float, float]:
    """The token-mean full-vocabulary entropy and NLL of the on-policy answers `rows`, each row
    run alone without padding (a plain softmax: no code of dcrl's log-prob passes)."""
    entropy_sum = nll_sum = tokens = 0.0
    with torch.no_grad():
        for row in rows:
            prompt = batch.prompt_ids[row][batch.prompt_mask[row].bool()]
            length = int(batch.response_lengths[row])
            response = batch.response_ids[row][:length]
            ids = torch.cat([prompt, response])[None]
            logits = model(input_ids=ids).logits[0, len(prompt) - 1 : -1].double()
            logp = torch.log_softmax(logits, dim=-1)
            entropy_sum += float(-(logp.exp() * logp).sum())
            nll_sum += float(-logp.gather(-1, response[:, None]).sum())
            tokens += length
    return entropy_sum / tokens, nll_sum / tokens


@pytest.mark.slow
def test_the_controller_reads_every_on_policy_answer_the_replaced_ones_included(tmp_path):
    """One AEPO step with rows replaced, in one optimizer step (so the update measures the
    policy that sampled): entropy/all_own_* is the entropy of all the step's on-policy answers
    computed by hand, the update's on_policy_* that of the rows left, and the controller read
    the first. Tolerance: float32 logits summed in other orders (padding, batch shape) against the
    float64 reference, relative 1e-4 over a few hundred tokens."""
    config = tiny_config(
        tmp_path / "run",
        "aepo",
        "train.prompts_per_step=8",
        "train.mini_batch_prompts=8",
        "train.micro_batch_size=16",
        "train.steps=1",
        "algorithm.controller=pi",
        "algorithm.weight_max=3.0",
        "algorithm.temperature_high=2.0",
        "algorithm.target_entropy=50.0",  # far above: the controller pushes at full weight
        "algorithm.initial_entropy=0.0",
        "algorithm.max_reinforce=4",
        "algorithm.entropy_signal=on_policy_full",
        "algorithm.measure_replaced=true",
    )
    trainer = Trainer(config)
    steps = record_prepare(trainer)
    (metrics,) = trainer.fit()
    (step,) = steps
    assert metrics["control/num_reinforce"] > 0  # rows were replaced
    model = copy.deepcopy(trainer.model)
    model.load_state_dict(step.old_policy_state)
    model.eval()
    replaced = step.train_batch.extras["is_reinforce"].tolist()  # positions swapped
    every = list(range(len(replaced)))
    kept = [row for row in every if not replaced[row]]
    entropy, nll = _reference_entropy(model, step.batch, every)
    assert metrics["entropy/all_own_full"] == pytest.approx(entropy, rel=1e-4)
    assert metrics["entropy/all_own_nll"] == pytest.approx(nll, rel=1e-4)
    # the update's own signal is the rows left: the same hand computation over those alone
    kept_entropy, kept_nll = _reference_entropy(model, step.batch, kept)
    assert metrics["entropy/on_policy_full"] == pytest.approx(kept_entropy, rel=1e-4)
    assert metrics["entropy/on_policy_nll"] == pytest.approx(kept_nll, rel=1e-4)
    (target,) = trainer.algorithm.targets
    assert target.controller.previous_entropy == metrics["entropy/all_own_full"]


def test_verls_splice_refuses_measure_replaced():
    """verl's tempered-row splice does not measure the rows it replaces: asked to, it names the
    setting to turn off instead of holding the entropy of the rows left."""
    pytest.importorskip("numpy")
    from dcrl.integrations.verl.transforms import missing_splice_capabilities

    overrides = tiny_overrides(
        Path("unused"),
        "aepo",
        "algorithm.entropy_signal=on_policy_full",
        "algorithm.measure_replaced=true",
    )
    (target,) = make_algorithm(load_run_config(None, overrides).algorithm).targets
    assert missing_splice_capabilities(target) == [
        "measure_replaced=false (the splice does not measure the on-policy rows it replaces)"
    ]


def test_readers_take_every_own_answer_where_it_was_measured():
    """The logs' readers (policy_entropy for reports, the control-range bench's held signal)
    take the all-own-answers entropy where a run logged it, and the rows-left one otherwise."""
    both = {
        "entropy/sampled_nll": 3.0,
        "entropy/on_policy_nll": 2.0,
        "entropy/all_own_nll": 1.0,
        "entropy/on_policy_full": 0.5,
        "entropy/all_own_full": 0.25,
    }
    older = {
        "entropy/sampled_nll": 3.0,
        "entropy/on_policy_nll": 2.0,
        "entropy/on_policy_full": 0.5,
    }
    assert policy_entropy(both) == 1.0 and policy_entropy(older) == 2.0
    assert policy_entropy({"entropy/sampled_nll": 3.0}) == 3.0 and policy_entropy({}) is None
    assert signal_series([both, older]) == [0.25, 0.5]
