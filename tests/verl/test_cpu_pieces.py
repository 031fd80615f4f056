"""dcrl's CPU pieces for verl, without Ray: the transformers rollout server samples what verl asks
(its stop tokens, its length limit, greedy at T = 0) and returns the model's own log-probs; its
worker-side adapter walks verl's weight generator and loads the weights into the server; the CPU
platform answers verl's device calls; the registrations land in verl's registries."""

import asyncio

import pytest
import torch

from dcrl.integrations.verl.hf_rollout import DcrlHFServer, DcrlHFServerAdapter
from tests.verl.fixtures import tiny_policy_folder


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tiny_policy_folder(tmp_path_factory.mktemp("tiny") / "policy")
    return DcrlHFServer(str(folder), response_length=8, prompt_length=8, seed=0)


def _generate(server, prompt, **params):
    return asyncio.run(server.generate(request_id="r", prompt_ids=prompt, sampling_params=params))


def _model_logprobs(model, prompt, tokens):
    ids = torch.tensor([prompt + tokens])
    with torch.no_grad():
        logits = model(ids).logits[0, len(prompt) - 1 : -1].float()
    return logits.log_softmax(-1).gather(-1, torch.tensor(tokens)[:, None])[:, 0]


def test_the_rollout_server_samples_within_verls_limits_with_the_models_logprobs(server):
    prompt = [5, 6, 7]
    for _ in range(5):
        out = _generate(server, prompt, temperature=1.0, top_p=1.0, top_k=-1, logprobs=True)
        assert 1 <= len(out.token_ids) <= 8  # rollout.response_length
        stops = [i for i, t in enumerate(out.token_ids) if t in server.stop_token_ids]
        assert stops in ([], [len(out.token_ids) - 1])  # ends at its first stop token, kept
        expected = _model_logprobs(server.model, prompt, out.token_ids)
        torch.testing.assert_close(torch.tensor(out.log_probs), expected, rtol=0, atol=1e-5)
    greedy = [_generate(server, prompt, temperature=0).token_ids for _ in range(2)]
    assert greedy[0] == greedy[1]
    assert _generate(server, prompt, temperature=0, logprobs=False).log_probs is None
    assert len(_generate(server, prompt, temperature=1.0, max_tokens=2).token_ids) <= 2


def test_the_adapter_loads_the_actors_weights_into_the_server(server, monkeypatch):
    """verl's naive weight sync: every rank walks the engine's generator, rank 0 of the replica
    sends the full tensors; the server samples the new weights."""

    class Remote:  # a Ray actor handle's method, called in-process
        def __init__(self, method):
            self.method = method

        def remote(self, *args, **kwargs):
            return self.method(*args, **kwargs)

    class Handle:
        update_weights = Remote(server.update_weights)

    monkeypatch.setenv("RANK", "0")
    config = {
        "tensor_model_parallel_size": 1,
        "data_parallel_size": 1,
        "pipeline_model_parallel_size": 1,
    }
    adapter = DcrlHFServerAdapter.__new__(DcrlHFServerAdapter)
    adapter.config = type("Config", (), config)()
    adapter.replica_rank, adapter._sends, adapter._server = 0, True, Handle()
    new_weights = {
        name: torch.full_like(value, 0.01) for name, value in server.model.state_dict().items()
    }
    walked = []

    def generator():
        for name, value in new_weights.items():
            walked.append(name)
            yield name, value

    asyncio.run(adapter.update_weights(generator(), global_steps=7))
    assert walked == list(new_weights)
    for name, value in server.model.state_dict().items():
        assert torch.equal(value, new_weights[name]), name
    out = _generate(server, [5, 6], temperature=1.0)
    assert out.extra_fields["global_steps"] == 7


def test_the_cpu_platform_answers_verls_device_calls():
    from verl.plugin.platform import PlatformRegistry

    import dcrl.integrations.verl.register  # noqa: F401  (registers the platform and rollout)
    from dcrl.integrations.verl.cpu_platform import PlatformCPU

    assert PlatformRegistry.get("cpu") is PlatformCPU
    platform = PlatformCPU()
    assert not platform.is_platform_available(use_smi_check=True)  # never auto-detected
    assert platform.device_name == "cpu" and platform.communication_backend_name() == "gloo"
    assert torch.ones(2).to(platform.current_device()).device.type == "cpu"
    assert platform.ray_resource_options(0.5) == {"num_cpus": 0.5}
    device = platform.device_module
    device.empty_cache(), device.synchronize(), device.set_device(0)
    free, total = device.mem_get_info()
    assert 0 < free <= total and device.max_memory_allocated() == 0
    state = device.get_rng_state()
    first = torch.rand(1)
    device.set_rng_state(state)
    assert torch.equal(torch.rand(1), first)
    with device.stream():
        pass


def test_the_registrations_land_in_verls_registries():
    from verl.workers.rollout.base import get_rollout_class
    from verl.workers.rollout.replica import get_rollout_replica_class

    import dcrl.integrations.verl.register  # noqa: F401
    from dcrl.integrations.verl.hf_rollout import DcrlHFReplica

    assert get_rollout_class("dcrl_hf") is DcrlHFServerAdapter
    assert get_rollout_replica_class("dcrl_hf") is DcrlHFReplica
