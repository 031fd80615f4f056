"""AEPO and DCPO as a verl trainer recipe: a `RayPPOTrainer` subclass (verl 0.9, legacy trainer,
`trainer.use_v1=False`) that overrides four hooks of `RayPPOTrainer.fit` instead of copying it.

    init_workers          wrap the rollout manager: after each training rollout, AEPO samples
                          its tempered groups in the same generation phase (dcrl's tempered
                          agent loop), before verl puts the rollout replicas to sleep; the
                          request is padded to a multiple of the agent-loop workers and its
                          columns (uid, ...) carried over (`transforms.generate_for_workers`);
    _compute_old_log_prob AEPO scores the tempered rows (a colocated reward model runs here, with
                          the replicas asleep) and splices the correct ones into the batch, so
                          the old-log-prob pass scores the mixed batch at T = 1, and sets their
                          rollout log-probs to π_old (no importance correction for AEPO's rows);
                          DCPO adds a second pass with the logits / T
                          (`old_log_probs_at_temperature`); both read the controller's entropy
                          signal from this pass (so verl's rollout_correction.bypass_mode, which
                          skips it, is refused);
    _update_actor         replace verl's advantages by AEPO's / DCPO's (dcrl.core, through
                          `transforms`), update, then feed the entropy to the controller and
                          log dcrl's metrics;
    _save_checkpoint /    the controller's state goes into verl's step folder under
    _load_checkpoint      default_local_dir (global_step_N/dcrl_controller.json), before verl
                          writes latest_checkpointed_iteration.txt, and to default_hdfs_dir when
                          set; it comes back from the folder verl resumes from.

The algorithm and its settings come from verl's config block `algorithm.dcrl` (the fields of
dcrl's AEPOConfig / DCPOConfig, `name: aepo | dcpo`), built by dcrl's own config classes.
ICR needs no trainer: it is the registered advantage estimator `dcrl_icr`.
"""

from __future__ import annotations

import json
import os
from typing import Any

from verl import DataProto
from verl.trainer.ppo.ray_trainer import RayPPOTrainer

from dcrl.algorithms import get_algorithm_class
from dcrl.integrations.verl import transforms
from dcrl.integrations.verl.register import dcrl_settings

CONTROLLER_FILE = "dcrl_controller.json"
RECIPE_ALGORITHMS = ("aepo", "dcpo")


class _TemperedRolloutManager:
    """Wraps verl's rollout manager: a training rollout is followed by AEPO's tempered one.

    Validation requests (meta_info["validate"]) pass through unchanged.
    """

    def __init__(self, inner: Any, trainer: DcrlRayPPOTrainer) -> None:
        self._inner = inner
        self._trainer = trainer

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def generate_sequences(self, gen_batch: DataProto) -> DataProto:
        output = self._inner.generate_sequences(gen_batch)
        if not gen_batch.meta_info.get("validate", False):
            self._trainer._generate_tempered(gen_batch)
        return output


class DcrlRayPPOTrainer(RayPPOTrainer):
    """verl's PPO trainer with dcrl's AEPO or DCPO step (see the module docstring)."""

    def __init__(self, config: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        block = config.algorithm.get("dcrl", None) or {}
        name = block.get("name", None)
        if name not in RECIPE_ALGORITHMS:
            raise ValueError(
                f"algorithm.dcrl.name must be one of {RECIPE_ALGORITHMS} for the dcrl verl "
                f"trainer, got {name!r}; ICR (dcrl_icr) and GRPO run on verl's own trainer"
            )
        rollout_temperature = config.actor_rollout_ref.rollout.temperature
        if rollout_temperature != 1.0:
            raise ValueError(
                f"actor_rollout_ref.rollout.temperature is {rollout_temperature}; AEPO and DCPO "
                "sample the policy itself at T = 1 and temper only their regularizer, so set it to "
                "1.0"
            )
        correction = config.algorithm.get("rollout_correction", None) or {}
        if correction.get("bypass_mode", False):
            raise ValueError(
                "error: algorithm.rollout_correction.bypass_mode=True skips verl's old-log-prob "
                "pass, which is where dcrl's AEPO splice and DCPO's second pass at T run, so the "
                "run would silently train plain GRPO; set algorithm.rollout_correction."
                "bypass_mode=False (decoupled mode) with the dcrl recipe"
            )
        algorithm_class = get_algorithm_class(name)
        self.dcrl_algorithm = algorithm_class(
            dcrl_settings(config.algorithm, algorithm_class.config_class)
        )
        self.dcrl_config = self.dcrl_algorithm.config
        self._decision = self.dcrl_algorithm.controller.decide()
        self._tempered: DataProto | None = None
        self._entropy: dict[str, float] = {}
        self._step_metrics: dict[str, float] = {}

    # -- rollout ----------------------------------------------------------------------------
    def init_workers(self) -> None:
        super().init_workers()
        if self.dcrl_algorithm.name == "aepo":
            self.async_rollout_manager = _TemperedRolloutManager(self.async_rollout_manager, self)

    def _generate_tempered(self, gen_batch: DataProto) -> None:
        """AEPO: sample the first prompts' groups again at this step's temperature.

        Runs inside verl's generation phase, while the rollout replicas are awake. Scoring waits
        for `_score_tempered`: a colocated reward model runs only after verl has put the
        replicas to sleep."""
        decision = self.dcrl_algorithm.controller.decide()
        group_size = self.config.actor_rollout_ref.rollout.n
        num_prompts = len(gen_batch) // group_size
        num_tempered = transforms.aepo_num_tempered_prompts(num_prompts, decision, self.dcrl_config)
        requests = transforms.aepo_tempered_requests(
            gen_batch, num_tempered, group_size, decision.temperature
        )
        self._tempered = transforms.generate_for_workers(
            self._inner_generate, requests, self._num_agent_workers()
        )

    def _num_agent_workers(self) -> int:
        """How many agent-loop workers verl's rollout manager splits a request batch over."""
        manager = self.async_rollout_manager
        inner = manager._inner if isinstance(manager, _TemperedRolloutManager) else manager
        workers = getattr(inner, "agent_loop_workers", None)
        if workers:
            return len(workers)
        return int(self.config.actor_rollout_ref.rollout.agent.num_workers)

    def _inner_generate(self, requests: DataProto) -> DataProto:
        manager = self.async_rollout_manager
        inner = manager._inner if isinstance(manager, _TemperedRolloutManager) else manager
        output = inner.generate_sequences(requests)
        output.meta_info.pop("timing", None)
        return output

    def _score_tempered(self, tempered: DataProto) -> DataProto:
        """The tempered rows' rewards and response mask, after verl's generation phase.

        Rule-based rewards stream inside the agent loop (`rm_scores` already there); a reward
        model is run here, with the rollout replicas asleep, as verl runs it for its own batch."""
        if "rm_scores" not in tempered.batch:
            if not getattr(self, "use_rm", False):
                raise RuntimeError(
                    "error: AEPO's tempered rows came back from verl's rollout without rm_scores "
                    "and no reward model is enabled (reward.reward_model.enable=False); dcrl "
                    "needs verl's agent loop to score them as it scores the on-policy rows: keep "
                    "verl's reward loop workers (its default with a rule-based reward)"
                )
            tempered = tempered.union(self._compute_reward_colocate(tempered))
        if "response_mask" not in tempered.batch:
            from verl.trainer.ppo.ray_trainer import compute_response_mask

            tempered.batch["response_mask"] = compute_response_mask(tempered)
        return tempered

    # -- old log-probs ----------------------------------------------------------------------
    def _compute_old_log_prob(self, batch: DataProto):
        decision, metrics = self.dcrl_algorithm.decide()
        self._decision = decision
        self._step_metrics = dict(metrics)
        if self.dcrl_algorithm.name == "aepo" and self._tempered is not None:
            tempered = self._score_tempered(self._tempered)
            spliced, aepo_metrics = transforms.aepo_splice(
                batch, tempered, decision, self.dcrl_config
            )
            self._tempered = None
            # fit() keeps its own reference to `batch`: update that object in place.
            batch.batch = spliced.batch
            batch.non_tensor_batch = spliced.non_tensor_batch
            self._step_metrics.update(aepo_metrics)

        old_log_prob, mfu = super()._compute_old_log_prob(batch)
        neutralized = transforms.neutralize_rollout_logprobs(
            batch, old_log_prob.batch["old_log_probs"]
        )
        if neutralized:
            self._step_metrics["aepo/rollout_logprobs_reset"] = float(neutralized)
        if self.dcrl_algorithm.name == "dcpo" and self.dcrl_config.use_rho:
            temperature_before = batch.meta_info.get("temperature", 1.0)
            batch.meta_info["temperature"] = decision.temperature  # the engine divides logits by it
            try:
                tempered, _ = super()._compute_old_log_prob(batch)
            finally:
                batch.meta_info["temperature"] = temperature_before
            old_log_prob.batch[transforms.TEMPERED_LOGPROBS_KEY] = tempered.batch["old_log_probs"]

        measured = DataProto.from_dict(
            tensors={
                "old_log_probs": old_log_prob.batch["old_log_probs"],
                "response_mask": batch.batch["response_mask"],
                **(
                    {"dcrl_is_reinforce": batch.batch["dcrl_is_reinforce"]}
                    if "dcrl_is_reinforce" in batch.batch
                    else {}
                ),
            }
        )
        self._entropy = transforms.entropy_signals(measured, old_log_prob.batch["entropys"])
        return old_log_prob, mfu

    # -- update -----------------------------------------------------------------------------
    def _update_actor(self, batch: DataProto) -> DataProto:
        if self.dcrl_algorithm.name == "aepo" and transforms.AEPO_ADVANTAGES_KEY in batch.batch:
            batch.batch["advantages"] = batch.batch[transforms.AEPO_ADVANTAGES_KEY]
        elif self.dcrl_algorithm.name == "dcpo":
            advantages, dcpo_metrics = transforms.dcpo_advantages(
                batch, self._decision, self.dcrl_config
            )
            batch.batch["advantages"] = advantages
            self._step_metrics.update(dcpo_metrics)

        actor_output = super()._update_actor(batch)
        self.dcrl_algorithm.after_update(self._entropy)
        actor_output.meta_info["metrics"].update({**self._step_metrics, **self._entropy})
        return actor_output

    # -- checkpoints ------------------------------------------------------------------------
    def _controller_path(self, for_resume: bool) -> str:
        """Where the controller state of this step lives: verl's step folder under
        `default_local_dir` when saving; when resuming, the folder verl resumes from (the
        `resume_from_path` folder with resume_mode=resume_path)."""
        trainer_config = self.config.trainer
        if (
            for_resume
            and trainer_config.resume_mode == "resume_path"
            and trainer_config.resume_from_path
        ):
            folder = str(trainer_config.resume_from_path)
        else:
            folder = os.path.join(
                str(trainer_config.default_local_dir), f"global_step_{self.global_steps}"
            )
        if not os.path.isabs(folder):
            folder = os.path.join(os.getcwd(), folder)
        return os.path.join(folder, CONTROLLER_FILE)

    def _save_checkpoint(self) -> None:
        # Written before verl's own save, which ends with latest_checkpointed_iteration.txt: a
        # crash in between leaves the tracker on the previous, complete step.
        path = self._controller_path(for_resume=False)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path + ".tmp", "w") as handle:
            json.dump(self.dcrl_algorithm.state_dict(), handle)
        os.replace(path + ".tmp", path)
        hdfs_dir = self.config.trainer.get("default_hdfs_dir", None)
        if hdfs_dir:
            from verl.utils import hdfs_io

            remote = os.path.join(str(hdfs_dir), f"global_step_{self.global_steps}")
            hdfs_io.makedirs(remote, exist_ok=True)
            hdfs_io.copy(path, os.path.join(remote, CONTROLLER_FILE))
        super()._save_checkpoint()

    def _load_checkpoint(self):
        result = super()._load_checkpoint()
        if self.global_steps > 0:
            path = self._controller_path(for_resume=True)
            if os.path.exists(path):
                with open(path) as handle:
                    self.dcrl_algorithm.load_state_dict(json.load(handle))
            else:
                print(
                    f"dcrl: no {CONTROLLER_FILE} in {os.path.dirname(path)}; the controller "
                    "starts afresh"
                )
        return result
