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


def _bert_lm_head_directory(folder, *, is_decoder: bool):
    """A tiny BertLMHeadModel saved with tiny-arith's tokenizer (built here, nothing downloaded)."""
    from transformers import AutoTokenizer, BertConfig, BertLMHeadModel

    from dcrl.models.loading import builtin_checkpoint_directory

    tokenizer = AutoTokenizer.from_pretrained(builtin_checkpoint_directory("tiny-arith"))
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
        is_decoder=is_decoder,
    )
    BertLMHeadModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_a_bidirectional_encoder_with_a_causal_lm_head_is_refused_before_training(tmp_path):
    """BertLMHeadModel is in transformers' causal-LM mapping, but with is_decoder false each
    token attends to the ones after it: `dcrl train` must refuse it, naming config.json and the
    setting that fixes it, and write no step."""
    from typer.testing import CliRunner

    from dcrl.cli import app
    from tests.helpers import tiny_overrides

    folder = _bert_lm_head_directory(tmp_path / "bert", is_decoder=False)
    run_dir = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", *tiny_overrides(run_dir), f"model.name={folder}"])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and "Traceback" not in result.output
    assert str(folder / "config.json") in errors[0]
    assert "is_decoder" in errors[0] and '"is_decoder": true' in errors[0]
    assert not (run_dir / "metrics.jsonl").exists()
    with pytest.raises(ValueError, match="is_decoder"):  # no opt-out: it can only train wrong
        load_policy(folder, strict=False)


def test_an_encoder_configured_as_a_decoder_loads(tmp_path):
    folder = _bert_lm_head_directory(tmp_path / "bert", is_decoder=True)
    model, _ = load_policy(folder)
    assert model.config.is_decoder is True


@pytest.mark.parametrize(
    ("config_class", "expected"),
    [
        ("LlamaConfig", None),
        ("Qwen2Config", None),
        ("Gemma2Config", None),
        ("GPT2Config", None),
        ("GPTNeoXConfig", None),  # declares is_decoder, yet is a decoder whatever it says
        ("BertConfig", "is_decoder"),
        ("RobertaConfig", "is_decoder"),
        ("BertGenerationConfig", "is_decoder"),
    ],
)
def test_which_architectures_need_is_decoder_comes_from_transformers(config_class, expected):
    import transformers

    from dcrl.models.checks import decoder_switch

    assert decoder_switch(getattr(transformers, config_class)()) == expected
