"""dcrl's recipe on verl's V1 trainer (`trainer_v1.DcrlPPOTrainer`, TransferQueue batches) runs
the same step protocol: the composed DCPO + ICR step of the fixed batch (tests/step_fixture.py,
which dcrl's own trainer, the TRL adapter and the legacy verl recipe are checked against) gives
dcrl.core's advantages.

Through verl's own V1 code: a real TransferQueue (on a local Ray instance) holds the rows in the
layout verl's agent loop writes (one key per row, jagged tensors), in a shuffled order, with
verl's synthetic padding rows (`upsample_batch_to_divisible_size`); verl's
`PPOTrainer._compute_old_log_prob`, `_compute_advantage` (GRPO, then dcrl's) and `_update_actor`
run around the recipe's hooks. Only verl's actor worker group is a stand-in: the fixture's fixed
policy, written into TransferQueue as verl's worker writes its log-probs (over the whole
sequence, shifted by one), and an update that reads the advantages it would train on."""

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


def test_the_v1_trainer_refuses_aepo_and_keeps_controller_state(tmp_path, monkeypatch):
    from omegaconf import OmegaConf
    from verl.trainer.ppo.v1 import PPOTrainer

    from dcrl.integrations.verl.trainer_v1 import DcrlPPOTrainer

    monkeypatch.setattr(PPOTrainer, "__init__", lambda self, config: None)
    monkeypatch.setattr(PPOTrainer, "_save_checkpoint", lambda self: None)
    monkeypatch.setattr(PPOTrainer, "_load_checkpoint", lambda self: None)
    config = _config(tmp_path)
    aepo = OmegaConf.create(OmegaConf.to_container(config))
    aepo.algorithm.dcrl = {"name": "aepo"}
    with pytest.raises(ValueError, match="trainer.use_v1=False"):
        DcrlPPOTrainer(aepo)

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
