"""dcrl's algorithms as a verl trainer recipe: a `RayPPOTrainer` subclass (verl 0.9, legacy
trainer, `trainer.use_v1=False`) that overrides hooks of `RayPPOTrainer.fit` instead of copying
it, and runs dcrl's step protocol (`dcrl.train.step`) on verl's batch: any composition of targets
(the presets aepo, dcpo, icr, or `composed`, e.g. DCPO + ICR), the same recipe dcrl's trainer and
the TRL adapter run. What it shares with the V1 trainer's recipe (trainer_v1.py) is `DcrlRecipe`:
the refusals, the algorithm, `step.prepare` on a padded batch, the controller's checkpoints.

    init_workers          with a row-replacing target (AEPO): wrap the rollout manager, so that
                          each training rollout is followed by AEPO's tempered one in the same
                          generation phase (dcrl's tempered agent loop), before verl puts the
                          rollout replicas to sleep; the request is padded to a multiple of the
                          agent-loop workers and its columns (uid, ...) carried over
                          (`transforms.generate_for_workers`); the training rollout's rows get
                          their rollout position (`transforms.mark_rollout_rows`);
    _compute_old_log_prob AEPO: score the tempered rows (a colocated reward model runs here, with
                          the replicas asleep) and splice the correct ones into the batch, over
                          the first prompts' rows (found by their rollout position, wherever
                          verl's balance_batch moved them), in place, so that the rewards,
                          reward columns and token counts fit() took earlier are the spliced
                          rows' own; the old-log-prob pass scores the mixed batch at T = 1, then
                          their rollout log-probs are set to π_old (no importance correction).
                          Every other composition: after verl's pass at T = 1, `step.prepare` on
                          the batch, a target's pass at another T (DCPO's ρ) served by one more
                          pass of verl's actor with the logits / T. Both measure the controller's
                          entropy signals on this pass (so verl's rollout_correction.bypass_mode,
                          which skips it, is refused);
    _update_actor         replace verl's advantages by the step's (`dcrl_advantages`), update,
                          then feed the entropy signals to the controller and log dcrl's metrics;
    _save_checkpoint /    the controller's state goes into verl's step folder under
    _load_checkpoint      default_local_dir (global_step_N/dcrl_controller.json), before verl
                          writes latest_checkpointed_iteration.txt, and to default_hdfs_dir when
                          set; it comes back from the folder verl resumes from.

The algorithm and its settings come from verl's config block `algorithm.dcrl` (the fields of
dcrl's AEPOConfig / DCPOConfig / ICRConfig / ComposedConfig, `name` naming it), built by dcrl's
own config classes. ICR alone also runs on verl's own trainers as the registered advantage
estimator `dcrl_icr`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import torch
from verl import DataProto
from verl.trainer.ppo.ray_trainer import RayPPOTrainer

from dcrl.algorithms import get_algorithm_class
from dcrl.algorithms.base import Algorithm
from dcrl.integrations.verl import transforms
from dcrl.integrations.verl.register import dcrl_settings
from dcrl.step_data import StepContext
from dcrl.train import step as step_protocol

CONTROLLER_FILE = "dcrl_controller.json"
VERL_POLICY_LOSS = "ppo_clip"  # the loss verl's actor computes (dcrl_ppo_clip is dcrl's own)


def verl_refusal(algorithm: Algorithm) -> str | None:
    """Why dcrl's verl recipe cannot run `algorithm` as it means it (None when it can): decided
    by what the algorithm does (its policy loss, its targets' loss terms, whether it composes a
    target at all), not by its name, so a user's composition runs wherever it can."""
    policy_loss = algorithm.config.policy_loss
    if policy_loss != VERL_POLICY_LOSS:
        return (
            f"its policy loss is {policy_loss!r}, and verl's actor computes its own loss "
            f"(actor_rollout_ref.actor.policy_loss.loss_mode; dcrl_ppo_clip is dcrl's "
            f"{VERL_POLICY_LOSS}); train it with `dcrl train`"
        )
    loss_terms = [t.name for t in step_protocol.loss_term_targets(algorithm)]
    if loss_terms:
        return (
            f"its target {', '.join(loss_terms)} adds a loss term, which verl's actor loss does "
            "not compute; train it with `dcrl train`, or drop it"
        )
    if not step_protocol.targets_of(algorithm):
        return (
            "it composes no target (GRPO with its PPO settings), which verl's own trainer runs: "
            "algorithm.adv_estimator=dcrl_grpo with `python -m verl.trainer.main_ppo`"
        )
    return None


def _row_replacer(algorithm: Algorithm) -> Any:
    """The algorithm's row-replacing target, if any; refuses what the verl recipe cannot run.

    By capability, not by class: verl draws a row-replacing target's extra samples in its own
    generation phase and splices them in with `transforms.aepo_splice` (tempered groups of the
    first prompts, their correct rows swapped in), so the target must mark its rows
    (`foreign_rows`), decide its temperature with a controller (`decide`), and carry the settings
    that splice reads (`transforms.TEMPERED_ROW_SETTINGS`)."""
    replacing = step_protocol.row_replacing_targets(algorithm)
    if not replacing:
        return None
    (target,) = replacing  # dcrl.targets allows at most one
    missing = transforms.missing_splice_capabilities(target)
    if missing:
        raise ValueError(
            f"error: algorithm.dcrl: target {target.name!r} replaces rows (stage 'replace') but "
            f"lacks what the dcrl verl trainer's splice of tempered rows needs: "
            f"{', '.join(missing)}; train it with `dcrl train` or the TRL adapter"
        )
    others = [t.name for t in step_protocol.targets_of(algorithm) if t is not target]
    if others:
        raise ValueError(
            f"error: algorithm.dcrl.targets: {target.name!r} replaces rows and is composed with "
            f"{', '.join(others)}; the dcrl verl trainer runs a row-replacing target alone (its "
            "rows are spliced in before verl's old-log-prob pass); compose them with `dcrl "
            "train` or the TRL adapter, or drop one"
        )
    return target


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
            transforms.mark_rollout_rows(output)  # rollout positions, for the splice
            self._trainer._generate_tempered(gen_batch)
        return output


class DcrlRecipe:
    """What dcrl's recipe does the same on verl's legacy trainer (`DcrlRayPPOTrainer`) and its
    V1 trainer (`trainer_v1.DcrlPPOTrainer`): the settings it refuses, the algorithm built from
    `algorithm.dcrl`, `step.prepare` on a padded view of verl's batch, and the controller state
    beside verl's checkpoints. The trainers differ in how they hold the batch (DataProto in
    memory, TransferQueue for V1) and in how they run a scoring pass at another temperature."""

    config: Any
    global_steps: int

    def _init_recipe(self, config: Any) -> None:
        """Build the algorithm from `algorithm.dcrl`, refusing what the recipe cannot run."""
        block = config.algorithm.get("dcrl", None) or {}
        name = block.get("name", None)
        try:
            algorithm_class = get_algorithm_class(str(name))
        except (KeyError, ValueError) as error:
            raise ValueError(f"error: algorithm.dcrl.name={name!r}: {error}") from None
        if config.algorithm.get("use_kl_in_reward", False):
            raise ValueError(
                "error: algorithm.use_kl_in_reward=True: dcrl's targets compute their advantages "
                "from the sequence scores, before any KL penalty; set it to False (the papers "
                "train without KL), or use the actor's KL loss"
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
        self.dcrl_algorithm = algorithm_class(
            dcrl_settings(config.algorithm, algorithm_class.config_class)
        )
        self.dcrl_config = self.dcrl_algorithm.config
        refusal = verl_refusal(self.dcrl_algorithm)
        if refusal:
            raise ValueError(
                f"error: algorithm.dcrl.name={name!r}: the dcrl verl trainer cannot run it: "
                f"{refusal}"
            )
        # By what the targets do: a row-replacing one (stage "replace") needs its extra samples
        # drawn in verl's generation phase and spliced in before the old-log-prob pass.
        self._replacer = _row_replacer(self.dcrl_algorithm)
        names = [target.name for target in step_protocol.targets_of(self.dcrl_algorithm)]
        print(f"dcrl: {type(self).__name__} runs {name} (targets: {', '.join(names) or 'none'})")
        self._entropy: dict[str, float] = {}
        self._step_metrics: dict[str, float] = {}

    # -- the step protocol ------------------------------------------------------------------
    def _prepare_step(
        self,
        batch: DataProto,
        old_log_probs: torch.Tensor,
        tempered_pass: Callable[[float], torch.Tensor],
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """`step_protocol.prepare` on verl's batch (a padded DataProto with prompts, responses,
        response_mask, attention_mask, rm_scores and uid): (N, L) advantages and the step's
        metrics. `tempered_pass(T)` is verl's actor's (N, L) log-probs of the batch at T."""
        rollout = transforms.rollout_batch(batch, self._pad_token_id())
        scores = transforms.sequence_scores(batch.batch["rm_scores"]).float()
        passes = {1.0: old_log_probs}

        def logprob_pass(
            input_ids, attention_mask, response_mask, temperature=1.0, with_entropy=False
        ):
            transforms.check_same_rows(rollout, input_ids, attention_mask)
            if with_entropy:
                raise ValueError(
                    "error: a target asked for the full entropy of a scoring pass; the dcrl verl "
                    "trainer serves log-probs only (the entropy comes from verl's own pass)"
                )
            if temperature not in passes:
                passes[temperature] = tempered_pass(temperature)
            return passes[temperature].float() * response_mask, None

        def no_rollout(*args: Any, **kwargs: Any):
            raise ValueError(
                "error: a target asked for extra samples mid-step; in verl only a row-replacing "
                "target (stage 'replace', aepo) gets them, drawn in verl's generation phase"
            )

        step = getattr(self, "global_steps", 0)
        ctx = StepContext(step=step, rollout=no_rollout, logprob_pass=logprob_pass)
        train_batch, metrics = step_protocol.prepare(self.dcrl_algorithm, rollout, scores, ctx)
        return train_batch.advantages, metrics

    def _pad_token_id(self) -> int:
        tokenizer = getattr(self, "tokenizer", None)
        pad = getattr(tokenizer, "pad_token_id", None)
        return 0 if pad is None else int(pad)

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

    def _write_controller_state(self) -> None:
        """The controller state into this step's folder (and default_hdfs_dir when set); called
        before verl's own save, which ends with latest_checkpointed_iteration.txt, so that a
        crash in between leaves the tracker on the previous, complete step."""
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

    def _read_controller_state(self) -> None:
        """After verl resumed at global_steps > 0: the controller state saved with that step."""
        if self.global_steps <= 0:
            return
        path = self._controller_path(for_resume=True)
        if os.path.exists(path):
            with open(path) as handle:
                self.dcrl_algorithm.load_state_dict(json.load(handle))
            print(f"dcrl: controller state restored from {path}")
        else:
            print(
                f"dcrl: no {CONTROLLER_FILE} in {os.path.dirname(path)}; the controller "
                "starts afresh"
            )


class DcrlRayPPOTrainer(DcrlRecipe, RayPPOTrainer):
    """verl's legacy PPO trainer with dcrl's step (see the module docstring)."""

    def __init__(self, config: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        self._init_recipe(config)
        self._tempered: DataProto | None = None

    # -- rollout ----------------------------------------------------------------------------
    def init_workers(self) -> None:
        super().init_workers()
        if self._replacer is not None:
            self.async_rollout_manager = _TemperedRolloutManager(self.async_rollout_manager, self)

    def _generate_tempered(self, gen_batch: DataProto) -> None:
        """AEPO: sample the first prompts' groups again at this step's temperature.

        Runs inside verl's generation phase, while the rollout replicas are awake. Scoring waits
        for `_score_tempered`: a colocated reward model runs only after verl has put the
        replicas to sleep."""
        assert self._replacer is not None
        decision, _ = self._replacer.decide()
        group_size = self.config.actor_rollout_ref.rollout.n
        num_prompts = len(gen_batch) // group_size
        num_tempered = transforms.aepo_num_tempered_prompts(
            num_prompts, decision, self._replacer.config
        )
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

    def _compute_reward_colocate(self, batch: DataProto) -> DataProto:
        result = super()._compute_reward_colocate(batch)
        if self._replacer is not None:
            # fit() keeps these columns from before the splice: make them object arrays, which
            # the splice can write any spliced row's values into (transforms.write_spliced_rows).
            transforms.reward_extras_as_objects(result)
        return result

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

    # -- old log-probs: the step protocol -------------------------------------------------
    def _compute_old_log_prob(self, batch: DataProto):
        self._step_metrics = {}
        rollout_rows = batch.non_tensor_batch.pop(transforms.ROLLOUT_ROW_KEY, None)
        if self._replacer is not None and self._tempered is not None:
            # AEPO: the tempered rows replace some on-policy rows before the pass at T = 1:
            # the first prompts' rows, found by their rollout position (verl's balance_batch
            # has reordered the batch by length), as in dcrl's own trainer.
            if rollout_rows is None:
                raise RuntimeError(
                    f"error: the batch reached AEPO's splice without {transforms.ROLLOUT_ROW_KEY}"
                    " (each row's rollout position, set by dcrl's rollout wrapper); dcrl cannot "
                    "tell which rows are the first prompts'"
                )
            decision, metrics = self._replacer.decide()
            tempered = self._score_tempered(self._tempered)
            spliced, aepo_metrics = transforms.aepo_splice(
                batch,
                tempered,
                decision,
                self._replacer.config,
                advantage_std=self._replacer.base.advantage_std,
                order=rollout_rows,
            )
            self._tempered = None
            # fit() keeps its own references to `batch`, its reward tensor and reward-extra
            # columns, and its token counts: update those objects in place. (Never reorder the
            # rows here: fit's reward tensor would no longer line up.)
            transforms.write_spliced_rows(batch, spliced)
            self._step_metrics.update({**metrics, **aepo_metrics})

        old_log_prob, mfu = super()._compute_old_log_prob(batch)
        neutralized = transforms.neutralize_rollout_logprobs(
            batch, old_log_prob.batch["old_log_probs"]
        )
        if neutralized:
            self._step_metrics["aepo/rollout_logprobs_reset"] = float(neutralized)
        self._entropy_sums = step_protocol.measure_entropy(
            old_log_prob.batch["old_log_probs"],
            batch.batch["response_mask"],
            batch.batch.get("dcrl_is_reinforce", None),  # AEPO's spliced rows, if any
            old_log_prob.batch["entropys"],
        )
        self._entropy = step_protocol.entropy_signals(self._entropy_sums)
        if self._replacer is None:
            # Every other composition (dcpo, icr, dcpo + icr, ...): dcrl's step protocol on this
            # batch, its scoring passes served by verl's actor.
            advantages, metrics = self._prepare(batch, old_log_prob.batch["old_log_probs"])
            batch.batch[transforms.ADVANTAGES_KEY] = advantages
            self._step_metrics.update(metrics)
        return old_log_prob, mfu

    def _prepare(
        self, batch: DataProto, old_log_probs: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """`step.prepare` on verl's batch; a pass at another T is one more old-log-prob pass of
        verl's actor, its logits divided by T (the engine reads meta_info["temperature"])."""

        def tempered_pass(temperature: float) -> torch.Tensor:
            temperature_before = batch.meta_info.get("temperature", 1.0)
            batch.meta_info["temperature"] = temperature
            try:
                tempered, _ = RayPPOTrainer._compute_old_log_prob(self, batch)
            finally:
                batch.meta_info["temperature"] = temperature_before
            return tempered.batch["old_log_probs"]

        return self._prepare_step(batch, old_log_probs, tempered_pass)

    # -- update -----------------------------------------------------------------------------
    def _update_actor(self, batch: DataProto) -> DataProto:
        if transforms.ADVANTAGES_KEY in batch.batch:
            batch.batch["advantages"] = batch.batch[transforms.ADVANTAGES_KEY]
        actor_output = super()._update_actor(batch)
        self._entropy = step_protocol.after_update(self.dcrl_algorithm, self._entropy_sums)
        actor_output.meta_info["metrics"].update({**self._step_metrics, **self._entropy})
        return actor_output

    # -- checkpoints ------------------------------------------------------------------------
    def _save_checkpoint(self) -> None:
        self._write_controller_state()
        super()._save_checkpoint()

    def _load_checkpoint(self):
        result = super()._load_checkpoint()
        self._read_controller_state()
        return result
