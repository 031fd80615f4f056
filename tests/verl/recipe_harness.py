"""The recipe trainer around verl's real rollout plumbing, with verl's GPU workers replaced.

An agent-loop worker that samples responses with a seeded generator and grades them stands in
for the Ray handle of verl's `AgentLoopWorker`, and the old-log-prob pass is a fixed function.
Everything between them is verl's own code: its `AgentLoopManager.generate_sequences` (the
chunking over workers), `AgentLoopWorker._postprocess` (the batch a streaming-reward rollout
returns), `_get_gen_batch`, `compute_response_mask`, `_balance_batch`, `_compute_reward_colocate`,
`extract_reward`, `compute_advantage` and the metric functions. `verl_step` calls them in the
order of verl's `RayPPOTrainer.fit` (verl 0.9.1), which cannot itself run without GPU workers.
"""

from types import SimpleNamespace

import numpy as np
import torch
from omegaconf import OmegaConf
from verl import DataProto
from verl.experimental.agent_loop.agent_loop import (
    AgentLoopManager,
    AgentLoopMetrics,
    AgentLoopWorker,
    _InternalAgentLoopOutput,
)
from verl.trainer.ppo.metric_utils import compute_data_metrics, compute_throughout_metrics
from verl.trainer.ppo.ray_trainer import RayPPOTrainer, compute_advantage, compute_response_mask
from verl.trainer.ppo.reward import extract_reward

import dcrl.integrations.verl.register  # noqa: F401  (registers dcrl_tempered_agent)
from dcrl.integrations.verl.trainer import DcrlRayPPOTrainer
from dcrl.integrations.verl.transforms import TEMPERATURE_KEY

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


def grade(response: torch.Tensor) -> float:
    """The stand-in reward: 1 unless the response's token sum is a multiple of 3 (padding is 0)."""
    return float(int(response.sum()) % 3 != 0)


def prediction(response: torch.Tensor, temperature: float | None = None) -> str:
    """The stand-in reward's extra `pred`: the response as letters (1 to 6 of them), so its
    column is a fixed-width string array, as a math reward's predicted answers are. AEPO's
    tempered rows (sampled at `temperature`) name it too: wider than any on-policy row's."""
    letters = "".join(chr(ord("a") + int(token) % 26) for token in response if int(token) != 0)
    return letters if temperature is None else f"{letters} at T={temperature:g}"


class _Remote:
    """`handle.method.remote(...)` of a Ray actor handle, as a coroutine."""

    def __init__(self, function):
        self._function = function

    def remote(self, *args, **kwargs):
        return self._function(*args, **kwargs)


class FakeAgentLoopWorker:
    """Stands in for a Ray handle of verl's AgentLoopWorker: samples each row's response with a
    seeded generator, grades it when rewards stream (`grade`, with the extras acc and pred), and
    builds the batch with verl's own `AgentLoopWorker._postprocess`."""

    def __init__(self, seed: int, events: list, streaming_reward: bool = True):
        self.reward_loop_worker_handles = [object()] if streaming_reward else None
        self.generate_sequences = _Remote(self._generate)
        self._generator = torch.Generator().manual_seed(seed)
        self._events = events
        self.chunk_sizes: list[int] = []

    def _output(self, raw_prompt: str, temperature: float | None) -> _InternalAgentLoopOutput:
        input_ids, attention_mask = encode(raw_prompt)
        length = int(torch.randint(1, RESPONSE_LENGTH + 1, (1,), generator=self._generator))
        response = torch.zeros(1, RESPONSE_LENGTH, dtype=torch.long)
        response[0, :length] = torch.randint(5, 40, (length,), generator=self._generator)
        response_mask = torch.zeros(1, RESPONSE_LENGTH, dtype=torch.long)
        response_mask[0, :length] = 1
        attention = torch.cat([attention_mask[None], response_mask], dim=1)
        extra_fields = {}
        score = None
        if self.reward_loop_worker_handles:
            score = grade(response[0])
            extra_fields["reward_extra_info"] = {
                "acc": bool(score),
                "pred": prediction(response[0], temperature),
            }
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
            extra_fields=extra_fields,
        )

    async def _generate(self, chunk: DataProto) -> DataProto:
        self._events.append("generate")
        self.chunk_sizes.append(len(chunk))
        temperatures = chunk.non_tensor_batch.get(TEMPERATURE_KEY, [None] * len(chunk))
        outputs = [
            self._output(text, temperature)
            for text, temperature in zip(
                chunk.non_tensor_batch["raw_prompt"], temperatures, strict=True
            )
        ]
        return AgentLoopWorker._postprocess(
            self, outputs, input_non_tensor_batch=chunk.non_tensor_batch, validate=False
        )


class FakeCheckpointManager:
    def __init__(self, events: list):
        self._events = events

    def sleep_replicas(self):
        self._events.append("sleep")


class FakeRewardLoopManager:
    """A colocated reward model: `grade` and its extras, as verl's RewardLoopManager returns
    them (rm_scores, the extras as columns, their names in meta_info)."""

    def __init__(self, events: list):
        self._events = events

    def compute_rm_score(self, batch: DataProto) -> DataProto:
        self._events.append(f"reward {len(batch)}")
        mask = batch.batch["response_mask"]
        responses = batch.batch["responses"]
        scores = torch.tensor([grade(response) for response in responses])
        rewards = torch.zeros(mask.shape)
        rewards[torch.arange(len(batch)), mask.sum(-1) - 1] = scores
        temperatures = batch.non_tensor_batch.get(TEMPERATURE_KEY, [None] * len(batch))
        return DataProto.from_dict(
            tensors={"rm_scores": rewards},
            non_tensors={
                "acc": np.array([bool(score) for score in scores]),
                "pred": np.array(
                    [prediction(r, t) for r, t in zip(responses, temperatures, strict=True)]
                ),
            },
            meta_info={"reward_extra_keys": ["acc", "pred"]},
        )


class FakeActorWorkerGroup:
    """What verl's `_balance_batch` asks of the actor worker group: its data-parallel ranks."""

    def __init__(self, dp_size: int):
        self._dispatch_info = {"actor": list(range(dp_size))}


class FakeTokenizer:
    def batch_decode(self, ids, skip_special_tokens=True):
        return [" ".join(str(int(t)) for t in row if int(t) != 0) for row in ids]


def config(tmp_path, block: dict, num_workers: int = 2, n: int = 4, **trainer):
    return OmegaConf.create(
        {
            "algorithm": {
                "dcrl": block,
                "rollout_correction": {"bypass_mode": False},
                "adv_estimator": "grpo",
                "gamma": 1.0,
                "lam": 1.0,
                "norm_adv_by_std_in_grpo": True,
            },
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


def bare_trainer(trainer_config) -> DcrlRayPPOTrainer:
    """The recipe trainer without verl's workers: its __init__ minus RayPPOTrainer's."""
    trainer = DcrlRayPPOTrainer.__new__(DcrlRayPPOTrainer)
    original_init = RayPPOTrainer.__init__
    RayPPOTrainer.__init__ = lambda self, config, *args, **kwargs: setattr(self, "config", config)
    try:
        DcrlRayPPOTrainer.__init__(trainer, trainer_config)
    finally:
        RayPPOTrainer.__init__ = original_init
    trainer.global_steps = 1
    return trainer


def fake_old_log_prob(self, data):
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


def aepo_trainer(
    tmp_path, monkeypatch, events, num_workers, streaming_reward=True, n=4, dp_size=1, **block
):
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
        self.actor_rollout_wg = FakeActorWorkerGroup(dp_size)

    monkeypatch.setattr(RayPPOTrainer, "init_workers", verl_init_workers)
    monkeypatch.setattr(RayPPOTrainer, "_compute_old_log_prob", fake_old_log_prob)
    trainer_config = config(tmp_path, {"name": "aepo", "max_reinforce": 8, **block}, num_workers, n)
    trainer = bare_trainer(trainer_config)
    trainer.use_rm = not streaming_reward
    trainer.use_critic = False
    trainer.tokenizer = FakeTokenizer()
    trainer.init_workers()
    return trainer, manager


def prompts(num_prompts: int) -> DataProto:
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


def verl_step_until_old_log_prob(trainer, num_prompts: int, n: int, events: list):
    """What verl's fit() does from the dataloader batch to `_compute_old_log_prob` (without
    balance_batch)."""
    batch = prompts(num_prompts)
    gen_batch = trainer._get_gen_batch(batch)
    output = trainer.async_rollout_manager.generate_sequences(gen_batch.repeat(n, interleave=True))
    trainer.checkpoint_manager.sleep_replicas()
    batch = batch.repeat(n, interleave=True).union(output)
    batch.batch["response_mask"] = compute_response_mask(batch)
    if "rm_scores" not in batch.batch:
        batch = batch.union(trainer._compute_reward_colocate(batch))
    old_log_prob, _ = trainer._compute_old_log_prob(batch)
    return batch, old_log_prob


def verl_step(trainer, num_prompts: int, n: int, balance: bool):
    """One training step as verl's `RayPPOTrainer.fit` runs it, from the dataloader batch to the
    step's metrics, with the recipe's hooks; the actor update itself is left out.

    A column `test_row` (each row's position in the rollout, for the tests) is added before
    verl's balance_batch; AEPO's tempered rows do not have it, so a spliced row keeps the
    `test_row` of the row it replaced.

    Returns:
        batch: the batch as fit() hands it to the actor update;
        reward_extras: the reward-extra dict fit() holds (what it dumps with the rollouts);
        metrics: what fit() logs from the batch (critic/score/*, perf/total_num_tokens, ...);
        scores_before, tokens_before: (N,) each row's score and token count before the hook.
    """
    metrics: dict = {}
    batch = prompts(num_prompts)
    batch.meta_info["temperature"] = 1.0
    gen_batch = trainer._get_gen_batch(batch)
    gen_output = trainer.async_rollout_manager.generate_sequences(
        gen_batch.repeat(n, interleave=True)
    )
    trainer.checkpoint_manager.sleep_replicas()
    timing_raw = dict(gen_output.meta_info.pop("timing"))
    batch = batch.repeat(n, interleave=True).union(gen_output)
    batch.non_tensor_batch["test_row"] = np.arange(len(batch))
    if "response_mask" not in batch.batch.keys():  # noqa: SIM118
        batch.batch["response_mask"] = compute_response_mask(batch)
    if balance:
        trainer._balance_batch(batch, metrics=metrics)  # verl's own
    batch.meta_info["global_token_num"] = torch.sum(batch.batch["attention_mask"], dim=-1).tolist()
    if trainer.use_rm and "rm_scores" not in batch.batch.keys():  # noqa: SIM118
        batch = batch.union(trainer._compute_reward_colocate(batch))
    reward_tensor, reward_extra_infos_dict = extract_reward(batch)
    scores_before = reward_tensor.sum(-1).clone()  # (N,) each row's score before the hook
    tokens_before = list(batch.meta_info["global_token_num"])

    old_log_prob, _ = trainer._compute_old_log_prob(batch)
    old_log_prob.batch.pop("entropys")
    batch = batch.union(old_log_prob)

    batch.batch["token_level_scores"] = reward_tensor
    if reward_extra_infos_dict:
        batch.non_tensor_batch.update({k: np.array(v) for k, v in reward_extra_infos_dict.items()})
    batch.batch["token_level_rewards"] = batch.batch["token_level_scores"]
    batch = compute_advantage(
        batch,
        adv_estimator=trainer.config.algorithm.adv_estimator,
        gamma=trainer.config.algorithm.gamma,
        lam=trainer.config.algorithm.lam,
        num_repeat=n,
        norm_adv_by_std_in_grpo=trainer.config.algorithm.norm_adv_by_std_in_grpo,
        config=trainer.config.algorithm,
    )
    timing_raw["step"] = 1.0
    metrics.update(compute_data_metrics(batch=batch, use_critic=False))
    metrics.update(compute_throughout_metrics(batch=batch, timing_raw=timing_raw, n_gpus=1))
    return SimpleNamespace(
        batch=batch,
        reward_extras=reward_extra_infos_dict,
        metrics=metrics,
        scores_before=scores_before,
        tokens_before=torch.tensor(tokens_before),
    )
