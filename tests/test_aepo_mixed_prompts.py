"""AEPO's `tempered_prompts: mixed` (a dcrl extension, issue 27): the prompts re-sampled at T are
those whose on-policy group is mixed, most mixed first, instead of the step's first prompts;
checked by hand, through the algorithm's step on the fixed batch, and refused by verl's splice."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dcrl.algorithms import make_algorithm
from dcrl.core.regularizers import mixed_prompts_first
from dcrl.step_data import StepContext
from dcrl.targets.aepo import AEPOSettings, tempered_prompt_ids
from dcrl.train.config import load_run_config
from tests.helpers import tiny_overrides
from tests.test_algorithm_reference import fixed_rollout, score, tempered_rollout
from tests.test_control_range import decision


def test_mixed_prompts_first_by_hand():
    # five prompts × 4 answers: all right, 2/4, 1/4, none, 3/4
    correct = [1, 1, 1, 1, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 0]
    scores = torch.tensor(correct, dtype=torch.float32)
    groups = torch.arange(5).repeat_interleave(4)
    # 2/4 is the most mixed; 1/4 and 3/4 tie (prompt order); then the settled ones in order
    assert mixed_prompts_first(scores, groups).tolist() == [1, 2, 4, 0, 3]
    assert mixed_prompts_first(torch.zeros(20), groups).tolist() == [0, 1, 2, 3, 4]


def test_tempered_prompt_ids_first_or_mixed():
    scores = torch.tensor([1.0, 1, 1, 0, 0, 0, 1, 1, 0, 1, 1, 0, 0, 0, 0, 0])
    groups = torch.arange(8).repeat_interleave(2)  # 8 prompts: mixed are 1, 4, 5
    first = AEPOSettings()
    assert first.tempered_prompts == "first"  # the code's choice is the default
    assert tempered_prompt_ids(scores, groups, decision(1.2), first) == [0, 1]  # a quarter
    mixed = AEPOSettings(tempered_prompts="mixed")
    assert tempered_prompt_ids(scores, groups, decision(1.2), mixed) == [1, 4]
    # a controller weight of 2 re-samples twice as many: the mixed ones, then the first others
    assert tempered_prompt_ids(scores, groups, decision(1.2, 2.0), mixed) == [1, 4, 5, 0]


def test_the_step_resamples_the_mixed_prompts():
    """The fixed batch's 4 prompts in mixed-first order are 0, 3, 1, 2; half of them are
    re-sampled: 0 and 3, where the code's choice would be 0 and 1."""
    batch, scores = fixed_rollout()
    assert mixed_prompts_first(scores, batch.group_index).tolist() == [0, 3, 1, 2]
    asked = {}
    for prompts in ("first", "mixed"):
        overrides = tiny_overrides(
            Path("unused"),
            "aepo",
            f"algorithm.tempered_prompts={prompts}",
            "algorithm.tempered_fraction=0.5",
        )
        algorithm = make_algorithm(load_run_config(None, overrides).algorithm)

        def recording(prompt_indices, n, temperature, prompts=prompts):
            asked.setdefault(prompts, []).append(list(prompt_indices))
            return tempered_rollout(prompt_indices, n, temperature)

        ctx = StepContext(step=1, rollout=recording, logprob_pass=score)
        train_batch, _ = algorithm.prepare(batch, scores, ctx)
        assert len(train_batch) == len(batch)
    assert asked == {"first": [[0, 1]], "mixed": [[0, 3]]}


def test_verls_splice_refuses_mixed_prompts():
    pytest.importorskip("numpy")
    from dcrl.integrations.verl.transforms import missing_splice_capabilities

    overrides = tiny_overrides(Path("unused"), "aepo", "algorithm.tempered_prompts=mixed")
    (target,) = make_algorithm(load_run_config(None, overrides).algorithm).targets
    assert missing_splice_capabilities(target) == [
        "tempered_prompts=mixed (the splice re-samples the first prompts: set "
        "tempered_prompts=first)"
    ]
    plain = make_algorithm(load_run_config(None, tiny_overrides(Path("u"), "aepo")).algorithm)
    assert missing_splice_capabilities(plain.targets[0]) == []
