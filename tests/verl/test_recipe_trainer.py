"""The recipe trainer's hooks around verl's real rollout plumbing and checkpoint code.

verl's GPU workers are the one thing replaced: an agent-loop worker that samples responses with
a seeded generator and grades them stands in for the Ray handle of verl's `AgentLoopWorker`, and
the old-log-prob pass is a fixed function. Everything between them is verl's own code: its
`AgentLoopManager.generate_sequences` (the chunking over workers), `AgentLoopWorker._postprocess`
(the batch a streaming-reward rollout returns), `_get_gen_batch`, `compute_response_mask`,
`_compute_reward_colocate`, and `RayPPOTrainer._save_checkpoint` / `_load_checkpoint`.
"""

import dataclasses
import json
import os

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from verl import DataProto
from verl.experimental.agent_loop.agent_loop import (
    AgentLoopManager,
    AgentLoopMetrics,
    AgentLoopWorker,
    _InternalAgentLoopOutput,
)
from verl.trainer.ppo.ray_trainer import RayPPOTrainer, compute_response_mask

import dcrl.integrations.verl.register  # noqa: F401  (registers dcrl_tempered_agent)
from dcrl.integrations.verl import transforms
from dcrl.integrations.verl.trainer import CONTROLLER_FILE, DcrlRayPPOTrainer

PROMPT_LENGTH, RESPONSE_LENGTH = 10, 6


def encode(text: str) -> tuple[torch.Tensor, torch.Tensor]:
    """A prompt's token ids, left-padded to PROMPT_LENGTH, and its attention mask (what the agent
    loop makes of the dataset's raw prompt)."""
    ids = torch.tensor([5 + ord(c) % 30 for c in text][-PROMPT_LENGTH:])
    padded = torch.zeros(PROMPT_LENGTH, dtype=torch.long)
    padded[PROMPT_LENGTH - len(ids) :] = ids
    mask = torch.zeros(PROMPT_LENGTH, dtype=torch.long)
    mask[PROMPT_LENGTH - len(ids) :] = 1
    return padded, mask


class _Remote:
    """`handle.method.remote(...)` of a Ray actor handle, as a coroutine."""

    def __init__(self, function):
        self._function = function

    def remote(self, *args, **kwargs):
        return self._function(*args, **kwargs)


class FakeAgentLoopWorker:
    """Stands in for a Ray handle of verl's AgentLoopWorker: samples each row's response with a
    seeded generator, grades it when rewards stream (a seeded coin flip), and builds the batch with verl's own `AgentLoopWorker._postprocess`."""

    def __init__(self, seed: int, events: list, streaming_reward: bool = True):
        self.reward_loop_worker_handles = [object()] if streaming_reward else None
        self.generate_sequences = _Remote(self._generate)
        self._generator = torch.Generator().manual_seed(seed)
        self._events = events
        self.chunk_sizes: list[int] = []

    def _output(self, raw_prompt: str) -> _InternalAgentLoopOutput:
        input_ids, attention_mask = encode(raw_prompt)
        length = int(torch.randint(1, RESPONSE_LENGTH + 1, (1,), generator=self._generator))
        response = torch.zeros(1, RESPONSE_LENGTH, dtype=torch.long)
        response[0, :length] = torch.randint(5, 40, (length,), generator=self._generator)
        response_mask = torch.zeros(1, RESPONSE_LENGTH, dtype=torch.long)
        response_mask[0, :length] = 1
        attention = torch.cat([attention_mask[None], response_mask], dim=1)
        correct = float(torch.rand(1, generator=self._generator) < 0.5)
        score = correct if self.reward_loop_worker_handles else None
        return _InternalAgentLoopOutput(
            prompt_ids=input_ids[None],
            response_ids=response,
            input_ids=torch.cat([input_ids[None], response], dim=1),
            position_ids=(attention.cumsum(-1) - 1).clamp(min=0),
            response_mask=response_mask,
            attention_mask=attention,
            response_logprobs=torch.full((1, RESPONSE_LENGTH), -3.0),  # the sampler's
            reward_score=score,
            num_turns=2,
            metrics=AgentLoopMetrics(),
        )

    async def _generate(self, chunk: DataProto) -> DataProto:
        self._events.append("generate")
        self.chunk_sizes.append(len(chunk))
        outputs = [self._output(text) for text in chunk.non_tensor_batch["raw_prompt"]]
        return AgentLoopWorker._postprocess(
            self, outputs, input_non_tensor_batch=chunk.non_tensor_batch, validate=False
        )


class FakeCheckpointManager:
    def __init__(self, events: list):
        self._events = events

    def sleep_replicas(self):
        self._events.append("sleep")


class FakeRewardLoopManager:
    """A colocated reward model: score 1 when the response's token sum is even."""

    def __init__(self, events: list):
        self._events = events

    def compute_rm_score(self, batch: DataProto) -> DataProto:
        self._events.append(f"reward {len(batch)}")
        mask = batch.batch["response_mask"]
        scores = (batch.batch["responses"].sum(-1) % 2 == 0).float()
        rewards = torch.zeros(mask.shape)
        rewards[torch.arange(len(batch)), mask.sum(-1) - 1] = scores
        return DataProto.from_dict(tensors={"rm_scores": rewards})


def _config(tmp_path, block: dict, num_workers: int = 2, n: int = 4, **trainer) -> dict:
    return OmegaConf.create(
        {
            "algorithm": {"dcrl": block, "rollout_correction": {"bypass_mode": False}},
            "actor_rollout_ref": {
                "rollout": {"temperature": 1.0, "n": n, "agent": {"num_workers": num_workers}},
                "actor": {"checkpoint": {"async_save": False}},
            },
            "trainer": {
                "default_local_dir": str(tmp_path / "run"),
                "default_hdfs_dir": None,
                "resume_mode": "auto",
                "resume_from_path": None,
                "del_local_ckpt_after_load": False,
                **trainer,
            },
        }
    )


def _bare_trainer(config) -> DcrlRayPPOTrainer:
    """The recipe trainer without verl's workers: its __init__ minus RayPPOTrainer's."""
    trainer = DcrlRayPPOTrainer.__new__(DcrlRayPPOTrainer)
    original_init = RayPPOTrainer.__init__
    RayPPOTrainer.__init__ = lambda self, config, *args, **kwargs: setattr(self, "config", config)
    try:
        DcrlRayPPOTrainer.__init__(trainer, config)
    finally:
        RayPPOTrainer.__init__ = original_init
    trainer.global_steps = 1
    return trainer


def _fake_old_log_prob(self, data):
    """The actor's old-log-prob pass, a fixed function of the tokens."""
    logprobs = -0.05 * data.batch["responses"].float() * data.batch["response_mask"]
    temperature = data.meta_info.get("temperature", 1.0)
    out = DataProto.from_dict(
        tensors={
            "old_log_probs": logprobs / temperature,
            "entropys": torch.full_like(logprobs, 0.7),
        }
    )
    return out, 0.0


def _aepo_trainer(tmp_path, monkeypatch, events, num_workers, streaming_reward=True, **block):
    """An AEPO recipe trainer whose rollout manager is verl's real AgentLoopManager over fake
    workers, wrapped by the recipe's own init_workers."""
    manager = AgentLoopManager.__new__(AgentLoopManager)
    manager.agent_loop_workers = [
        FakeAgentLoopWorker(seed, events, streaming_reward) for seed in range(1, 1 + num_workers)
    ]

    def verl_init_workers(self):
        self.async_rollout_manager = manager
        self.checkpoint_manager = FakeCheckpointManager(events)
        self.reward_loop_manager = FakeRewardLoopManager(events)

    monkeypatch.setattr(RayPPOTrainer, "init_workers", verl_init_workers)
    monkeypatch.setattr(RayPPOTrainer, "_compute_old_log_prob", _fake_old_log_prob)
    config = _config(tmp_path, {"name": "aepo", "max_reinforce": 8, **block}, num_workers)
    trainer = _bare_trainer(config)
    trainer.use_rm = not streaming_reward
    trainer.init_workers()
    return trainer, manager


def _prompts(num_prompts: int) -> DataProto:
    """A dataloader batch as verl's fit() holds it before generation: the raw prompts (the agent
    loop tokenizes them), data columns and the uid fit() adds."""
    return DataProto.from_dict(
        tensors={"dummy_tensor": torch.zeros(num_prompts, 1, dtype=torch.uint8)},  # as verl's
        non_tensors={
            "data_source": np.array(["math"] * num_prompts, dtype=object),
            "reward_model": np.array([{"ground_truth": str(i)} for i in range(num_prompts)]),
            "raw_prompt": np.array([f"prompt {i}" for i in range(num_prompts)], dtype=object),
            "uid": np.array([f"uid-{i}" for i in range(num_prompts)], dtype=object),
        },
    )


def _verl_step_until_old_log_prob(trainer, num_prompts: int, n: int, events: list):
    """What verl's fit() does from the dataloader batch to `_compute_old_log_prob`."""
    batch = _prompts(num_prompts)
    gen_batch = trainer._get_gen_batch(batch)
    output = trainer.async_rollout_manager.generate_sequences(gen_batch.repeat(n, interleave=True))
    trainer.checkpoint_manager.sleep_replicas()
    batch = batch.repeat(n, interleave=True).union(output)
    batch.batch["response_mask"] = compute_response_mask(batch)
    if "rm_scores" not in batch.batch:
        batch = batch.union(trainer._compute_reward_colocate(batch))
    old_log_prob, _ = trainer._compute_old_log_prob(batch)
    return batch, old_log_prob


def test_tempered_rows_keep_their_prompts_uid_through_verls_agent_loop(tmp_path, monkeypatch):
    """With rule-based rewards streaming in the agent loop, verl's post-processing drops the
    request's columns: the recipe carries uid (and data_source...) over, and the spliced rows
    are the first prompt's tempered samples, with that prompt's uid."""
    events: list = []
    trainer, _ = _aepo_trainer(tmp_path, monkeypatch, events, num_workers=2)
    batch, old_log_prob = _verl_step_until_old_log_prob(trainer, num_prompts=4, n=4, events=events)
    is_reinforce = batch.batch["dcrl_is_reinforce"]
    spliced = is_reinforce.nonzero().flatten().numpy()
    assert len(spliced) > 0  # the splice is exercised
    assert set(batch.non_tensor_batch["uid"][spliced]) == {"uid-0"}
    assert set(batch.non_tensor_batch["data_source"][spliced]) == {"math"}
    assert trainer._step_metrics["control/num_reinforce"] == len(spliced)
    # Spliced rows were sampled at T: their rollout log-probs become π_old's (ratio 1).
    rollout = batch.batch["rollout_log_probs"]
    assert torch.equal(rollout[is_reinforce], old_log_prob.batch["old_log_probs"][is_reinforce])
    assert (rollout[~is_reinforce] == -3.0).all()


@pytest.mark.parametrize("num_workers, weight", [(8, None), (4, None), (6, 1.5)])
def test_tempered_batch_of_any_size_goes_through_verls_chunking(
    tmp_path, monkeypatch, num_workers, weight
):
    """8 prompts x 3 responses: the tempered rows (2 prompts x 3, or 3 x 3 with a controller
    weight of 1.5) do not divide the agent-loop workers; they are padded for verl's equal chunks
    and cut back, one response per request, in request order."""
    events: list = []
    trainer, manager = _aepo_trainer(tmp_path, monkeypatch, events, num_workers)
    if weight is not None:  # dcrl's pi controller with weight_max can choose w > 1
        decision = dataclasses.replace(trainer.dcrl_algorithm.controller.decide(), weight=weight)
        monkeypatch.setattr(trainer.dcrl_algorithm.controller, "decide", lambda: decision)
    n, num_prompts = 3, 8
    trainer.config.actor_rollout_ref.rollout.n = n
    gen_batch = trainer._get_gen_batch(_prompts(num_prompts)).repeat(n, interleave=True)
    trainer.async_rollout_manager.generate_sequences(gen_batch)

    expected = n * (2 if weight is None else 3)
    assert expected % num_workers != 0
    assert len(trainer._tempered) == expected
    assert list(trainer._tempered.non_tensor_batch["uid"]) == list(
        gen_batch.non_tensor_batch["uid"][:expected]
    )
    raw_prompts = trainer._tempered.non_tensor_batch["raw_prompt"]
    assert list(raw_prompts) == list(gen_batch.non_tensor_batch["raw_prompt"][:expected])
    prompts = torch.stack([encode(text)[0] for text in raw_prompts])
    assert torch.equal(trainer._tempered.batch["prompts"], prompts)  # rows match their requests
    for worker in manager.agent_loop_workers:  # verl's equal chunks: on-policy, then tempered
        assert worker.chunk_sizes == [len(gen_batch) // num_workers, -(-expected // num_workers)]


def test_colocated_reward_model_scores_tempered_rows_after_the_replicas_sleep(
    tmp_path, monkeypatch
):
    """verl puts the rollout replicas to sleep before a colocated reward model runs; the tempered
    rows are scored after that too, not inside the generation phase."""
    events: list = []
    trainer, _ = _aepo_trainer(tmp_path, monkeypatch, events, 2, streaming_reward=False)
    _verl_step_until_old_log_prob(trainer, num_prompts=4, n=4, events=events)
    assert events.index("sleep") < events.index("reward 4")  # 1 tempered prompt x 4
    assert events.index("sleep") > max(i for i, e in enumerate(events) if e == "generate")


def test_spliced_rows_rollout_logprobs_become_their_old_logprobs(tmp_path, monkeypatch):
    """verl's rollout correction compares π_old with the sampler's log-probs; the spliced rows
    were sampled at T, so their rollout log-probs are set to π_old (ratio 1, as AEPO trains)."""
    batch = DataProto.from_dict(
        tensors={
            "rollout_log_probs": torch.full((4, 3), -9.0),
            "dcrl_is_reinforce": torch.tensor([True, False, True, False]),
        }
    )
    old = -torch.arange(12.0).reshape(4, 3)
    assert transforms.neutralize_rollout_logprobs(batch, old) == 2
    assert torch.equal(batch.batch["rollout_log_probs"][[0, 2]], old[[0, 2]])
    assert (batch.batch["rollout_log_probs"][[1, 3]] == -9.0).all()


def test_recipe_refuses_rollout_correction_bypass_mode(tmp_path):
    config = _config(tmp_path, {"name": "dcpo"})
    config.algorithm.rollout_correction.bypass_mode = True
    with pytest.raises(ValueError, match="error: algorithm.rollout_correction.bypass_mode"):
        _bare_trainer(config)


class FakeActorWorkerGroup:
    """verl's actor worker group at checkpoint time: records what exists when it saves."""

    def __init__(self, controller_path_of):
        self._controller_path_of = controller_path_of
        self.seen: list[tuple[str, bool]] = []

    def save_checkpoint(self, local_path, remote_path, step, max_ckpt_to_keep=None):
        os.makedirs(local_path, exist_ok=True)
        self.seen.append((local_path, os.path.exists(self._controller_path_of(local_path))))

    def load_checkpoint(self, path, del_local_after_load=False):
        self.seen.append((path, True))


class FakeDataloader:
    def __len__(self):
        return 100

    def state_dict(self):
        return {"position": 7}

    def load_state_dict(self, state):
        self.loaded = state


def _with_verl_checkpointing(trainer) -> DcrlRayPPOTrainer:
    trainer.actor_rollout_wg = FakeActorWorkerGroup(
        lambda actor_path: os.path.join(os.path.dirname(actor_path), CONTROLLER_FILE)
    )
    trainer.use_critic = False
    trainer.train_dataloader = FakeDataloader()
    return trainer


def test_controller_state_saved_under_default_local_dir_and_resumed_from_resume_path(tmp_path):
    """Through verl's own _save_checkpoint / _load_checkpoint: the state is written into the
    step folder of default_local_dir before verl writes anything (so before its
    latest_checkpointed_iteration.txt), copied to default_hdfs_dir, read back from
    resume_from_path, and a resumed run saves into its own default_local_dir."""
    block = {"name": "dcpo", "target_entropy": 0.5}
    first = _with_verl_checkpointing(
        _bare_trainer(_config(tmp_path, block, default_hdfs_dir=str(tmp_path / "hdfs")))
    )
    first.dcrl_algorithm.after_update({"entropy/sampled_nll": 0.9, "entropy/on_policy_nll": 0.9})
    first.global_steps = 3
    first._save_checkpoint()
    step_folder = tmp_path / "run" / "global_step_3"
    saved = json.loads((step_folder / CONTROLLER_FILE).read_text())
    assert saved == first.dcrl_algorithm.state_dict()
    assert first.actor_rollout_wg.seen == [(str(step_folder / "actor"), True)]
    assert (tmp_path / "run" / "latest_checkpointed_iteration.txt").read_text() == "3"
    assert json.loads((tmp_path / "hdfs" / "global_step_3" / CONTROLLER_FILE).read_text()) == saved

    resumed = _with_verl_checkpointing(
        _bare_trainer(
            _config(
                tmp_path,
                block,
                default_local_dir=str(tmp_path / "run2"),
                resume_mode="resume_path",
                resume_from_path=str(step_folder),
            )
        )
    )
    resumed._load_checkpoint()
    assert resumed.global_steps == 3
    assert resumed.dcrl_algorithm.state_dict() == saved
    assert resumed.dcrl_algorithm.controller.decide() == first.dcrl_algorithm.controller.decide()

    resumed.global_steps = 4
    resumed._save_checkpoint()
    assert (tmp_path / "run2" / "global_step_4" / CONTROLLER_FILE).exists()
    assert not (tmp_path / "run" / "global_step_4").exists()
