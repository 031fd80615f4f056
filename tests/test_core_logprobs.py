import math

import pytest
import torch

from dcrl.core.logprobs import (
    default_chunk_size,
    logprobs_and_entropy,
    sampled_token_nll,
    token_entropy,
    token_logprobs,
)


def naive_logprobs(logits, tokens, temperature):
    full = torch.log_softmax(logits.double() / temperature, dim=-1)
    return full.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


def naive_entropy(logits, temperature):
    """−Σ p log p written out explicitly, in float64."""
    probs = torch.softmax(logits.double() / temperature, dim=-1)
    return -(probs * probs.log()).sum(-1)


def random_batch(rows=3, length=7, vocab=11, scale=3.0, dtype=torch.float32):
    logits = (torch.randn(rows, length, vocab) * scale).to(dtype)
    tokens = torch.randint(0, vocab, (rows, length))
    return logits, tokens


@pytest.mark.parametrize("temperature", [0.3, 1.0, 1.7])
@pytest.mark.parametrize("chunk_size", [1, 4, 5, 21, 1000])
def test_values_match_naive_log_softmax(temperature, chunk_size):
    logits, tokens = random_batch()  # 21 positions: chunk 4 and 5 do not divide them
    expected_logprobs = naive_logprobs(logits, tokens, temperature)
    expected_entropy = naive_entropy(logits, temperature)

    logprobs = token_logprobs(logits, tokens, temperature, chunk_size=chunk_size)
    entropy = token_entropy(logits, temperature, chunk_size=chunk_size)
    both_logprobs, both_entropy = logprobs_and_entropy(
        logits, tokens, temperature, chunk_size=chunk_size
    )

    assert logprobs.shape == (3, 7) and logprobs.dtype == torch.float32
    torch.testing.assert_close(logprobs.double(), expected_logprobs, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(entropy.double(), expected_entropy, rtol=1e-5, atol=1e-5)
    assert torch.equal(both_logprobs, logprobs)
    assert torch.equal(both_entropy, entropy)


def test_default_chunk_size_is_a_fixed_block_of_bytes():
    assert default_chunk_size(torch.empty(0, 0, 49152)) == 16 * 2**20 // (49152 * 4)
    assert default_chunk_size(torch.empty(0, 0, 49152, dtype=torch.bfloat16)) == 85
    assert default_chunk_size(torch.empty(0, 0, 49152, dtype=torch.float64)) == 42
    assert default_chunk_size(torch.empty(0, 0, 2**40, device="meta")) == 1
    logits, tokens = random_batch(rows=2, length=3, vocab=5)
    torch.testing.assert_close(
        token_logprobs(logits, tokens), token_logprobs(logits, tokens, 1.0, 1)
    )


def test_non_contiguous_logits_are_handled_without_reshape():
    logits, tokens = random_batch(rows=4, length=9)
    shifted = logits[:, :-1]  # (N, L-1, V): not viewable as 2-D
    assert not shifted.is_contiguous()
    logprobs = token_logprobs(shifted, tokens[:, 1:], chunk_size=3)
    expected = naive_logprobs(shifted, tokens[:, 1:], 1.0)
    torch.testing.assert_close(logprobs.double(), expected, rtol=1e-5, atol=1e-5)


def test_gradcheck_float64_logprobs_and_entropy():
    logits, tokens = random_batch(rows=2, length=3, vocab=5, dtype=torch.float64)
    logits.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda z: token_logprobs(z, tokens, temperature=0.7, chunk_size=2), (logits,)
    )
    assert torch.autograd.gradcheck(
        lambda z: token_entropy(z, temperature=1.3, chunk_size=4), (logits,)
    )


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0])
def test_gradients_match_autograd_of_naive_reference(temperature):
    logits, tokens = random_batch(rows=3, length=5, vocab=13)
    weights = torch.randn(3, 5)  # an arbitrary upstream gradient

    chunked = logits.clone().requires_grad_(True)
    (token_logprobs(chunked, tokens, temperature, chunk_size=4) * weights).sum().backward()
    naive = logits.clone().requires_grad_(True)
    full = torch.log_softmax(naive / temperature, dim=-1)
    (full.gather(-1, tokens.unsqueeze(-1)).squeeze(-1) * weights).sum().backward()
    torch.testing.assert_close(chunked.grad, naive.grad, rtol=1e-5, atol=1e-6)

    chunked_h = logits.clone().requires_grad_(True)
    (token_entropy(chunked_h, temperature, chunk_size=4) * weights).sum().backward()
    naive_h = logits.clone().requires_grad_(True)
    probs = torch.softmax(naive_h / temperature, dim=-1)
    (-(probs * probs.log()).sum(-1) * weights).sum().backward()
    torch.testing.assert_close(chunked_h.grad, naive_h.grad, rtol=1e-5, atol=1e-6)


def test_joint_call_backprops_through_logprobs_only():
    logits, tokens = random_batch()
    joint = logits.clone().requires_grad_(True)
    logprobs, entropy = logprobs_and_entropy(joint, tokens, 0.8, chunk_size=5)
    assert logprobs.requires_grad and not entropy.requires_grad
    logprobs.sum().backward()
    alone = logits.clone().requires_grad_(True)
    token_logprobs(alone, tokens, 0.8, chunk_size=5).sum().backward()
    torch.testing.assert_close(joint.grad, alone.grad)


def test_bf16_logits_give_float32_outputs_and_grads_in_bf16():
    logits, tokens = random_batch(dtype=torch.bfloat16)
    logits.requires_grad_(True)
    logprobs, entropy = logprobs_and_entropy(logits, tokens, 1.0, chunk_size=4)
    assert logprobs.dtype == torch.float32 and entropy.dtype == torch.float32
    expected = naive_logprobs(logits.detach(), tokens, 1.0)
    torch.testing.assert_close(logprobs.double(), expected, rtol=1e-5, atol=1e-5)
    logprobs.sum().backward()
    assert logits.grad.dtype == torch.bfloat16


def test_entropy_tends_to_log_vocab_for_large_temperature():
    logits, _ = random_batch(vocab=50)
    entropy = token_entropy(logits, temperature=1e5)
    torch.testing.assert_close(entropy, torch.full_like(entropy, math.log(50)), atol=1e-4, rtol=0)


def test_entropy_tends_to_zero_for_peaked_logits_or_small_temperature():
    logits = torch.zeros(2, 3, 20)
    logits[..., 7] = 60.0
    assert token_entropy(logits).abs().max().item() < 1e-6
    random_logits, _ = random_batch(vocab=20)
    assert token_entropy(random_logits, temperature=1e-3).max().item() < 1e-3


def test_masked_vocabulary_entries_do_not_give_nan():
    logits, tokens = random_batch(vocab=6)
    logits[..., 4:] = float("-inf")  # e.g. padded vocabulary rows of an lm_head
    tokens = tokens % 4
    logits.requires_grad_(True)
    entropy = token_entropy(logits, chunk_size=4)
    expected = naive_entropy(logits.detach()[..., :4], 1.0)
    torch.testing.assert_close(entropy.double(), expected, rtol=1e-5, atol=1e-5)
    (entropy.sum() + token_logprobs(logits, tokens).sum()).backward()
    assert torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("temperature", [0.0, -1.0, float("nan"), float("inf")])
def test_non_positive_temperature_raises(temperature):
    logits, tokens = random_batch()
    with pytest.raises(ValueError, match="temperature must be > 0"):
        token_logprobs(logits, tokens, temperature)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        token_entropy(logits, temperature)


def test_bad_shapes_raise_clear_errors():
    logits, tokens = random_batch()
    with pytest.raises(ValueError, match=r"logits must have shape \(N, L, V\)"):
        token_logprobs(logits[0], tokens[0])
    with pytest.raises(ValueError, match="tokens must have shape"):
        token_logprobs(logits, tokens[:, :-1])
    with pytest.raises(ValueError, match="chunk_size"):
        token_entropy(logits, chunk_size=0)


def test_reinforce_step_with_positive_advantage_raises_the_token_logprob():
    torch.manual_seed(1)
    model = torch.nn.Linear(4, 9)
    states = torch.randn(1, 3, 4)
    tokens = torch.tensor([[2, 5, 7]])
    advantage = 1.0
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)

    before = token_logprobs(model(states), tokens, temperature=0.7)
    loss = -(advantage * before[0, 1])  # REINFORCE on the middle token only
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    with torch.no_grad():
        after = token_logprobs(model(states), tokens, temperature=0.7)
    assert after[0, 1] > before[0, 1].detach() + 1e-3


def test_sampled_token_nll_is_minus_masked_mean():
    logprobs = torch.tensor([[-1.0, -2.0, -9.0], [-3.0, -9.0, -9.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    assert sampled_token_nll(logprobs, mask).item() == pytest.approx(2.0)
    assert sampled_token_nll(logprobs, torch.zeros_like(mask)).item() == 0.0


def test_sampled_token_nll_estimates_the_entropy_on_policy():
    logits = torch.randn(1, 1, 6) * 2
    probs = torch.softmax(logits[0, 0], dim=-1)
    samples = torch.multinomial(probs, 200_000, replacement=True)
    logprobs = probs.log()[samples].unsqueeze(0)  # (1, S)
    estimate = sampled_token_nll(logprobs, torch.ones_like(logprobs))
    assert estimate.item() == pytest.approx(token_entropy(logits).item(), abs=0.01)
