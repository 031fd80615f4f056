"""The recipe trainer's hooks around verl's real rollout plumbing and checkpoint code.

verl's GPU workers are the one thing replaced (tests/verl/recipe_harness.py): an agent-loop
worker that samples responses with a seeded generator and grades them stands in for the Ray
handle of verl's `AgentLoopWorker`, and the old-log-prob pass is a fixed function. Everything
between them is verl's own code: its `AgentLoopManager.generate_sequences` (the chunking over
workers), `AgentLoopWorker._postprocess` (the batch a streaming-reward rollout returns),
`_get_gen_batch`, `compute_response_mask`, `_balance_batch`, `_compute_reward_colocate`,
`extract_reward`, the metric and dump functions, and `RayPPOTrainer._save_checkpoint` /
`_load_checkpoint`.
"""

import dataclasses
import json
import os

import numpy as np
import pytest
import torch
from verl import DataProto

from dcrl.integrations.verl import transforms
from dcrl.integrations.verl.trainer import CONTROLLER_FILE, DcrlRayPPOTrainer
from tests.verl.recipe_harness import aepo_trainer as _aepo_trainer
from tests.verl.recipe_harness import bare_trainer, encode, grade, prediction, verl_step
from tests.verl.recipe_harness import config as _config
from tests.verl.recipe_harness import prompts as _prompts
from tests.verl.recipe_harness import verl_step_until_old_log_prob as _verl_step_until_old_log_prob


def _bare_trainer(config) -> DcrlRayPPOTrainer:
    return bare_trainer(config)


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


@pytest.mark.parametrize("placement", ["front", "spread"])
def test_aepo_replaces_the_first_prompts_rows_whatever_order_verls_balance_batch_leaves(
    tmp_path, monkeypatch, placement
):
    """verl's `_balance_batch` reorders the rows by length before the old-log-prob hook, each
    data-parallel rank's shortest rows first. The same step (same seeds) with the rows left in
    rollout order and with verl's own `_balance_batch` over 4 data-parallel ranks replaces the
    same rows, the first prompts' as in dcrl's trainer (front: rollout positions 0..m-1;
    spread: floor(j N / m)), and gives the same batch row for row, not rank 0's shortest rows."""
    results = {}
    for balance in (False, True):
        trainer, _ = _aepo_trainer(
            tmp_path, monkeypatch, [], num_workers=2, dp_size=4, placement=placement
        )
        results[balance] = verl_step(trainer, num_prompts=8, n=4, balance=balance).batch
    plain, balanced = results[False], results[True]
    rows = len(plain)
    num_reinforce = int(plain.batch["dcrl_is_reinforce"].sum())
    assert num_reinforce >= 2  # the splice is exercised
    if placement == "front":
        expected = list(range(num_reinforce))
    else:
        expected = [j * rows // num_reinforce for j in range(num_reinforce)]
    plain_rows = plain.non_tensor_batch["test_row"]  # rollout positions
    assert list(plain_rows) == list(range(rows))
    assert sorted(plain_rows[plain.batch["dcrl_is_reinforce"].numpy()]) == expected

    balanced_rows = balanced.non_tensor_batch["test_row"]
    assert sorted(balanced_rows[:num_reinforce]) != expected  # verl moved those rows
    assert sorted(balanced_rows[balanced.batch["dcrl_is_reinforce"].numpy()]) == expected
    back = np.argsort(balanced_rows)  # the balanced batch in rollout order
    for key in plain.batch.keys():  # noqa: SIM118
        assert torch.equal(balanced.batch[key][back], plain.batch[key]), key
    for key in ("uid", "data_source", "acc", "pred"):
        assert list(balanced.non_tensor_batch[key][back]) == list(plain.non_tensor_batch[key]), key


@pytest.mark.parametrize("streaming_reward", [True, False], ids=["streaming", "reward-model"])
def test_spliced_rows_carry_their_own_scores_in_verls_reward_bookkeeping(
    tmp_path, monkeypatch, streaming_reward
):
    """verl's fit() takes the rewards (`extract_reward`: the rm_scores tensor and the reward
    columns) and the token counts before the old-log-prob hook where AEPO splices, and uses
    them afterwards: token_level_scores / token_level_rewards, the reward columns, critic/score,
    perf/total_num_tokens and the rollout dump. Every row, spliced ones included, carries its
    own score, extras (a longer `pred` string too) and token count there. (The rows stay in
    rollout order here; the test above covers verl's reordering.)"""
    trainer, _ = _aepo_trainer(tmp_path, monkeypatch, [], 2, streaming_reward=streaming_reward)
    step = verl_step(trainer, num_prompts=8, n=4, balance=False)
    batch, extras, metrics = step.batch, step.reward_extras, step.metrics
    spliced = batch.batch["dcrl_is_reinforce"]
    responses = batch.batch["responses"]
    own = torch.tensor([grade(response) for response in responses])
    tokens = batch.batch["attention_mask"].sum(-1)
    # The splice is exercised, and some spliced rows differ from the rows they replaced.
    assert (step.scores_before[spliced] != own[spliced]).any()
    assert (step.tokens_before[spliced] != tokens[spliced]).any()

    temperature = trainer._step_metrics["control/temperature"]  # the tempered rows'
    preds = [
        prediction(response, temperature if is_spliced else None)
        for response, is_spliced in zip(responses, spliced.tolist(), strict=True)
    ]
    assert torch.equal(batch.batch["token_level_scores"].sum(-1), own)
    assert torch.equal(batch.batch["token_level_rewards"].sum(-1), own)
    assert metrics["critic/score/mean"] == pytest.approx(float(own.mean()))
    assert list(extras["pred"]) == preds
    assert list(extras["acc"]) == [bool(score) for score in own]
    assert list(batch.non_tensor_batch["pred"]) == preds
    assert batch.meta_info["global_token_num"] == tokens.tolist()
    assert metrics["perf/total_num_tokens"] == int(tokens.sum())

    # verl's rollout dump (trainer.rollout_data_dir) of the step.
    trainer._init_dump_executor()
    trainer._log_rollout_data(batch, extras, {}, str(tmp_path / "dump"))
    trainer._shutdown_dump_executor()
    dumped = [json.loads(line) for line in (tmp_path / "dump" / "1.jsonl").read_text().splitlines()]
    assert [entry["score"] for entry in dumped] == own.tolist()
    assert [entry["pred"] for entry in dumped] == preds


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
        decision = dataclasses.replace(
            trainer.dcrl_algorithm.target.controller.decide(), weight=weight
        )
        monkeypatch.setattr(trainer.dcrl_algorithm.target.controller, "decide", lambda: decision)
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
    assert (
        resumed.dcrl_algorithm.target.controller.decide()
        == first.dcrl_algorithm.target.controller.decide()
    )

    resumed.global_steps = 4
    resumed._save_checkpoint()
    assert (tmp_path / "run2" / "global_step_4" / CONTROLLER_FILE).exists()
    assert not (tmp_path / "run" / "global_step_4").exists()
