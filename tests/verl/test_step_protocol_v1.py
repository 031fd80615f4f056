"""dcrl's recipe on verl's V1 trainer (`trainer_v1.DcrlPPOTrainer`, TransferQueue batches) runs
the same step protocol: the composed DCPO + ICR step of the fixed batch (tests/step_fixture.py,
which dcrl's own trainer, the TRL adapter and the legacy verl recipe are checked against) gives
dcrl.core's advantages; AEPO's step on the same batch (its tempered groups requested through
verl's V1 agent-loop manager after verl's own replay buffer sampled the batch, spliced into
TransferQueue before verl's balance) trains on the rows and advantages of dcrl's own step protocol.

Through verl's own V1 code: a real TransferQueue (on a local Ray instance) holds the rows in the
layout verl's agent loop writes (one key per row, jagged tensors), in a shuffled order, with
verl's synthetic padding rows (`upsample_batch_to_divisible_size`); verl's
`PPOTrainer._compute_old_log_prob`, `_compute_advantage` (GRPO, then dcrl's) and `_update_actor`
run around the recipe's hooks (for AEPO also verl's `ReplayBuffer.sample`,
`_submit_batch_to_rollout` and `_balance_batch`). Only verl's actor worker group is a stand-in:
the fixture's fixed policy, written into TransferQueue as verl's worker writes its log-probs (over
the whole sequence, shifted by one), and an update that reads the advantages it would train on;
and, for AEPO, verl's agent-loop manager: rows written into TransferQueue as its workers write
them."""

import importlib.util
import os

import pytest
import torch

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("transfer_queue") is None,
        reason="verl's V1 trainer needs TransferQueue (scripts/install-verl.sh installs it)",
    ),
]

NUM_PADDING = 4  # verl pads the batch to a multiple of its mini-batch / dp sizes


@pytest.fixture(scope="module")
def transfer_queue():
    import ray
    import transfer_queue as tq

    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    tq.init({"backend": {"SimpleStorage": {"num_data_storage_units": 1}}})
    yield tq
    tq.close()
    ray.shutdown()


def _keys() -> list[str]:
    """verl's key of each fixture row (`{uid}_{session}_{index}`, AgentLoopWorkerTQ)."""
    from tests import step_fixture

    groups = step_fixture.fixed_batch()["group_index"]
    sessions = torch.arange(len(groups)) % step_fixture.GROUP_SIZE
    return [f"uid{int(g)}_{int(s)}_0" for g, s in zip(groups, sessions, strict=True)]


def _put_rollout(tq) -> None:
    """The fixture's rows in TransferQueue as verl's agent loop leaves them (unpadded rows)."""
    from verl.utils.tensordict_utils import list_of_dict_to_tensordict

    from tests import step_fixture

    batch = step_fixture.fixed_batch()
    rows = []
    for i, key in enumerate(_keys()):
        prompt = batch["prompt_ids"][i][batch["prompt_mask"][i].bool()]
        length = int(batch["response_mask"][i].sum())
        response = batch["response_ids"][i, :length]
        scores = torch.zeros(length)
        scores[-1] = batch["scores"][i]
        input_ids = torch.cat([prompt, response])
        rows.append(
            {
                "prompts": prompt,
                "responses": response,
                "response_mask": torch.ones(length, dtype=torch.int64),
                "loss_mask": torch.ones(length, dtype=torch.int64),
                "input_ids": input_ids,
                "attention_mask": torch.ones_like(input_ids),
                "position_ids": torch.arange(len(input_ids)),
                "rm_scores": scores,
                "uid": key.rsplit("_", 2)[0],
            }
        )
    tags = [
        {"status": "success", "prompt_len": len(r["prompts"]), "response_len": len(r["responses"])}
        for r in rows
    ]
    for tag in tags:
        tag["seq_len"] = tag["prompt_len"] + tag["response_len"]
    tq.kv_batch_put(
        keys=_keys(), partition_id="train", fields=list_of_dict_to_tensordict(rows), tags=tags
    )


class FixedPolicyWorkers:
    """verl's actor worker group, as far as the V1 step uses it, on the fixture's policy."""

    def __init__(self, tq):
        self.tq = tq
        self.trained: dict[str, torch.Tensor] = {}

    def compute_log_prob(self, batch):
        """Writes `log_probs` / `entropy` over each whole sequence, shifted by one (position t
        holds token t+1's), as verl's ActorRolloutRefWorker does."""
        from tensordict import TensorDict

        from tests import step_fixture

        temperature = batch.extra_info["temperature"]
        data = self.tq.kv_batch_get(
            keys=batch.keys, partition_id=batch.partition_id, select_fields=["prompts", "responses"]
        )
        log_probs, entropy = [], []
        for prompt, response in zip(
            data["prompts"].unbind(), data["responses"].unbind(), strict=True
        ):
            row = torch.zeros(len(prompt) + len(response))
            values = step_fixture.policy_logprobs(
                response[None], torch.ones(1, len(response)), temperature
            )[0]
            row[len(prompt) - 1 : len(prompt) - 1 + len(response)] = values
            log_probs.append(row)
            entropy.append(torch.full_like(row, 0.3))
        nested = {
            "log_probs": torch.nested.as_nested_tensor(log_probs, layout=torch.jagged),
            "entropy": torch.nested.as_nested_tensor(entropy, layout=torch.jagged),
        }
        self.tq.kv_batch_put(
            keys=batch.keys,
            partition_id=batch.partition_id,
            fields=TensorDict(nested, batch_size=len(batch.keys)),
        )
        return batch

    def update_actor(self, batch):
        """The advantages verl's actor would train on, by key."""
        data = self.tq.kv_batch_get(
            keys=batch.keys, partition_id=batch.partition_id, select_fields=["advantages"]
        )
        self.trained = dict(zip(batch.keys, data["advantages"].unbind(), strict=True))
        return {"metrics": {"mfu": 0.0}}


def _config(tmp_path):
    from omegaconf import OmegaConf

    from tests import step_fixture

    return OmegaConf.create(
        {
            "algorithm": {
                "adv_estimator": "grpo",
                "gamma": 1.0,
                "lam": 1.0,
                "norm_adv_by_std_in_grpo": True,
                "use_kl_in_reward": False,
                "rollout_correction": None,
                "dcrl": {"name": "composed", "targets": step_fixture.TARGETS},
            },
            "actor_rollout_ref": {
                "rollout": {
                    "temperature": 1.0,
                    "n": step_fixture.GROUP_SIZE,
                    "calculate_log_probs": False,
                },
                "actor": {
                    "loss_agg_mode": "token-mean",
                    "loss_scale_factor": None,
                    "ppo_mini_batch_size": step_fixture.NUM_PROMPTS,
                    "calculate_entropy": False,
                    "entropy_coeff": 0.0,
                    "ppo_epochs": 1,
                    "data_loader_seed": 0,
                    "shuffle": False,
                },
            },
            "trainer": {
                "critic_warmup": 0,
                "default_local_dir": str(tmp_path / "checkpoints"),
                "resume_mode": "disable",
            },
        }
    )


def test_composed_dcpo_icr_on_verls_v1_trainer_gives_dcrl_cores_advantages(
    transfer_queue, tmp_path, monkeypatch
):
    from transfer_queue import KVBatchMeta
    from verl.trainer.ppo.padding_utils import upsample_batch_to_divisible_size
    from verl.trainer.ppo.v1 import PPOTrainer, get_trainer_cls

    from dcrl.integrations.verl.trainer_v1 import V1_TRAINER_NAME, DcrlPPOTrainer
    from tests import step_fixture

    tq = transfer_queue
    assert get_trainer_cls(V1_TRAINER_NAME) is DcrlPPOTrainer  # what verl's task runner builds
    monkeypatch.setattr(PPOTrainer, "__init__", lambda self, config: None)  # no workers, loggers
    config = _config(tmp_path)
    trainer = DcrlPPOTrainer(config)
    trainer.config = config
    trainer.use_reference_policy = trainer.use_critic = False
    trainer.global_steps = 1
    workers = FixedPolicyWorkers(tq)
    trainer.actor_rollout_wg = workers
    (dcpo, _) = trainer.dcrl_algorithm.targets
    decision = dcpo.controller.decide()

    _put_rollout(tq)
    keys = _keys()
    order = torch.randperm(len(keys), generator=torch.Generator().manual_seed(5)).tolist()
    tags = tq.kv_list("train")["train"]
    batch = KVBatchMeta(
        partition_id="train", keys=[keys[i] for i in order], tags=[tags[keys[i]] for i in order]
    )
    batch = upsample_batch_to_divisible_size(batch, len(keys) + NUM_PADDING, eos_token_id=2)
    assert sum(tag.get("is_padding", False) for tag in batch.tags) == NUM_PADDING

    metrics: dict = {}
    batch = trainer._compute_old_log_prob(batch, metrics)
    batch = trainer._compute_advantage(batch, metrics)
    trainer._update_actor(batch, metrics)

    expected, alpha, selected = step_fixture.expected_advantages(decision)
    assert alpha > 0 and selected > 0
    tolerance = 4 * torch.finfo(torch.float32).eps * float(expected.abs().max())
    lengths = step_fixture.fixed_batch()["response_mask"].sum(-1)
    for i, key in enumerate(keys):
        torch.testing.assert_close(
            workers.trained[key], expected[i, : lengths[i]], rtol=0, atol=tolerance
        )
    padding = [key for key, tag in zip(batch.keys, batch.tags, strict=True) if "is_padding" in tag]
    assert all(torch.equal(workers.trained[key], torch.zeros(1)) for key in padding)
    assert metrics["control/alpha"] == alpha and metrics["icr/num_selected"] == selected
    assert dcpo.controller.previous_entropy == metrics["entropy/sampled_nll"]
    assert "actor/entropy" in metrics  # verl's own pass ran


def test_the_v1_trainer_refuses_aepo_composed_and_keeps_controller_state(tmp_path, monkeypatch):
    from omegaconf import OmegaConf
    from verl.trainer.ppo.v1 import PPOTrainer

    from dcrl.integrations.verl.trainer_v1 import DcrlPPOTrainer

    def verls_init(self, config):
        raise AssertionError("verl's constructor ran before the recipe's refusal")

    monkeypatch.setattr(PPOTrainer, "__init__", verls_init)
    monkeypatch.setattr(PPOTrainer, "_save_checkpoint", lambda self: None)
    monkeypatch.setattr(PPOTrainer, "_load_checkpoint", lambda self: None)
    config = _config(tmp_path)
    composed = OmegaConf.create(OmegaConf.to_container(config))
    composed.algorithm.dcrl = {"name": "composed", "targets": ["icr", "aepo"]}
    with pytest.raises(ValueError, match="'aepo' replaces rows and is composed with icr"):
        DcrlPPOTrainer(composed)

    monkeypatch.setattr(PPOTrainer, "__init__", lambda self, config: None)

    trainer = DcrlPPOTrainer(config)
    trainer.config = config
    (dcpo, _) = trainer.dcrl_algorithm.targets
    dcpo.controller.update(0.42)
    trainer.global_steps = 3
    trainer._save_checkpoint()
    saved = tmp_path / "checkpoints" / "global_step_3" / "dcrl_controller.json"
    assert saved.exists()

    resumed = DcrlPPOTrainer(config)
    resumed.config = OmegaConf.merge(config, {"trainer": {"resume_mode": "auto"}})
    resumed.global_steps = 3  # what verl's _load_checkpoint set from the folder name
    resumed._load_checkpoint()
    assert resumed.dcrl_algorithm.targets[0].controller.previous_entropy == 0.42


# ------------------------------------------------------------------------- AEPO on the V1 trainer

TEMPERED_FRACTION = 0.5  # 2 of the 4 prompts re-sampled: 8 tempered rows


def _tempered_sample(prompt: int, session: int) -> tuple[torch.Tensor, float]:
    """A tempered response of the fixture's prompt `prompt` (seeded by prompt and session) and its
    score: sessions of alternate parity are correct, so each tempered group is mixed."""
    from tests import step_fixture

    generator = torch.Generator().manual_seed(1000 + 10 * prompt + session)
    length = int(torch.randint(1, step_fixture.RESPONSE_LENGTH + 1, (1,), generator=generator))
    return torch.randint(5, 60, (length,), generator=generator), float((prompt + session) % 2 == 0)


def _prompt_tokens(prompt: int) -> torch.Tensor:
    """The prompt's tokens: those of the fixture's first row of its group."""
    from tests import step_fixture

    batch = step_fixture.fixed_batch()
    row = prompt * step_fixture.GROUP_SIZE
    return batch["prompt_ids"][row][batch["prompt_mask"][row].bool()]


class StandInAgentLoopManager:
    """verl's `AgentLoopManagerTQ` as far as the step uses it: each request row's rollout.n
    sessions written into TransferQueue as verl's `AgentLoopWorkerTQ` writes them (keys
    `{uid}_{session}_0`, the request's columns among the row's fields, the length tags, the
    prompt's status tag). A training request gets the fixture's rows; a request routed to dcrl's
    tempered agent loop gets `_tempered_sample`'s, its temperature recorded."""

    def __init__(self, tq):
        self.tq = tq
        self.tempered_requests: list[tuple[list[str], list[int], float]] = []

    def generate_sequences(self, prompts):
        from verl.utils import tensordict_utils as tu
        from verl.utils.tensordict_utils import list_of_dict_to_tensordict

        from dcrl.integrations.verl.transforms import TEMPERATURE_KEY, TEMPERED_AGENT
        from tests import step_fixture

        batch = step_fixture.fixed_batch()
        uids = [str(uid) for uid in tu.get(prompts, "uid")]
        indices = [int(i) for i in tu.get(prompts, "index")]
        tempered = tu.get(prompts, "agent_name", None) == TEMPERED_AGENT
        temperature = tu.get(prompts, TEMPERATURE_KEY, None)
        if tempered:
            self.tempered_requests.append((uids, indices, float(temperature)))
        keys, rows, tags = [], [], []
        for uid, prompt in zip(uids, indices, strict=True):
            for session in range(step_fixture.GROUP_SIZE):
                row = prompt * step_fixture.GROUP_SIZE + session
                if tempered:
                    tokens = _prompt_tokens(prompt)
                    response, score = _tempered_sample(prompt, session)
                    sampler = torch.full((len(response),), -3.0)
                else:
                    tokens = batch["prompt_ids"][row][batch["prompt_mask"][row].bool()]
                    length = int(batch["response_mask"][row].sum())
                    response = batch["response_ids"][row, :length]
                    score = float(batch["scores"][row])
                    sampler = step_fixture.policy_logprobs(response[None], torch.ones(1, length))[0]
                scores = torch.zeros(len(response))
                scores[-1] = score
                input_ids = torch.cat([tokens, response])
                fields = {
                    "prompts": tokens,
                    "responses": response,
                    "response_mask": torch.ones(len(response), dtype=torch.int64),
                    "loss_mask": torch.ones(len(response), dtype=torch.int64),
                    "input_ids": input_ids,
                    "attention_mask": torch.ones_like(input_ids),
                    "position_ids": torch.arange(len(input_ids)),
                    "rm_scores": scores,
                    "rollout_log_probs": sampler,
                    "uid": uid,
                    "index": torch.tensor(prompt),
                    "session_id": torch.tensor(session),
                }
                if tempered:  # verl keeps every request column among the row's fields
                    fields[TEMPERATURE_KEY] = torch.tensor(float(temperature))
                rows.append(fields)
                keys.append(f"{uid}_{session}_0")
                tags.append(
                    {
                        "status": "success",
                        "prompt_len": len(tokens),
                        "response_len": len(response),
                        "seq_len": len(input_ids),
                        "global_steps": 1,
                    }
                )
        self.tq.kv_batch_put(
            keys=keys, partition_id="train", fields=list_of_dict_to_tensordict(rows), tags=tags
        )
        self.tq.kv_batch_put(
            keys=uids, partition_id="train", tags=[{"status": "finished"} for _ in uids]
        )


def _reference_step(trainer, decision_temperature):
    """dcrl's own step protocol (`Algorithm.prepare`, what dcrl's trainer runs) on the fixture's
    batch, its tempered groups being the stand-in agent loop's: the TrainBatch and metrics."""
    from dcrl.step_data import StepContext
    from tests import step_fixture

    batch = step_fixture.fixed_batch()
    asked = []

    def rollout(prompts, n, temperature):
        asked.append((list(prompts), n, temperature))
        width = step_fixture.PROMPT_LENGTH
        samples = [(p, s, *_tempered_sample(p, s)) for p in prompts for s in range(n)]
        prompt_ids = torch.zeros((len(samples), width), dtype=torch.long)
        prompt_mask = torch.zeros_like(prompt_ids)
        response_ids = torch.zeros((len(samples), step_fixture.RESPONSE_LENGTH), dtype=torch.long)
        response_mask = torch.zeros_like(response_ids)
        for i, (p, _, response, _) in enumerate(samples):
            tokens = _prompt_tokens(p)
            prompt_ids[i, width - len(tokens) :] = tokens
            prompt_mask[i, width - len(tokens) :] = 1
            response_ids[i, : len(response)] = response
            response_mask[i, : len(response)] = 1
        groups = torch.arange(len(prompts)).repeat_interleave(n)
        tempered = step_fixture.as_rollout_batch(
            prompt_ids, prompt_mask, response_ids, response_mask, groups, temperature
        )
        return tempered, torch.tensor([score for *_, score in samples])

    def no_pass(*args, **kwargs):
        raise AssertionError("AEPO asks for no scoring pass of an on-policy update")

    reference = type(trainer.dcrl_algorithm)(trainer.dcrl_config)  # a fresh controller, same state
    ctx = StepContext(step=1, rollout=rollout, logprob_pass=no_pass, on_policy=True)
    train_batch, metrics = reference.prepare(step_fixture.rollout_batch(), batch["scores"], ctx)
    (prompts, n, temperature) = asked[0]
    assert n == step_fixture.GROUP_SIZE and temperature == decision_temperature
    return train_batch, metrics, prompts


@pytest.mark.parametrize(
    "placement, center",
    [("front", False), ("spread", True)],
    ids=["front", "spread-centred"],
)
def test_aepo_on_verls_v1_trainer_splices_dcrls_rows_and_advantages(
    transfer_queue, tmp_path, monkeypatch, placement, center
):
    """AEPO's tempered groups go through verl's V1 agent-loop manager (dcrl's tempered agent
    loop at the controller's T) right after verl's own replay buffer hands over the training
    rows, and are spliced into TransferQueue before verl's balance: the rows, advantages and
    REINFORCE marks the update trains on are those of dcrl's own step protocol on the same
    batch, the spliced rows carry their own scores and their prompt's uid, their rollout
    log-probs are π_old, the tempered keys are gone, and the on-policy entropy leaves them out."""
    from types import SimpleNamespace

    import numpy as np
    from omegaconf import OmegaConf
    from verl.trainer.ppo.v1 import PPOTrainer
    from verl.utils import tensordict_utils as tu

    from dcrl.core.logprobs import entropy_signals, entropy_sums
    from dcrl.integrations.verl.trainer_v1 import DcrlPPOTrainer
    from dcrl.integrations.verl.transforms import IS_REINFORCE_KEY, TEMPERATURE_KEY
    from tests import step_fixture

    tq = transfer_queue
    listing = (tq.kv_list(partition_id="train") or {}).get("train", {})
    if listing:  # another test's rows
        tq.kv_clear(keys=list(listing), partition_id="train")
    monkeypatch.setattr(PPOTrainer, "__init__", lambda self, config: None)
    config = OmegaConf.merge(
        _config(tmp_path),
        {
            "algorithm": {"filter_groups": None},
            "actor_rollout_ref": {
                "rollout": {"calculate_log_probs": True},
                "actor": {"ppo_mini_batch_size": 5},  # 20 rows: verl pads 4, balances 2 ranks
            },
            "data": {"train_batch_size": step_fixture.NUM_PROMPTS, "gen_batch_size": None},
            "trainer": {
                "v1": {
                    "trainer_mode": "dcrl",
                    "sampler": {
                        "custom_sampler": None,
                        "max_off_policy_threshold": None,
                        "max_off_policy_strategy": "drop",
                        "sampler_kwargs": {},
                        "sync_refill_failed_groups": False,
                    },
                }
            },
        },
    )
    config.algorithm.dcrl = {
        "name": "aepo",
        "tempered_fraction": TEMPERED_FRACTION,
        "placement": placement,
        "center_reinforce": center,
    }
    trainer = DcrlPPOTrainer(config)
    trainer.config = config
    trainer.use_reference_policy = trainer.use_critic = False
    trainer.global_steps = 1
    trainer.tokenizer = SimpleNamespace(pad_token_id=step_fixture.PAD, eos_token_id=2)
    trainer.replay_buffer = trainer._build_replay_buffer()  # verl's own, wrapped by the recipe
    trainer.agent_loop_manager = manager = StandInAgentLoopManager(tq)
    workers = FixedPolicyWorkers(tq)
    workers._dispatch_info = {"actor": [0, 1]}
    trainer.actor_rollout_wg = workers
    (aepo,) = trainer.dcrl_algorithm.targets
    decision = aepo.controller.decide()

    # verl's step: submit the prompts, sample the batch from verl's replay buffer (AEPO's
    # tempered groups follow), balance (the splice first), old log-probs, advantages, update.
    uids = [f"p{i}" for i in range(step_fixture.NUM_PROMPTS)]
    prompts = tu.get_tensordict(
        {"uid": np.array(uids, dtype=object), "index": torch.arange(step_fixture.NUM_PROMPTS)}
    )
    tu.assign_non_tensor_data(prompts, "global_steps", 1)
    trainer._submit_batch_to_rollout(prompts)
    batch, _ = trainer.replay_buffer.sample(
        global_steps=1, partition_id="train", batch_size=step_fixture.NUM_PROMPTS
    )
    batch.extra_info["temperature"] = 1.0
    metrics: dict = {}
    batch = trainer._balance_batch(batch, metrics)
    assert sum(tag.get("is_padding", False) for tag in batch.tags) == 4
    batch = trainer._compute_old_log_prob(batch, metrics)
    batch = trainer._compute_advantage(batch, metrics)
    trainer._update_actor(batch, metrics)

    expected, reference_metrics, tempered_prompts = _reference_step(trainer, decision.temperature)
    assert tempered_prompts == [0, 1]
    assert manager.tempered_requests == [
        ([f"p{i}-dcrl-tempered" for i in tempered_prompts], tempered_prompts, decision.temperature)
    ]
    reinforce = expected.extras["is_reinforce"]
    assert reinforce.sum() > 0
    keys = [
        f"p{g}_{s}_0" for g in range(4) for s in range(step_fixture.GROUP_SIZE)
    ]  # rollout order
    rows = tq.kv_batch_get(keys=keys, partition_id="train")  # every row has every field
    row_uids = [str(uid) for uid in tu.get(rows, "uid")]
    prompt_width = expected.input_ids.shape[1] - expected.response_mask.shape[1]
    tolerance = 4 * torch.finfo(torch.float32).eps
    tempered = {
        (tuple(_prompt_tokens(p).tolist()), tuple(_tempered_sample(p, s)[0].tolist())): (p, s)
        for p in tempered_prompts
        for s in range(step_fixture.GROUP_SIZE)
    }
    for i, key in enumerate(keys):
        sequence = expected.input_ids[i][expected.attention_mask[i].bool()]
        prompt, response = rows["prompts"][i], rows["responses"][i]
        assert torch.equal(torch.cat([prompt, response]), sequence), key
        assert len(response) == int(expected.response_mask[i].sum())
        torch.testing.assert_close(
            workers.trained[key],
            expected.advantages[i, : len(response)],
            rtol=0,
            atol=tolerance * float(expected.advantages.abs().max()),
        )
        assert bool(rows[IS_REINFORCE_KEY][i]) == bool(reinforce[i])
        uid = row_uids[i]
        if reinforce[i]:  # a tempered row: its prompt's uid, its own score, π_old as rollout
            p, s = tempered[(tuple(prompt.tolist()), tuple(response.tolist()))]
            assert uid == f"p{p}" and float(rows["rm_scores"][i].sum()) == _tempered_sample(p, s)[1]
            assert torch.equal(rows["rollout_log_probs"][i], rows["old_log_probs"][i])
        else:
            assert uid == key.split("_")[0]
            assert float(rows["rm_scores"][i].sum()) == float(
                step_fixture.fixed_batch()["scores"][i]
            )
    assert TEMPERATURE_KEY not in list(rows.keys())
    assert not [k for k in tq.kv_list(partition_id="train")["train"] if "tempered" in k]
    for name in (
        "control/num_reinforce",
        "aepo/num_positives",
        "aepo/tempered_accuracy",
        "aepo/tempered_length",
        *(["aepo/center_weight"] if center else []),
    ):
        assert metrics[name] == pytest.approx(reference_metrics[name], rel=1e-6), name
    assert metrics["aepo/rollout_logprobs_reset"] == float(reinforce.sum())
    # The entropy the controller reads: the fixed policy's, spliced rows left out of on_policy.
    response_ids = expected.input_ids[:, prompt_width:]
    logprobs = step_fixture.policy_logprobs(response_ids, expected.response_mask)
    signals = entropy_signals(
        entropy_sums(logprobs, expected.response_mask, reinforce, torch.full_like(logprobs, 0.3))
    )
    for name in ("entropy/sampled_nll", "entropy/on_policy_nll"):
        assert metrics[name] == pytest.approx(signals[name], rel=1e-6), name
    assert aepo.controller.previous_entropy == metrics["entropy/sampled_nll"]
