"""The built-in tiny policy: a small Llama-architecture causal LM over a character vocabulary.

It is an ordinary Hugging Face model (`LlamaForCausalLM`) with an ordinary fast tokenizer
(`PreTrainedTokenizerFast` over a `tokenizers` WordLevel vocabulary, one token per character), so
once saved with `save_tiny_model` it loads through the same `AutoModelForCausalLM` /
`AutoTokenizer` code path as any real model. It is what the CPU demo and the tests train: about
0.8 M parameters at the defaults, fast enough for a full RL run in minutes on two cores
(bench/README.md, `step_vs_trl.py`, measures its seconds per step).

The tokenizer adds no special tokens when encoding: `decode(encode(s)) == s` for every string over
the alphabet. `<bos>` and `<eos>` exist for callers that want them; `<eos>` ends a response.
Characters outside the alphabet encode to `<unk>`.
"""

from __future__ import annotations

import string
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

# Digits, lowercase letters, space, newline and the arithmetic / formatting punctuation the
# synthetic tasks use. dcrl.tasks exports the synthetic task's own alphabet; pass that one instead.
DEFAULT_TINY_ALPHABET = string.digits + string.ascii_lowercase + " \n" + "+-*/=#:,.()<>"

PAD_TOKEN, BOS_TOKEN, EOS_TOKEN, UNK_TOKEN = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIAL_TOKENS = (PAD_TOKEN, BOS_TOKEN, EOS_TOKEN, UNK_TOKEN)


def build_tiny_tokenizer(alphabet: str = DEFAULT_TINY_ALPHABET) -> PreTrainedTokenizerFast:
    """A character-level fast tokenizer: ids 0-3 are <pad> <bos> <eos> <unk>, then one id per
    character of `alphabet` in order. Left padding (generation layout); no tokens added on encode.
    """
    characters = list(dict.fromkeys(alphabet))  # de-duplicate, keep order
    if not characters:
        raise ValueError("alphabet is empty: pass the characters the tiny tokenizer must cover")
    clashes = [c for c in characters if c in SPECIAL_TOKENS]
    assert not clashes, "a single character cannot equal a multi-character special token"
    vocab = {token: index for index, token in enumerate([*SPECIAL_TOKENS, *characters])}
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK_TOKEN))
    # One piece per character ("[\s\S]" also matches newlines); Fuse joins pieces with no spaces.
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tokenizer.decoder = decoders.Fuse()
    tokenizer.add_special_tokens(list(SPECIAL_TOKENS))
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token=PAD_TOKEN,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        unk_token=UNK_TOKEN,
        padding_side="left",
        clean_up_tokenization_spaces=False,  # would delete the space in "1 ." and break round trips
        model_max_length=1_000_000,
    )


def build_tiny_model(
    alphabet: str = DEFAULT_TINY_ALPHABET,
    *,
    layers: int = 4,
    hidden: int = 128,
    heads: int = 4,
    intermediate: int = 384,
    max_positions: int = 256,
    seed: int = 0,
) -> tuple[LlamaForCausalLM, PreTrainedTokenizerFast]:
    """A randomly initialized tiny Llama and its character tokenizer.

    Args:
        alphabet: the characters the tokenizer covers (the synthetic task's alphabet).
        layers, hidden, heads, intermediate: transformer depth, width, attention heads, MLP width.
            The defaults (4, 128, 4, 384) give about 0.8 M parameters.
        max_positions: longest prompt + response the rotary embedding is configured for.
        seed: initializes the weights; the global torch RNG is left untouched.

    Returns:
        (model in float32 and train mode, tokenizer).
    """
    if hidden % heads != 0:
        raise ValueError(
            f"hidden={hidden} is not divisible by heads={heads}: pick heads dividing it"
        )
    tokenizer = build_tiny_tokenizer(alphabet)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=max_positions,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.train()
    return model, tokenizer


def save_tiny_model(
    model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast, directory: str | Path
) -> Path:
    """Save model (safetensors + config.json) and tokenizer (tokenizer.json) to `directory`, which
    `dcrl.models.load_policy(directory)` and `AutoModelForCausalLM/AutoTokenizer` then load."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
