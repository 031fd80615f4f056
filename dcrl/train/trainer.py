"""The training loop and the update: rollout → task scores → `step.prepare` → one PPO epoch over
mini-batches with micro-batch gradient accumulation → AdamW → `step.after_update` (the
controllers) → metrics → checkpoint.

docs/design.md "One training step" is this file's outline. Everything an algorithm decides lives
in `dcrl.algorithms` and `dcrl.targets`; everything here is the same for all of them. What the
loop uses but does not decide lives in the module that owns it (dcrl/train/__init__.py lists
them).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import yaml

from dcrl.algorithms import Algorithm, make_algorithm
from dcrl.config import to_dict
from dcrl.core.mismatch import correct_rollout
from dcrl.core.stats import rollout_metrics
from dcrl.errors import UserError
from dcrl.rewards import grade_rollout
from dcrl.step_data import StepContext, TrainBatch
from dcrl.train import batches, forward, memory, step
from dcrl.train import checkpoint as ckpt
from dcrl.train.config import RunConfig, load_run_config
from dcrl.train.data import ProblemSampler, check_prompts, load_data, prompt_formatter
from dcrl.train.disk import export_policy_atomically, prepare_run_dir
from dcrl.train.optimizer import build_optimizer
from dcrl.train.resume_check import restore_checkpoint, trainer_state
from dcrl.train.run_lock import RunLock, releases_lock_after, releases_lock_on_error
from dcrl.train.sinks import run_sinks
from dcrl.train.tally import UpdateTally


class TrainingDiverged(UserError):
    """`train.max_bad_steps` steps in a row had a NaN/inf loss or gradient."""


class Trainer:
    """Post-trains a causal LM with one of dcrl's algorithms. `fit()` runs the configured steps."""

    @releases_lock_on_error
    def __init__(
        self, config: RunConfig, *, resume: bool = False, backend: Any | None = None
    ) -> None:
        """Build the run of `config` (continue it from its latest checkpoint with `resume`).

        backend: a rollout backend to use instead of building the one `config.rollout` names,
            e.g. a vLLM engine shared by several runs of the same model (starting one takes
            tens of seconds); the trainer copies its policy's weights into it before its first
            rollout.
        """
        from dcrl.models import load_policy
        from dcrl.rollout import build_rollout_backend

        self.config = config
        self.run_dir = config.run_dir
        if config.train.threads > 0:
            torch.set_num_threads(config.train.threads)
        torch.manual_seed(config.train.seed)

        # Everything checkable without the model is checked first: a bad input fails in seconds.
        self.problems, template, self.reward_fn = load_data(config)
        # One writer per run directory, taken before anything in it is written (run_lock.py).
        self.run_lock = RunLock(self.run_dir).acquire()
        if not resume and ckpt.latest_checkpoint(self.run_dir) is not None:
            raise FileExistsError(
                f"run directory {self.run_dir} already holds checkpoints: continue it with "
                f"`dcrl train --resume {self.run_dir}`, or set log.output_dir to a new directory"
            )
        config_text = yaml.safe_dump(to_dict(config), sort_keys=False)
        if not resume:  # a resume writes it once the checkpoint is checked (resume_check.py)
            prepare_run_dir(self.run_dir, config_text)

        mc = config.model
        self.model, self.tokenizer = load_policy(
            mc.name,
            dtype=mc.dtype,
            lora=to_dict(mc.lora) if mc.lora is not None else None,
            gradient_checkpointing=mc.gradient_checkpointing,
            device=mc.device,
            strict=mc.strict_load,
        )
        if backend is None:
            backend = build_rollout_backend(config.rollout, self.model, self.tokenizer)
            self.engine_version = 0
        else:
            self.engine_version = -1  # a given engine holds other weights: sync before rollout
        self.backend = backend
        context = getattr(self.model.config, "max_position_embeddings", None)
        check_prompts(self.problems, template, self.tokenizer, context)
        self.format_prompt = prompt_formatter(template, self.tokenizer)
        self.sampler = ProblemSampler(
            self.problems, config.train.prompts_per_step, config.train.seed
        )
        self.algorithm: Algorithm = make_algorithm(config.algorithm)
        step.check_importance_cap(config.train.rollout_is_cap, self.algorithm)
        self.optimizer, self.scheduler = build_optimizer(self.model, config.train)
        self.step = 0
        self.bad_steps = 0  # consecutive steps with a skipped (non-finite) update
        # The rollout engine samples from its own copy of the weights when it has one (vllm):
        # `weights_version` counts the changes of the policy's weights (optimizer steps, a
        # resume), `engine_version` (set with the backend) the version the engine last received.
        self.weights_version = 0
        if resume:
            state = restore_checkpoint(
                self.run_dir,
                config,
                self.model,
                self.optimizer,
                self.scheduler,
                self.algorithm,
                self.sampler,
            )
            self.step = int(state["step"])
            self.bad_steps = int(state.get("bad_steps", 0))
            self.weights_version += 1  # the engine was built from the run's starting weights
            prepare_run_dir(self.run_dir, config_text)
        self.history: list[dict[str, float]] = []

    @classmethod
    def from_run_dir(cls, run_dir: str | Path) -> Trainer:
        """Rebuild the trainer of an interrupted run from its saved config and latest checkpoint."""
        run_dir = Path(run_dir)
        config_path = run_dir / "config.yaml"
        if not config_path.is_file():
            raise FileNotFoundError(f"{run_dir} is not a dcrl run directory (no config.yaml)")
        config = load_run_config(config_path, [f"log.output_dir={run_dir}"])
        return cls(config, resume=True)

    # -- the loop ------------------------------------------------------------------------------
    @releases_lock_after
    def fit(self) -> list[dict[str, float]]:
        """Run the remaining steps; returns the metrics of the steps run in this call."""
        tc = self.config.train
        sinks = run_sinks(self.config, self.step)
        try:
            while self.step < tc.steps:
                # The parts of a step that hold a batch name their own setting (train_step);
                # any other failed allocation of the step is reported here.
                with memory.whole_step_fits(self.config, self.step + 1):  # the step it runs
                    metrics = self.train_step()
                self.bad_steps = self.bad_steps + 1 if metrics["train/skipped_updates"] else 0
                metrics["train/bad_steps"] = float(self.bad_steps)
                self.history.append(metrics)
                for sink in sinks:
                    sink.log(self.step, metrics)
                if self.bad_steps >= tc.max_bad_steps:
                    raise TrainingDiverged(
                        f"training stopped at step {self.step}: the loss or gradient was NaN/inf "
                        f"in {self.bad_steps} steps in a row (train.max_bad_steps="
                        f"{tc.max_bad_steps}), so their updates were skipped and never reached "
                        f"the weights; {ckpt.resume_hint(self.run_dir)}. Lower train.lr or "
                        "train.grad_clip, or check the reward and the data"
                    )
                if (tc.save_every and self.step % tc.save_every == 0) or self.step == tc.steps:
                    self.save()
            self.export_policy(self.run_dir / "policy")
        finally:
            for sink in sinks:
                sink.close()
        return self.history

    @property
    def device(self) -> torch.device:
        """Where the policy's parameters live; the tensors fed to it are moved there."""
        return next(self.model.parameters()).device

    def _generate(self, prompts: list[str], n: int, temperature: float, salt: int) -> Any:
        """The backend's rollout of `prompts`; a failed allocation names rollout.batch_size (an
        engine that schedules its own batches: rollout.n and rollout.max_new_tokens)."""
        rc = self.config.rollout
        batched = getattr(self.backend, "takes_batch_size", True)
        at_once = min(rc.batch_size, len(prompts)) if batched else len(prompts)
        with memory.rollout_fits(self.config, self.step, at_once, n, batched):
            return self.backend.generate(
                prompts, n, temperature, rc.top_p, rc.max_new_tokens, seed=self.rollout_seed(salt)
            )

    def save(self) -> Path:
        """Write a checkpoint of the current step (atomically: see dcrl.train.checkpoint).

        Raises:
            CheckpointError: the write failed (disk full, permissions); the previous checkpoint
                is intact.
        """
        state = trainer_state(self.config, self.algorithm, self.sampler, self.bad_steps)
        keep = self.config.train.keep_checkpoints
        return ckpt.save_checkpoint(
            self.run_dir, self.step, self.model, self.optimizer, self.scheduler, state, keep
        )

    def export_policy(self, out_dir: Path) -> None:
        """Save the trained policy as a Hugging Face directory (`dcrl eval --model` reads it),
        atomically: never a folder without weights (dcrl.train.disk)."""
        export_policy_atomically(
            self.model,
            self.tokenizer,
            out_dir,
            f"{ckpt.resume_hint(self.run_dir)} (it exports the policy at the end)",
        )

    def rollout_seed(self, salt: int) -> int:
        return (self.config.train.seed * 1_000_003 + self.step * 101 + salt) % (2**31)

    def sync_engine(self) -> float:
        """Give the rollout engine the policy's current weights when they changed since its last
        copy (after optimizer steps, after a resume); a no-op for engines that sample with the
        live model (hf). Returns the seconds it took."""
        if self.engine_version == self.weights_version:
            return 0.0
        start = time.perf_counter()
        self.backend.sync_weights(self.model)
        self.engine_version = self.weights_version
        return time.perf_counter() - start

    def train_step(self) -> dict[str, float]:
        """One rollout step; returns its metrics (one flat dict, names shared by all algorithms)."""
        rc = self.config.rollout
        t_sync = self.sync_engine()
        self.step += 1
        t_start = time.perf_counter()
        problems = self.sampler.next_batch()
        prompts = [self.format_prompt(p) for p in problems]
        batch = self._generate(prompts, rc.n, rc.temperature, 0)
        scores = self.task_scores(batch, problems)
        t_rollout = time.perf_counter()

        def extra_rollout(prompt_indices: Sequence[int], n: int, temperature: float):
            sub = self._generate([prompts[i] for i in prompt_indices], n, temperature, 1)
            return sub, self.task_scores(sub, [problems[i] for i in prompt_indices])

        tc = self.config.train
        on_policy = (
            tc.reuse_on_policy_logprobs
            and tc.ppo_epochs == 1
            and tc.mini_batch_prompts == tc.prompts_per_step
        )
        ctx = StepContext(
            step=self.step,
            rollout=extra_rollout,
            logprob_pass=self.logprob_pass,
            on_policy=on_policy,
        )
        train_batch, algo_metrics = step.prepare(self.algorithm, batch, scores, ctx)
        algo_metrics.update(self.correct_mismatch(batch, train_batch))
        t_prepare = time.perf_counter()
        update_metrics, entropy_sums = self.update(train_batch)
        t_update = time.perf_counter()
        # The controllers read the entropy of the update (the adapters hand it over the same way).
        entropy = step.after_update(self.algorithm, entropy_sums)

        generated = float(batch.response_lengths.sum())
        metrics = {
            **rollout_metrics(scores, batch.response_lengths, batch.truncated, batch.group_index),
            **algo_metrics,
            **update_metrics,
            **entropy,
            "time/rollout": t_rollout - t_start,
            "time/prepare": t_prepare - t_rollout,
            "time/update": t_update - t_prepare,
            "time/step": t_update - t_start,
            "time/sync_weights": t_sync,
            "perf/tokens_per_s": generated / max(t_update - t_start, 1e-9),
            "perf/rollout_tokens_per_s": generated / max(t_rollout - t_start, 1e-9),
            "train/lr": self.scheduler.get_last_lr()[0],
        }
        return metrics

    def correct_mismatch(self, batch: Any, train_batch: TrainBatch) -> dict[str, float]:
        """For an engine that reports its sampling log-probs (vllm): how far they are from the
        policy's own on the same tokens (rollout/logprob_*), and with `train.rollout_is_cap`
        the truncated importance weights applied to the train batch's advantages
        (dcrl.core.mismatch). {} for an engine that samples with the live model (hf)."""
        if batch.sampling_logprobs is None:
            return {}
        trainer_logprobs, _ = self.logprob_pass(*batch.sequences(), batch.response_mask)
        # The rows line up with the rollout's (step.check_importance_cap refuses a cap otherwise).
        train_batch.advantages, metrics = correct_rollout(
            batch.sampling_logprobs,
            trainer_logprobs,
            batch.response_mask,
            train_batch.advantages,
            self.config.train.rollout_is_cap,
        )
        return metrics

    def task_scores(self, batch: Any, problems: Sequence[Any]) -> torch.Tensor:
        """The task's scores of a rollout batch's responses, graded by the run's reward function
        (the task's own or data.reward) before any target shapes them: float (N,)."""
        return grade_rollout(self.reward_fn, batch, problems)

    def logprob_pass(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        response_mask: torch.Tensor,
        temperature: float = 1.0,
        with_entropy: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The log-prob pass (`StepContext.logprob_pass`, dcrl.train.forward.logprob_pass) of the
        current policy at temperature T, 2 × train.micro_batch_size sequences at a time."""
        tc = self.config.train
        return forward.logprob_pass(
            self.model,
            input_ids,
            attention_mask,
            response_mask,
            rows_at_once=2 * tc.micro_batch_size,
            temperature=temperature,
            with_entropy=with_entropy,
            chunk_size=tc.logprob_chunk_size,
            fused=tc.fused_head,
            fits=memory.logprob_pass_fits(self.config, self.step),
        )

    def update(self, batch: TrainBatch) -> tuple[dict[str, float], torch.Tensor]:
        """One PPO epoch (or several) over mini-batches; gradient accumulation over micro-batches
        with the mini-batch's global token/sequence counts, so the loss does not depend on the
        micro-batch size.

        Returns:
            The update's loss/* and train/* metrics, and the entropy sums of its micro-batches
            (`step.measure_entropy`, (5,) float64) for `step.after_update`.
        """
        tc = self.config.train
        self.model.train()
        num_minibatches = tc.prompts_per_step // tc.mini_batch_prompts
        rows_per_minibatch = math.ceil(len(batch) / num_minibatches)
        tally = UpdateTally()
        batch = batch.to(self.device)
        for _ in range(tc.ppo_epochs):
            for mb_rows in batches.row_chunks(len(batch), rows_per_minibatch):
                minibatch = batch.select(mb_rows)
                mask = minibatch.response_mask
                counts = {
                    "num_tokens": float(mask.sum()),
                    "num_sequences": float((mask.sum(-1) > 0).sum()),
                }
                self.optimizer.zero_grad(set_to_none=True)
                mb_loss = 0.0
                # The loss is normalized by the mini-batch's counts, so how its rows are split
                # into micro-batches changes the gradient only by float summation order: rows
                # of similar length go together and trim_padding cuts more. A loss that picks
                # its tokens per call (registered with micro_batch_statistic) keeps rollout order.
                if self.algorithm.micro_batches_in_order:
                    micro_rows = batches.row_chunks(len(minibatch), tc.micro_batch_size)
                else:
                    micro_rows = batches.length_sorted_chunks(mask, tc.micro_batch_size)
                for rows in micro_rows:
                    micro = batches.trim_padding(minibatch.select(rows))
                    keep = micro.response_mask.shape[1]
                    tokens = micro.input_ids.shape[1]
                    with memory.micro_batch_fits(self.config, self.step, len(micro), tokens):
                        logprobs, entropy = forward.response_logprobs(
                            self.model,
                            micro.input_ids,
                            micro.attention_mask,
                            micro.input_ids[:, -keep:],
                            with_entropy=True,
                            entropy_grad=self.algorithm.needs_entropy_grad,
                            chunk_size=tc.logprob_chunk_size,
                            fused=tc.fused_head,
                        )
                        loss, metrics = self.algorithm.loss(micro, logprobs, entropy, counts)
                        loss.backward()
                    mb_loss += float(loss.detach())
                    # Rows a target drew from another distribution (its `foreign_rows`) are
                    # left out of the policy's own entropy estimate.
                    foreign = self.algorithm.foreign_rows(micro.extras)
                    entropy_sums = step.measure_entropy(
                        logprobs, micro.response_mask, foreign, entropy
                    )
                    tally.add_micro_batch(metrics, float(micro.response_mask.sum()), entropy_sums)
                parameters = self.model.parameters()
                grad_norm = float(torch.nn.utils.clip_grad_norm_(parameters, tc.grad_clip))
                # A NaN/inf would poison the weights and Adam's moments: skip the step.
                finite = math.isfinite(mb_loss) and math.isfinite(grad_norm)
                tally.add_step(mb_loss, grad_norm, skipped=not finite)
                if not finite:
                    continue
                with memory.optimizer_fits(self.config, self.step, self.model):
                    self.optimizer.step()
                self.scheduler.step()
                self.weights_version += 1
        return tally.metrics(), tally.entropy_sums
