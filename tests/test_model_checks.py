"""A model folder that is not a causal LM, or whose weights miss layers of its architecture, is
refused unless the user opts in (dcrl/models/checks.py); the refusal names the folder."""

from __future__ import annotations

import pytest

from dcrl.models import load_policy
from tests.fault_inputs import _bert, _half, _model, _rewrite_weights

pytestmark = pytest.mark.faults


@pytest.mark.parametrize(
    ("damage", "problem"),
    [(_rewrite_weights(_half), "are missing from its weights"), (_bert, "not a causal language")],
    ids=["half-the-weights", "bert"],
)
def test_a_foreign_model_is_refused_unless_the_user_opts_in(tmp_path, damage, problem):
    _model(damage)(tmp_path)  # writes tmp_path/model
    with pytest.raises(ValueError, match=problem) as refused:
        load_policy(tmp_path / "model")
    assert str(tmp_path / "model") in str(refused.value)
    model, _ = load_policy(tmp_path / "model", strict=False)
    assert sum(p.numel() for p in model.parameters()) > 0
