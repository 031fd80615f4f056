"""dcrl's recipe on verl's V1 trainer (`trainer.use_v1=True`, verl 0.9's default): a subclass of
verl's synchronous `PPOTrainer` registered in verl's trainer registry as "dcrl", so verl's own V1
task runner builds it (`trainer.v1.trainer_mode=dcrl`; `python -m dcrl.integrations.verl.main`
sets it, and puts this module in VERL_USE_EXTERNAL_MODULES next to dcrl's registrations).

The V1 trainer keeps the step's rows in TransferQueue (one key per row, jagged tensors) and hands
`KVBatchMeta` handles around; the recipe reads and writes the same fields there, at the same
points of verl's step as on the legacy trainer (trainer.py), overriding hooks, not copying them:

    _compute_old_log_prob  after verl's pass at T = 1 (old_log_probs, entropy in TransferQueue):
                           dcrl's step protocol on a padded view of the batch (verl's synthetic
                           padding rows left out); a target's pass at another T (DCPO's ρ) is one
                           more `compute_log_prob` of verl's actor with extra_info temperature T;
                           the entropy signals of verl's pass are measured;
    _compute_advantage     verl's own, then the step's advantages written over verl's
                           `advantages` (its `returns` stay verl's);
    _update_actor          verl's update, then the controller reads the entropy signals and
                           dcrl's metrics join verl's;
    _save_checkpoint /     the controller state in verl's step folder (before verl's tracker
    _load_checkpoint       file), read back from the folder verl resumes from;
    _init_resource_pool_mgr  on dcrl's CPU platform (trainer.device=cpu): the gloo worker and
                           verl's pool manager counting CPUs (cpu_platform.py, cpu_workers.py).

A row-replacing target (AEPO) is refused: its tempered groups would have to go through V1's
agent loop into TransferQueue and be spliced there, which is not built (use the legacy trainer).
Importing this module needs TransferQueue (`pip install TransferQueue==0.1.11`).
"""

from __future__ import annotations

from typing import Any

import torch
import transfer_queue as tq
from tensordict import TensorDict
from verl.trainer.ppo.v1 import PPOTrainerSync, register_trainer
from verl.workers.utils.padding import response_from_nested

from dcrl.integrations.verl import transforms
from dcrl.integrations.verl.cpu_platform import cpu_resource_pool_manager, on_cpu_platform
from dcrl.integrations.verl.trainer import DcrlRecipe
from dcrl.train import step as step_protocol

V1_TRAINER_NAME = "dcrl"  # trainer.v1.trainer_mode


@register_trainer(V1_TRAINER_NAME)
class DcrlPPOTrainer(DcrlRecipe, PPOTrainerSync):
    """verl's synchronous V1 PPO trainer with dcrl's step (see the module docstring)."""

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self._init_recipe(config)
        if self._replacer is not None:
            raise ValueError(
                f"error: trainer.use_v1=True with {self._replacer.name!r}, a target that replaces "
                "rows: dcrl splices its tempered rows into verl's legacy trainer only; set "
                "trainer.use_v1=False (docs/scaling_out_verl.md)"
            )
        self._advantages: dict[str, torch.Tensor] = {}
        self._entropy_sums: torch.Tensor | None = None

    def _build_replay_buffer(self) -> Any:
        # verl keys its synchronous behaviour (replay buffer, no TransferQueue checkpoint, no
        # in-flight prompts to re-issue) on trainer_mode == "sync"; this trainer is verl's
        # synchronous one under another registry name.
        self.trainer_mode = "sync"
        return super()._build_replay_buffer()

    def _init_resource_pool_mgr(self) -> None:
        super()._init_resource_pool_mgr()
        if on_cpu_platform():
            from dcrl.integrations.verl.cpu_workers import cpu_worker_class

            self.role_worker_mapping = {
                role: cpu_worker_class(worker) for role, worker in self.role_worker_mapping.items()
            }
            self.resource_pool_manager = cpu_resource_pool_manager(self.resource_pool_manager)

    # -- old log-probs: the step protocol -------------------------------------------------
    def _compute_old_log_prob(self, batch: Any, metrics: dict) -> Any:
        batch = super()._compute_old_log_prob(batch, metrics)
        real = [i for i, tag in enumerate(batch.tags) if not tag.get("is_padding", False)]
        keys = [batch.keys[i] for i in real]
        fields = tq.kv_batch_get(
            keys=keys, partition_id=batch.partition_id, select_fields=transforms.V1_STEP_FIELDS
        )
        view = transforms.v1_step_view(fields, self._pad_token_id())
        old_log_probs = view.batch["old_log_probs"]
        width = old_log_probs.shape[1]
        self._entropy_sums = step_protocol.measure_entropy(
            old_log_probs, view.batch["response_mask"], None, view.batch["entropys"]
        )

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
