"""The fused head (dcrl.core.fused_head) against the naive full-logits path, and its use by the
trainer (dcrl.train.forward).

Tolerance. In float64 both paths compute the same sums in another order (a block of positions
at a time, ∂W accumulated over blocks): each result moves by a few ulps of its magnitude times the
number of terms summed (V or H, here ≤ 64, or the positions, ≤ 40), i.e. ~1e-14 for values of
order 1-10. 1e-10 leaves four orders of margin and is still far below any real error (a wrong
term, a missing 1/T or a mis-indexed block moves results by ≥ 1e-3).
"""

from __future__ import annotations

import logging

import pytest
import torch

from dcrl.core.fused_head import fused_logprobs_entropy, naive_logprobs_entropy
from dcrl.train import forward
from dcrl.train.forward import head_path, lm_head_of, response_logprobs
from tests.helpers import tiny_config

TOL = 1e-10


def _loss(logprobs, entropy, entropy_grad, seed=1):
    generator = torch.Generator().manual_seed(seed)
    weights = torch.randn(logprobs.shape, generator=generator, dtype=logprobs.dtype)
    loss = (logprobs * weights).sum()
    if entropy_grad:
        loss = loss + (entropy * weights.flip(-1)).sum() * 0.5
    return loss


@pytest.mark.parametrize("temperature", [1.0, 0.6])
@pytest.mark.parametrize("entropy_grad", [False, True], ids=["logprob", "logprob+entropy"])
@pytest.mark.parametrize(
    "transform",
    [
        {},
        {"bias": True},
        {"logit_scale": 0.4},
        {"softcap": 2.5},
        {"bias": True, "logit_scale": 1.7, "softcap": 4.0},
    ],
    ids=["plain", "bias", "scale", "softcap", "all"],
)
@pytest.mark.parametrize("head_trained", [True, False], ids=["head-trained", "head-frozen"])
def test_gradients_equal_the_naive_path_in_float64(
    temperature, entropy_grad, transform, head_trained
):
    torch.manual_seed(0)
    rows, length, size, vocab = 3, 7, 8, 64
    hidden = torch.randn(rows, length, size, dtype=torch.float64, requires_grad=True)
    weight = (torch.randn(vocab, size, dtype=torch.float64) * 1.5).requires_grad_(head_trained)
    bias = None
    if transform.get("bias"):
        bias = torch.randn(vocab, dtype=torch.float64).requires_grad_(head_trained)
    options = {k: v for k, v in transform.items() if k != "bias"}
    tokens = torch.randint(0, vocab, (rows, length))
    inputs = (
        [hidden]
        + ([weight] if head_trained else [])
        + ([bias] if head_trained and bias is not None else [])
    )
    results = []
    for fused in (True, False):
        if fused:  # blocks of 4 positions: 21 positions give 5 full blocks and a partial one
            logprobs, entropy = fused_logprobs_entropy(
                hidden,
                weight,
                tokens,
                temperature,
                bias=bias,
                with_entropy=True,
                chunk_size=4,
                **options,
            )
        else:
            logprobs, entropy = naive_logprobs_entropy(
                hidden, weight, tokens, temperature, bias=bias, **options
            )
        grads = torch.autograd.grad(_loss(logprobs, entropy, entropy_grad), inputs)
        results.append([logprobs, entropy, *grads])
    for fused_value, naive_value in zip(*results, strict=True):
        torch.testing.assert_close(fused_value, naive_value, atol=TOL, rtol=0)


@pytest.mark.parametrize("head_trained", [True, False], ids=["head-trained", "head-frozen"])
def test_an_entropy_gradient_not_announced_is_still_exact(head_trained):
    """entropy_grad=False only skips preparing the entropy's gradient in forward (frozen head);
    a gradient that reaches the entropy anyway goes through the recomputing backward."""
    torch.manual_seed(1)
    hidden = torch.randn(2, 5, 6, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(30, 6, dtype=torch.float64).requires_grad_(head_trained)
    tokens = torch.randint(0, 30, (2, 5))
    inputs = [hidden, weight] if head_trained else [hidden]
    fused = fused_logprobs_entropy(
        hidden, weight, tokens, 0.9, with_entropy=True, entropy_grad=False, chunk_size=3
    )
    naive = naive_logprobs_entropy(hidden, weight, tokens, 0.9)
    for got, expected in zip(
        torch.autograd.grad(_loss(*fused, True), inputs),
        torch.autograd.grad(_loss(*naive, True), inputs),
        strict=True,
    ):
        torch.testing.assert_close(got, expected, atol=TOL, rtol=0)


def test_no_grad_saves_nothing_and_entropy_is_optional():
    hidden = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(9, 4, dtype=torch.float64)
    tokens = torch.randint(0, 9, (2, 3))
    with torch.no_grad():
        logprobs, entropy = fused_logprobs_entropy(hidden, weight, tokens)
    assert entropy is None and not logprobs.requires_grad
    reference, _ = naive_logprobs_entropy(hidden, weight, tokens)
    torch.testing.assert_close(logprobs, reference.detach(), atol=TOL, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_float32_and_bf16_match_the_naive_path_to_their_precision(dtype):
    """Both paths project in the inputs' dtype and reduce in float32: the log-probs agree to the
    rounding of the projection (bf16: 2^-8 relative on logits of order 10 -> ~0.05), and so do the
    gradients (relative to their largest entry)."""
    torch.manual_seed(0)
    hidden = torch.randn(2, 9, 32).to(dtype).requires_grad_()
    weight = (torch.randn(500, 32) / 2).to(dtype).requires_grad_()
    tokens = torch.randint(0, 500, (2, 9))
    outputs = []
    for fused in (True, False):
        if fused:
            logprobs, entropy = fused_logprobs_entropy(
                hidden, weight, tokens, 0.8, with_entropy=True, chunk_size=5
            )
        else:
            logprobs, entropy = naive_logprobs_entropy(hidden, weight, tokens, 0.8)
        assert logprobs.dtype == entropy.dtype == torch.float32
        grads = torch.autograd.grad(_loss(logprobs, entropy, True), [hidden, weight])
        assert grads[0].dtype == grads[1].dtype == dtype
        outputs.append((logprobs, entropy, grads))
    (fused_lp, fused_ent, fused_grads), (naive_lp, naive_ent, naive_grads) = outputs
    atol = 1e-4 if dtype == torch.float32 else 0.1
    torch.testing.assert_close(fused_lp, naive_lp, atol=atol, rtol=0)
    torch.testing.assert_close(fused_ent, naive_ent, atol=atol, rtol=0)
    for fused_grad, naive_grad in zip(fused_grads, naive_grads, strict=True):
        scale = float(naive_grad.float().abs().max())
        rel = 1e-4 if dtype == torch.float32 else 0.05
        torch.testing.assert_close(fused_grad.float(), naive_grad.float(), atol=rel * scale, rtol=0)


def test_bad_inputs_are_refused_naming_the_argument():
    hidden = torch.randn(2, 3, 4)
    with pytest.raises(ValueError, match="weight must have shape"):
        fused_logprobs_entropy(hidden, torch.randn(9, 5), torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(TypeError, match="one dtype"):
        fused_logprobs_entropy(
            hidden, torch.randn(9, 4).double(), torch.zeros(2, 3, dtype=torch.long)
        )
    with pytest.raises(ValueError, match="temperature"):
        fused_logprobs_entropy(hidden, torch.randn(9, 4), torch.zeros(2, 3, dtype=torch.long), 0.0)


# -- through a model: dcrl.train.forward ----------------------------------------------------------


def _tiny(dtype=torch.float64):
    from dcrl.models.tiny import build_tiny_model

    model, _ = build_tiny_model(layers=2, hidden=32, heads=2, intermediate=64)
    return model.to(dtype)


def _batch(vocab, padded=True, seed=0):
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(3, vocab, (3, 14), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    if padded:
        attention_mask[0, :4] = 0  # left padding
        attention_mask[2, :2] = 0
    return input_ids, attention_mask, input_ids[:, -6:]


def _scores_and_grads(model, fused, entropy_grad, temperature=0.7, padded=True):
    model.zero_grad(set_to_none=True)
    input_ids, attention_mask, response = _batch(model.config.vocab_size, padded)
    logprobs, entropy = response_logprobs(
        model,
        input_ids,
        attention_mask,
        response,
        temperature=temperature,
        with_entropy=True,
        entropy_grad=entropy_grad,
        fused=fused,
    )
    assert entropy.requires_grad == entropy_grad
    _loss(logprobs, entropy, entropy_grad).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return logprobs.detach(), entropy.detach(), grads


def _assert_same(first, second):
    fused_lp, fused_ent, fused_grads = first
    naive_lp, naive_ent, naive_grads = second
    torch.testing.assert_close(fused_lp, naive_lp, atol=TOL, rtol=0)
    torch.testing.assert_close(fused_ent, naive_ent, atol=TOL, rtol=0)
    assert fused_grads.keys() == naive_grads.keys() and fused_grads
    for name in naive_grads:
        torch.testing.assert_close(fused_grads[name], naive_grads[name], atol=TOL, rtol=0)


@pytest.mark.parametrize("entropy_grad", [False, True], ids=["logprob", "true-entropy"])
def test_tied_embeddings_full_finetune_equals_the_naive_path(entropy_grad):
    """The tiny Llama ties its head to the embedding: the embedding's gradient gathers both
    uses, through the fused backward as through autograd."""
    model = _tiny()
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    assert head_path(model) == "fused"
    _assert_same(
        _scores_and_grads(model, True, entropy_grad), _scores_and_grads(model, False, entropy_grad)
    )


def test_lora_on_attention_with_a_frozen_head_equals_the_naive_path():
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(
        _tiny(), LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    )
    for name, parameter in model.named_parameters():  # B = 0 at init would hide A's gradient
        if "lora_B" in name:
            torch.nn.init.normal_(parameter, std=0.1)
    assert head_path(model) == "fused"
    fused, naive = _scores_and_grads(model, True, False), _scores_and_grads(model, False, False)
    assert all("lora_" in name for name in naive[2])
    _assert_same(fused, naive)


@pytest.mark.parametrize(
    "family", ["gemma2-softcap", "cohere-scale", "granite-scale", "qwen2-untied"]
)
def test_families_with_a_transform_after_the_head_equal_their_own_logits(family):
    """The model's own forward (its soft cap or scale included) is the naive path here. No
    padding: some of these families' eager attention gives NaN on fully masked rows, either way."""
    import transformers

    common = dict(
        vocab_size=50,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=8,
        pad_token_id=0,
    )
    if family == "gemma2-softcap":
        config = transformers.Gemma2Config(**common, final_logit_softcapping=1.5)
        model_class = transformers.Gemma2ForCausalLM
    elif family == "cohere-scale":
        config = transformers.CohereConfig(**common, logit_scale=0.3)
        model_class = transformers.CohereForCausalLM
    elif family == "granite-scale":
        config = transformers.GraniteConfig(**common, logits_scaling=3.0)
        model_class = transformers.GraniteForCausalLM
    else:
        config = transformers.Qwen2Config(**common, tie_word_embeddings=False)
        model_class = transformers.Qwen2ForCausalLM
    torch.manual_seed(0)
    model = model_class(config).double()
    head = lm_head_of(model)
    assert not isinstance(head, str), head
    assert (head.softcap is not None) == (family == "gemma2-softcap")
    assert (head.logit_scale != 1.0) == family.endswith("-scale")
    _assert_same(
        _scores_and_grads(model, True, True, padded=False),
        _scores_and_grads(model, False, True, padded=False),
    )


def test_a_model_it_cannot_handle_takes_the_naive_path_and_says_so(caplog):
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM

    class CustomHeadLM(LlamaForCausalLM):  # a forward the fused head does not know
        pass

    base = _tiny()
    custom = CustomHeadLM(base.config).double()
    custom.load_state_dict(base.state_dict())
    lora_on_head = get_peft_model(
        _tiny(), LoraConfig(r=2, target_modules=["q_proj", "lm_head"], task_type="CAUSAL_LM")
    )
    assert "CustomHeadLM is not a model class the fused head knows" in head_path(custom)
    assert "not a plain torch.nn.Linear" in head_path(lora_on_head)
    for model in (custom, lora_on_head):
        forward._reported.pop(model, None)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="dcrl.train.forward"):
            default = _scores_and_grads(model, True, False)
            _scores_and_grads(model, True, False)  # said once per model, not per call
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "naive path" in warnings[0].getMessage()
        # the fallback is the full-logits path itself: bit for bit
        naive = _scores_and_grads(model, False, False)
        for got, expected in zip(default[:2], naive[:2], strict=True):
            assert torch.equal(got, expected)


@pytest.mark.slow
def test_a_training_step_is_unchanged_by_the_fused_head(tmp_path):
    """One step of DCPO (tempered old-log-prob pass at T != 1, old-log-prob pass, update) in
    float64, fused (the default) and train.fused_head=false: the same gradients to 1e-10, and the
    same log-probs in every scoring pass."""
    from dcrl.train.trainer import Trainer

    gradients, scored = {}, {}
    for fused in (True, False):
        config = tiny_config(
            tmp_path / f"run-{fused}",
            "dcpo",
            "train.steps=1",
            "train.grad_clip=1e6",
            f"train.fused_head={str(fused).lower()}",
        )
        assert config.train.fused_head is fused
        trainer = Trainer(config)
        trainer.model.double()
        calls = []
        original = forward.response_logprobs

        def recording(*args, calls=calls, original=original, **kwargs):
            out = original(*args, **kwargs)
            calls.append((kwargs.get("temperature", 1.0), kwargs["fused"], out[0].detach().clone()))
            return out

        forward.response_logprobs = recording  # the update's and the log-prob pass's calls
        try:
            grads = []
            trainer.optimizer.register_step_pre_hook(
                lambda *_, grads=grads, trainer=trainer: grads.append(
                    [p.grad.clone() for p in trainer.model.parameters()]
                )
            )
            trainer.train_step()
        finally:
            forward.response_logprobs = original
        gradients[fused], scored[fused] = grads, calls
    assert [c[1] for c in scored[True]] == [True] * len(scored[True])
    assert [c[1] for c in scored[False]] == [False] * len(scored[False])
    assert [c[0] for c in scored[True]] == [c[0] for c in scored[False]]
    assert any(c[0] != 1.0 for c in scored[True])  # DCPO's tempered pass went through it
    for (_, _, a), (_, _, b) in zip(scored[True], scored[False], strict=True):
        torch.testing.assert_close(a, b, atol=TOL, rtol=0)
    assert len(gradients[True]) == len(gradients[False]) >= 1
    for step_true, step_false in zip(gradients[True], gradients[False], strict=True):
        for g_fused, g_naive in zip(step_true, step_false, strict=True):
            torch.testing.assert_close(g_fused, g_naive, atol=TOL, rtol=0)
