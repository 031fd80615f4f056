"""dcrl's recipe on verl's V1 trainer (`trainer.use_v1=True`, verl 0.9's default): a subclass of
verl's synchronous `PPOTrainer` registered in verl's trainer registry as "dcrl", so verl's own V1
task runner builds it (`trainer.v1.trainer_mode=dcrl`; `python -m dcrl.integrations.verl.main`
sets it, and puts this module in VERL_USE_EXTERNAL_MODULES next to dcrl's registrations).

The V1 trainer keeps the step's rows in TransferQueue (one key per row, jagged tensors) and hands
`KVBatchMeta` handles around; the recipe reads and writes the same fields there, at the same
points of verl's step as on the legacy trainer (trainer.py), overriding hooks, not copying them:

    replay buffer sample   AEPO (a row-replacing target): right after verl's replay buffer hands
                           over the step's training rows, while the rollout replicas are still
                           awake, the first prompts (in the order they were submitted, which
                           `_submit_batch_to_rollout` records) are sent again through verl's
                           agent-loop manager to dcrl's tempered agent loop at the controller's T,
                           under their own uids; the recipe waits for their groups in
                           TransferQueue as verl's replay buffer waits for its own;
    _compute_reward_colocate  AEPO with a colocated reward model: the tempered rows are scored
                           with verl's own pass, after the replicas went to sleep;
    _balance_batch         AEPO: before verl's balance, the correct tempered rows replace the
                           first prompts' rows in TransferQueue (the same rows, advantages and
                           `dcrl_is_reinforce` column as the legacy splice, `transforms
                           .aepo_splice`): each replaced key gets the tempered row's fields (its
                           own scores and reward extras, its prompt's uid) and lengths in its
                           tag; the tempered keys are cleared;
    _compute_old_log_prob  after verl's pass at T = 1 (old_log_probs, entropy in TransferQueue):
                           the entropy signals of verl's pass are measured (AEPO's spliced rows
                           left out of the on-policy one); AEPO sets the spliced rows' rollout
                           log-probs to π_old (no importance correction); every other
                           composition runs dcrl's step protocol on a padded view of the batch
                           (verl's synthetic padding rows left out), a target's pass at another T
                           (DCPO's ρ) being one more `compute_log_prob` of verl's actor with
                           extra_info temperature T;
    _compute_advantage     verl's own, then the step's advantages written over verl's
                           `advantages` (its `returns` stay verl's);
    _update_actor          verl's update, then the controller reads the entropy signals and
                           dcrl's metrics join verl's;
    _save_checkpoint /     the controller state in verl's step folder (before verl's tracker
    _load_checkpoint       file), read back from the folder verl resumes from;
    _init_resource_pool_mgr  on dcrl's CPU platform (trainer.device=cpu): the gloo worker and
                           verl's pool manager counting CPUs (cpu_platform.py, cpu_workers.py).

Importing this module needs TransferQueue (`pip install TransferQueue==0.1.11`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import transfer_queue as tq
from tensordict import TensorDict
from verl.trainer.ppo.v1 import PPOTrainerSync, register_trainer
from verl.utils import tensordict_utils as tu
from verl.workers.utils.padding import response_from_nested

from dcrl.integrations.verl import transforms
from dcrl.integrations.verl.cpu_platform import cpu_resource_pool_manager, on_cpu_platform
from dcrl.integrations.verl.trainer import DcrlRecipe
from dcrl.train import step as step_protocol

V1_TRAINER_NAME = "dcrl"  # trainer.v1.trainer_mode
TRAIN = "train"  # verl's TransferQueue partition of the training rollout
POLL_SECONDS = 0.2  # how often the tempered groups' status is read while they are sampled
DONE = ("finished", "failure")  # verl's terminal statuses of a prompt's group
SOURCE_KEY = "dcrl_tempered_row"  # which tempered row a spliced row came from (-1: none)


@dataclass
class TemperedRows:
    """AEPO's tempered groups of one step in TransferQueue, after the agent loop finished them.

    keys / tags: the tempered rows' keys and tags, in rollout order (prompt, then session);
    uids: each row's prompt uid (the training rollout's, not the key's); request_uids: the uids
    the request went under (its TransferQueue prompt keys); prompt_order: every prompt of the
    step in submission order."""

    keys: list[str]
    tags: list[dict]
    uids: list[str]
    request_uids: list[str]
    prompt_order: list[str]


class _TemperedReplayBuffer:
    """Wraps verl's V1 replay buffer: a training batch it hands over is followed by AEPO's
    tempered groups, sampled before verl puts the rollout replicas to sleep (on_sample_end).
    Validation batches pass through unchanged."""

    def __init__(self, inner: Any, trainer: DcrlPPOTrainer) -> None:
        self._inner = inner
        self._trainer = trainer

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def sample(self, global_steps: int, partition_id: str, batch_size: int) -> Any:
        batch, metrics = self._inner.sample(
            global_steps=global_steps, partition_id=partition_id, batch_size=batch_size
        )
        if partition_id == TRAIN:
            self._trainer._request_tempered(batch)
        return batch, metrics


@register_trainer(V1_TRAINER_NAME)
class DcrlPPOTrainer(DcrlRecipe, PPOTrainerSync):
    """verl's synchronous V1 PPO trainer with dcrl's step (see the module docstring)."""

    def __init__(self, config: Any) -> None:
        # The recipe first: its refusals come before verl starts anything, and verl's
        # constructor builds the replay buffer, which AEPO wraps.
        self._init_recipe(config)
        self._submitted: dict[str, tuple[TensorDict, int]] = {}  # AEPO: uid -> request row
        self._tempered: TemperedRows | None = None
        self._advantages: dict[str, torch.Tensor] = {}
        self._entropy_sums: torch.Tensor | None = None
        super().__init__(config)

    def _build_replay_buffer(self) -> Any:
        # verl keys its synchronous behaviour (replay buffer, no TransferQueue checkpoint, no
        # in-flight prompts to re-issue) on trainer_mode == "sync"; this trainer is verl's
        # synchronous one under another registry name.
        self.trainer_mode = "sync"
        buffer = super()._build_replay_buffer()
        if self._replacer is not None:
            buffer = _TemperedReplayBuffer(buffer, self)
        return buffer

    def _init_resource_pool_mgr(self) -> None:
        super()._init_resource_pool_mgr()
        if on_cpu_platform():
            from dcrl.integrations.verl.cpu_workers import cpu_worker_class

            self.role_worker_mapping = {
                role: cpu_worker_class(worker) for role, worker in self.role_worker_mapping.items()
            }
            self.resource_pool_manager = cpu_resource_pool_manager(self.resource_pool_manager)

    # -- AEPO: the tempered groups through verl's agent loop --------------------------------
    def _submit_batch_to_rollout(self, batch: TensorDict) -> int:
        if self._replacer is not None:  # which prompts come first, for AEPO's request
            for row, uid in enumerate(tu.get(batch, "uid")):
                self._submitted[str(uid)] = (batch, row)
        return super()._submit_batch_to_rollout(batch)

    def _request_tempered(self, batch: Any) -> None:
        """AEPO: sample the step's first prompts again at the controller's temperature, through
        verl's agent-loop manager (dcrl's tempered agent loop), and wait for their groups.

        Runs when verl's replay buffer hands over the training rows, with the rollout replicas
        awake. The rows are scored (streaming rewards: in the agent loop) and spliced later."""
        assert self._replacer is not None
        decision, _ = self._replacer.decide()
        sampled = {
            transforms.v1_key_parts(key)[0]
            for key, tag in zip(batch.keys, batch.tags, strict=True)
            if not tag.get("is_padding", False)
        }
        order = [uid for uid in self._submitted if uid in sampled]
        if len(order) != len(sampled):
            missing = sorted(sampled - set(order))
            raise RuntimeError(
                f"error: verl's replay buffer handed over prompts {missing[:3]} that dcrl did not "
                "see submitted this step; AEPO re-samples the step's first prompts and cannot "
                "tell which those are"
            )
        count = transforms.aepo_num_tempered_prompts(len(order), decision, self._replacer.config)
        request = self._request_rows(order[:count])
        self._submitted = {}  # sync: every prompt submitted so far was sampled or evicted
        request = transforms.v1_tempered_request(request, decision.temperature)
        request_uids = [str(uid) for uid in tu.get(request, "uid")]
        tq.kv_batch_put(
            keys=request_uids,
            partition_id=TRAIN,
            tags=[{"status": "pending", "dcrl_tempered": True} for _ in request_uids],
        )
        self.agent_loop_manager.generate_sequences(request)
        listing = self._wait_for_groups(request_uids)
        prompt_of = dict(zip(request_uids, order[:count], strict=True))
        rows = []
        for key, tag in listing.items():
            if key.count("_") < 2 or tag.get("status") != "success":
                continue  # a prompt key, or a session that failed
            uid, session, index = transforms.v1_key_parts(key)
            if uid in prompt_of:
                rows.append((request_uids.index(uid), session, index, key, dict(tag)))
        rows.sort(key=lambda row: row[:3])
        self._tempered = TemperedRows(
            keys=[row[3] for row in rows],
            tags=[row[4] for row in rows],
            uids=[prompt_of[transforms.v1_key_parts(row[3])[0]] for row in rows],
            request_uids=request_uids,
            prompt_order=order,
        )

    def _request_rows(self, uids: list[str]) -> TensorDict:
        """The recorded request rows of these prompts, in this order, as one TensorDict."""
        parts: list[TensorDict] = []
        run: list[int] = []
        source: TensorDict | None = None
        for uid in uids:
            batch, row = self._submitted[uid]
            if source is not None and batch is not source:
                parts.append(tu.index_select_tensor_dict(source, run))
                run = []
            source = batch
            run.append(row)
        assert source is not None
        parts.append(tu.index_select_tensor_dict(source, run))
        return parts[0] if len(parts) == 1 else tu.concat_tensordict(parts)

    @staticmethod
    def _wait_for_groups(uids: list[str]) -> dict[str, dict]:
        """Poll TransferQueue until every one of these prompt groups is finished (or failed),
        as verl's replay buffer polls for its own; returns the partition's listing then."""
        while True:
            listing = (tq.kv_list(partition_id=TRAIN) or {}).get(TRAIN, {})
            if all(listing.get(uid, {}).get("status") in DONE for uid in uids):
                return listing
            time.sleep(POLL_SECONDS)

    def _compute_reward_colocate(self, batch: Any, metrics: dict | None = None) -> Any:
        batch = super()._compute_reward_colocate(batch, metrics=metrics)
        tempered = self._tempered
        if tempered is not None and tempered.keys and batch.partition_id == TRAIN:
            # A colocated reward model scores the tempered rows too, now that the replicas sleep.
            from transfer_queue import KVBatchMeta

            meta = KVBatchMeta(partition_id=TRAIN, keys=tempered.keys, tags=tempered.tags)
            super()._compute_reward_colocate(meta)
        return batch

    def _balance_batch(self, batch: Any, metrics: dict, *args: Any, **kwargs: Any) -> Any:
        if self._tempered is not None:
            self._splice_tempered(batch)
        return super()._balance_batch(batch, metrics, *args, **kwargs)

    def _splice_tempered(self, batch: Any) -> None:
        """AEPO: the correct tempered rows replace the first prompts' rows in TransferQueue, as
        the legacy trainer's splice replaces them in its batch (`transforms.aepo_splice`)."""
        assert self._replacer is not None and self._tempered is not None
        tempered, self._tempered = self._tempered, None
        decision, metrics = self._replacer.decide()
        real = [i for i, tag in enumerate(batch.tags) if not tag.get("is_padding", False)]
        keys = [batch.keys[i] for i in real]
        fields = tq.kv_batch_get(
            keys=keys + tempered.keys,
            partition_id=batch.partition_id,
            select_fields=transforms.V1_SPLICE_FIELDS,
        )
        view = transforms.v1_step_view(fields, self._pad_token_id())
        # The tempered rows as their prompts' own: the uid they were requested for.
        view.non_tensor_batch["uid"][len(keys) :] = tempered.uids
        view.non_tensor_batch[SOURCE_KEY] = np.concatenate(
            [np.full(len(keys), -1), np.arange(len(tempered.keys))]
        )
        spliced, aepo_metrics = transforms.aepo_splice(
            view.slice(0, len(keys)),
            view.slice(len(keys), len(view)),
            decision,
            self._replacer.config,
            advantage_std=self._replacer.base.advantage_std,
            order=transforms.v1_rollout_positions(keys, tempered.prompt_order),
        )
        is_reinforce = spliced.batch[transforms.IS_REINFORCE_KEY].bool()
        replaced = is_reinforce.nonzero().flatten().tolist()
        if replaced:
            sources = [int(spliced.non_tensor_batch[SOURCE_KEY][i]) for i in replaced]
            # The tempered rows' fields that the training rows hold (not the request's own
            # columns, such as the temperature), their prompts' uids, their lengths in the tags.
            names = [
                name
                for name in self._field_names(keys[0], batch.partition_id)
                if name in self._field_names(tempered.keys[sources[0]], batch.partition_id)
            ]
            rows = tq.kv_batch_get(
                keys=[tempered.keys[s] for s in sources],
                partition_id=batch.partition_id,
                select_fields=names,
            )
            tu.assign_non_tensor_stack(rows, "uid", [tempered.uids[s] for s in sources])
            tags = [dict(tempered.tags[s]) for s in sources]
            tq.kv_batch_put(
                keys=[keys[i] for i in replaced],
                partition_id=batch.partition_id,
                fields=rows,
                tags=tags,
            )
            for i, tag in zip(replaced, tags, strict=True):
                batch.tags[real[i]].update(tag)
        tq.kv_batch_put(
            keys=keys,
            partition_id=batch.partition_id,
            fields=TensorDict({transforms.IS_REINFORCE_KEY: is_reinforce}, batch_size=len(keys)),
        )
        tq.kv_clear(keys=tempered.keys + tempered.request_uids, partition_id=batch.partition_id)
        self._advantages = dict(
            zip(keys, spliced.batch[transforms.ADVANTAGES_KEY].float(), strict=True)
        )
        self._step_metrics = {**metrics, **aepo_metrics}

    @staticmethod
    def _field_names(key: str, partition_id: str) -> list[str]:
        """The fields TransferQueue holds for one row."""
        return list(tq.kv_batch_get(keys=[key], partition_id=partition_id).keys())

    # -- old log-probs: the step protocol -------------------------------------------------
    def _compute_old_log_prob(self, batch: Any, metrics: dict) -> Any:
        batch = super()._compute_old_log_prob(batch, metrics)
        real = [i for i, tag in enumerate(batch.tags) if not tag.get("is_padding", False)]
        keys = [batch.keys[i] for i in real]
        select = list(transforms.V1_STEP_FIELDS)
        if self._replacer is not None:
            select.append(transforms.IS_REINFORCE_KEY)
        fields = tq.kv_batch_get(keys=keys, partition_id=batch.partition_id, select_fields=select)
        view = transforms.v1_step_view(fields, self._pad_token_id())
        old_log_probs = view.batch["old_log_probs"]
        width = old_log_probs.shape[1]
        spliced = None
        if self._replacer is not None:
            if not self._advantages:
                raise RuntimeError(
                    "error: the step reached verl's old-log-prob pass without AEPO's splice "
                    "(its tempered rows are requested when verl's replay buffer hands over the "
                    "training rows, through dcrl's wrapper of the buffer)"
                )
            spliced = fields[transforms.IS_REINFORCE_KEY].bool().reshape(-1)
        self._entropy_sums = step_protocol.measure_entropy(
            old_log_probs, view.batch["response_mask"], spliced, view.batch["entropys"]
        )
        if spliced is not None:
            self._reset_rollout_log_probs(
                batch, [k for k, s in zip(keys, spliced, strict=True) if s]
            )
            return batch

        def tempered_pass(temperature: float) -> torch.Tensor:
            """verl's actor's log-probs of the batch at `temperature`, (N, L) for the real rows."""
            before = dict(batch.extra_info)
            batch.extra_info.update(
                {"calculate_entropy": False, "compute_loss": False, "temperature": temperature}
            )
            try:
                self.actor_rollout_wg.compute_log_prob(batch)
            finally:
                batch.extra_info.clear()
                batch.extra_info.update(before)
            data = tq.kv_batch_get(
                keys=keys,
                partition_id=batch.partition_id,
                select_fields=["log_probs", "response_mask"],
            )
            nested = response_from_nested(data["log_probs"], data["response_mask"])
            return nested.to_padded_tensor(0.0)[:, :width]

        advantages, step_metrics = self._prepare_step(view, old_log_probs, tempered_pass)
        self._advantages = dict(zip(keys, advantages.float(), strict=True))
        self._step_metrics = step_metrics
        return batch

    def _reset_rollout_log_probs(self, batch: Any, keys: list[str]) -> None:
        """AEPO's spliced rows: their rollout log-probs set to π_old, so that verl's rollout
        correction leaves them unweighted (AEPO trains on them as samples of π^T, with no
        importance correction), as on the legacy trainer."""
        if not keys or not self.config.actor_rollout_ref.rollout.get("calculate_log_probs"):
            return
        data = tq.kv_batch_get(
            keys=keys, partition_id=batch.partition_id, select_fields=["old_log_probs"]
        )
        tq.kv_batch_put(
            keys=keys,
            partition_id=batch.partition_id,
            fields=TensorDict({"rollout_log_probs": data["old_log_probs"]}, batch_size=len(keys)),
        )
        self._step_metrics["aepo/rollout_logprobs_reset"] = float(len(keys))

    def _compute_advantage(self, batch: Any, metrics: dict) -> Any:
        batch = super()._compute_advantage(batch, metrics)
        data = tq.kv_batch_get(
            keys=batch.keys, partition_id=batch.partition_id, select_fields=["response_mask"]
        )
        lengths = data["response_mask"].offsets().diff().tolist()
        width = max(lengths)
        padded = torch.zeros((len(batch.keys), width))
        for i, key in enumerate(batch.keys):  # verl's padding rows keep advantage 0
            row = self._advantages.get(key)
            if row is not None:
                padded[i, : min(width, len(row))] = row[:width]
        advantages = transforms.v1_response_rows(padded, lengths)
        tq.kv_batch_put(
            keys=batch.keys,
            partition_id=batch.partition_id,
            fields=TensorDict({"advantages": advantages}, batch_size=len(batch.keys)),
        )
        return batch

    # -- update -----------------------------------------------------------------------------
    def _update_actor(self, batch: Any, metrics: dict) -> Any:
        batch = super()._update_actor(batch, metrics)
        if self._entropy_sums is not None:
            self._entropy = step_protocol.after_update(self.dcrl_algorithm, self._entropy_sums)
        metrics.update({**self._step_metrics, **self._entropy})
        self._advantages = {}
        return batch

    # -- checkpoints ------------------------------------------------------------------------
    def _save_checkpoint(self) -> None:
        self._write_controller_state()
        super()._save_checkpoint()

    def _load_checkpoint(self) -> None:
        super()._load_checkpoint()
        self._read_controller_state()
