"""The training loop: rollout → rewards → algorithm.prepare → one PPO epoch over mini-batches with
micro-batch gradient accumulation → AdamW → controller update → metrics → checkpoint.

docs/design.md "One training step" is this file's outline. Everything an algorithm decides lives
in `dcrl.algorithms`; everything here is the same for all of them.
"""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import yaml

from dcrl._atomic import write_text_atomic
from dcrl.algorithms import Algorithm, make_algorithm
from dcrl.config import ConfigError, to_dict
from dcrl.core.advantages import dense_group_index
from dcrl.core.mismatch import logprob_mismatch, truncated_importance_weights
from dcrl.core.stats import length_accuracy_correlation, length_summary
from dcrl.errors import UserError, one_line
from dcrl.step_data import StepContext, TrainBatch
from dcrl.tasks import format_prompt
from dcrl.train import checkpoint as ckpt
from dcrl.train import memory
from dcrl.train import step as step_protocol
from dcrl.train.config import RunConfig, load_run_config
from dcrl.train.data import ProblemSampler
from dcrl.train.disk import (
    export_policy_atomically,
    human_bytes,
    is_write_failure,
    model_bytes,
    write_failed,
)
from dcrl.train.forward import score_responses
from dcrl.train.resume_check import apply_checkpoint, read_checkpoint, run_identity
from dcrl.train.run_lock import RunLock, releases_lock_after, releases_lock_on_error
from dcrl.train.sinks import ConsoleSink, JsonlSink, MetricSink, TensorBoardSink, WandbSink


class CheckpointError(UserError):
    """A checkpoint could not be written; the previous one is intact."""


class TrainingDiverged(UserError):
    """`train.max_bad_steps` steps in a row had a NaN/inf loss or gradient."""


def trim_padding(batch: TrainBatch) -> TrainBatch:
    """Drop prompt columns that are padding in every row (left) and response columns that are
    padding in every row (right), so micro-batches of short sequences cost less."""
    width = batch.response_mask.shape[1]
    prompt_width = batch.input_ids.shape[1] - width
    prompt_used = batch.attention_mask[:, :prompt_width].any(0).nonzero()
    start = int(prompt_used[0]) if len(prompt_used) else prompt_width - 1
    response_used = batch.response_mask.any(0).nonzero()
    keep = int(response_used[-1]) + 1 if len(response_used) else 1
    cut = width - keep
    end = batch.input_ids.shape[1] - cut

    def right(t: torch.Tensor) -> torch.Tensor:
        return t[:, :keep] if t.dim() >= 2 and t.shape[1] == width else t

    return TrainBatch(
        input_ids=batch.input_ids[:, start:end],
        attention_mask=batch.attention_mask[:, start:end],
        response_mask=batch.response_mask[:, :keep],
        old_logprobs=None if batch.old_logprobs is None else batch.old_logprobs[:, :keep],
        advantages=batch.advantages[:, :keep],
        extras={k: right(v) for k, v in batch.extras.items()},
    )


def _chunks(n: int, size: int) -> list[slice]:
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def length_sorted_chunks(response_mask: torch.Tensor, size: int) -> list[torch.Tensor]:
    """Row indices of micro-batches of at most `size` rows, rows ordered by response length
    (longest first, ties in row order), so that `trim_padding` cuts each micro-batch to its own
    longest response instead of the batch's: rows of similar length share a micro-batch.

    Args:
        response_mask: (N, Lr) 1 on response tokens.
        size: rows per micro-batch.

    Returns:
        ceil(N / size) LongTensors (on the mask's device) that together hold every row once.
    """
    lengths = response_mask.sum(-1)  # (N,)
    order = torch.sort(lengths, descending=True, stable=True).indices  # (N,)
    return [order[rows] for rows in _chunks(len(order), size)]


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
        self.problems, template, self.reward_fn = _load_data(config)
        # One writer per run directory, taken before anything in it is written (run_lock.py).
        self.run_lock = RunLock(self.run_dir).acquire()
        if not resume and ckpt.latest_checkpoint(self.run_dir) is not None:
            raise FileExistsError(
                f"run directory {self.run_dir} already holds checkpoints: continue it with "
                f"`dcrl train --resume {self.run_dir}`, or set log.output_dir to a new directory"
            )
        config_text = yaml.safe_dump(to_dict(config), sort_keys=False)
        if not resume:  # a resume writes it once the checkpoint is checked (resume_check.py)
            _prepare_run_dir(self.run_dir, config_text)

        mc = config.model
        self.model, self.tokenizer = load_policy(
            mc.name,
            dtype=mc.dtype,
            lora=to_dict(mc.lora) if mc.lora is not None else None,
            gradient_checkpointing=mc.gradient_checkpointing,
            device=_resolve_device(mc.device),
            strict=mc.strict_load,
        )
        if backend is None:
            backend = build_rollout_backend(config.rollout, self.model, self.tokenizer)
            self.engine_version = 0
        else:
            self.engine_version = -1  # a given engine holds other weights: sync before rollout
        self.backend = backend

        def format_problem(problem: Any) -> str:
            return format_prompt(problem.prompt, self.tokenizer, template=template)

        self.format_prompt = format_problem
        try:
            prompts = [format_problem(p) for p in self.problems]
        except ValueError as error:
            raise ConfigError(f"data.template={template!r}: {one_line(error)}") from None
        check_prompt_lengths(
            prompts,
            self.problems,
            self.tokenizer,
            getattr(self.model.config, "max_position_embeddings", None),
        )
        self.sampler = ProblemSampler(
            self.problems, config.train.prompts_per_step, config.train.seed
        )
        self.algorithm: Algorithm = make_algorithm(config.algorithm)
        if config.train.rollout_is_cap and step_protocol.replaces_rows(self.algorithm):
            raise ConfigError(
                f"train.rollout_is_cap={config.train.rollout_is_cap}: the importance weights "
                "line up with the rollout's rows, which "
                f"{step_protocol.row_replacing_targets(self.algorithm)[0].name} replaces; set "
                "train.rollout_is_cap=0"
            )

        tc = config.train
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            params, lr=tc.lr, weight_decay=tc.weight_decay, betas=tuple(tc.betas)
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            lambda s: min(1.0, (s + 1) / tc.warmup_steps) if tc.warmup_steps else 1.0,
        )
        self.step = 0
        self.bad_steps = 0  # consecutive steps with a skipped (non-finite) update
        # The rollout engine samples from its own copy of the weights when it has one (vllm):
        # `weights_version` counts the changes of the policy's weights (optimizer steps, a
        # resume), `engine_version` (set with the backend) the version the engine last received.
        self.weights_version = 0
        if resume:
            contents = read_checkpoint(
                self.run_dir, config, self.model, self.algorithm, self.sampler
            )
            apply_checkpoint(
                contents, self.model, self.optimizer, self.scheduler, self.algorithm, self.sampler
            )
            self.step = int(contents.state["step"])
            self.bad_steps = int(contents.state.get("bad_steps", 0))
            self.weights_version += 1  # the engine was built from the run's starting weights
            _prepare_run_dir(self.run_dir, config_text)
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
        lc, tc = self.config.log, self.config.train
        sinks: list[MetricSink] = [
            # Keeps the lines up to the checkpoint: none for a fresh run, whose directory may
            # hold the metrics of an earlier attempt that died before its first checkpoint.
            JsonlSink(self.run_dir / "metrics.jsonl", resume_step=self.step)
        ]
        if lc.tensorboard:
            sinks.append(TensorBoardSink(self.run_dir / "tb", purge_step=self.step + 1))
        if lc.wandb:
            sinks.append(
                WandbSink(lc.wandb_project, self.run_dir.name, to_dict(self.config), self.run_dir)
            )
        if lc.console:
            sinks.append(ConsoleSink(tc.steps, self.step, self.config.algorithm.name))
        try:
            while self.step < tc.steps:
                # The parts of a step that hold a batch name their own setting (train_step);
                # any other failed allocation of the step is reported here.
                with self._must_fit(
                    "",
                    f"{tc.prompts_per_step} prompts × {self.config.rollout.n} responses",
                    lambda _: (
                        f"lower train.prompts_per_step (now {tc.prompts_per_step}) or "
                        f"rollout.n (now {self.config.rollout.n})"
                    ),
                ):
                    metrics = self.train_step()
                self.bad_steps = self.bad_steps + 1 if metrics["train/skipped_updates"] else 0
                metrics["train/bad_steps"] = float(self.bad_steps)
                self.history.append(metrics)
                for sink in sinks:
                    sink.log(self.step, metrics)
                if self.bad_steps >= tc.max_bad_steps:
                    raise TrainingDiverged(self._diverged_message())
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

    def _resume_hint(self) -> str:
        """Which checkpoint survives a failure, and how to continue from it."""
        latest = ckpt.latest_checkpoint(self.run_dir)
        if latest is None:
            return "the run has no checkpoint yet: fix the cause and start it again"
        return (
            f"its last checkpoint {latest} is intact: fix the cause, then continue with "
            f"`dcrl train --resume {self.run_dir}`"
        )

    def _diverged_message(self) -> str:
        return (
            f"training stopped at step {self.step}: the loss or gradient was NaN/inf in "
            f"{self.bad_steps} steps in a row (train.max_bad_steps={self.config.train.max_bad_steps}"
            "), so their updates were skipped and never reached the weights; "
            f"{self._resume_hint()}. Lower train.lr or train.grad_clip, or check the reward and "
            "the data"
        )

    def _must_fit(self, part: str, held: str, fix: Callable[[BaseException], str]) -> Any:
        """memory.must_fit with the message 'out of memory in step N, in PART (HELD; what
        failed): FIX; which checkpoint survives'."""

        def explain(error: BaseException) -> str:
            where = f"step {self.step}, in {part}" if part else f"step {self.step}"
            return (
                f"out of memory in {where} ({held}; "
                f"{memory.failed_allocation(error)}): {fix(error)}; {self._resume_hint()}"
            )

        return memory.must_fit(explain)

    def _lower(self, setting: str, now: int, used: int) -> str:
        has_checkpoint = ckpt.latest_checkpoint(self.run_dir) is not None
        return memory.lower(setting, now, used, self.run_dir, has_checkpoint)

    def _lower_batch(self, error: BaseException, rows_per_batch: int, used: int) -> str:
        """The fix for a forward(/backward) that held `used` rows, `rows_per_batch` per
        train.micro_batch_size: the log-prob kernel's block when it failed there and is set by
        hand, else the micro-batch, else (one sequence) the sequence length or the model."""
        tc = self.config.train
        if tc.logprob_chunk_size is not None and memory.raised_in(
            error, "dcrl/core/fused_head.py", "dcrl/core/logprobs.py"
        ):
            return (
                self._lower(
                    "train.logprob_chunk_size", tc.logprob_chunk_size, tc.logprob_chunk_size
                )
                + " or null (auto: blocks of 16 MiB on a CPU, 256 MiB on a GPU)"
            )
        rows = min(tc.micro_batch_size, -(-used // rows_per_batch))
        if rows > 1:
            return self._lower("train.micro_batch_size", tc.micro_batch_size, rows)
        fix = (
            "a micro-batch of one sequence does not fit: lower rollout.max_new_tokens (now "
            f"{self.config.rollout.max_new_tokens})"
        )
        if not self.config.model.gradient_checkpointing:
            fix += ", or set model.gradient_checkpointing=true"
        return fix + ", or train a smaller model (or LoRA: model.lora)"

    def _generate(self, prompts: list[str], n: int, temperature: float, salt: int) -> Any:
        """The backend's rollout of `prompts`; a failed allocation names rollout.batch_size (an
        engine that schedules its own batches: rollout.n and rollout.max_new_tokens)."""
        rc = self.config.rollout
        batches = getattr(self.backend, "takes_batch_size", True)
        at_once = min(rc.batch_size, len(prompts)) if batches else len(prompts)
        held = (
            f"{at_once} prompt{'s' * (at_once != 1)} × {n} responses of up to {rc.max_new_tokens} "
            f"tokens{' at a time' * batches}, rollout.backend={rc.backend}"
        )

        def fix(_: BaseException) -> str:
            if not batches:
                return (
                    f"lower rollout.n (now {rc.n}) or rollout.max_new_tokens (now "
                    f"{rc.max_new_tokens}), or give the {rc.backend} engine more memory"
                )
            if at_once == 1:
                return (
                    f"one prompt's {n} responses do not fit: lower rollout.max_new_tokens (now "
                    f"{rc.max_new_tokens}) or rollout.n (now {rc.n})"
                )
            return self._lower("rollout.batch_size", rc.batch_size, at_once) + " prompts per call"

        with self._must_fit("the rollout", held, fix):
            return self.backend.generate(
                prompts, n, temperature, rc.top_p, rc.max_new_tokens, seed=self.rollout_seed(salt)
            )

    def save(self) -> Path:
        """Write a checkpoint of the current step (atomically: see dcrl.train.checkpoint).

        Raises:
            CheckpointError: the write failed (disk full, permissions); the previous checkpoint
                is intact.
        """
        state = {
            "sampler": self.sampler.state_dict(),
            "algorithm": self.algorithm.state_dict(),
            "bad_steps": self.bad_steps,
            "run": run_identity(self.config),
        }
        try:
            return ckpt.save_checkpoint(
                self.run_dir,
                self.step,
                self.model,
                self.optimizer,
                self.scheduler,
                state,
                keep=self.config.train.keep_checkpoints,
            )
        except Exception as error:  # a full disk is not always an OSError (dcrl.train.disk)
            if memory.is_out_of_memory(error):
                raise CheckpointError(
                    f"out of memory while writing the checkpoint of step {self.step} "
                    f"({memory.failed_allocation(error)}): writing holds about the model's size "
                    f"({human_bytes(model_bytes(self.model))}) once more; give the run more "
                    f"memory; {self._resume_hint()}"
                ) from None
            needed = model_bytes(self.model) + 2 * sum(
                p.numel() * p.element_size() for p in self.model.parameters() if p.requires_grad
            )
            if not (isinstance(error, OSError) or is_write_failure(error, self.run_dir, needed)):
                raise
            raise CheckpointError(
                one_line(
                    write_failed(
                        error,
                        f"the checkpoint of step {self.step}",
                        self.run_dir / ckpt.CHECKPOINTS / f"step_{self.step:06d}",
                        needed,
                        self._resume_hint(),
                    )
                )
            ) from None

    def export_policy(self, out_dir: Path) -> None:
        """Save the trained policy as a Hugging Face directory (`dcrl eval --model` reads it),
        atomically: never a folder without weights (dcrl.train.disk)."""
        export_policy_atomically(
            self.model,
            self.tokenizer,
            out_dir,
            f"{self._resume_hint()} (it exports the policy at the end)",
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
        scores = self.score(batch, problems)
        t_rollout = time.perf_counter()

        def extra_rollout(prompt_indices: Sequence[int], n: int, temperature: float):
            sub = self._generate([prompts[i] for i in prompt_indices], n, temperature, 1)
            return sub, self.score(sub, [problems[i] for i in prompt_indices])

        tc = self.config.train
        on_policy = (
            tc.reuse_on_policy_logprobs
            and tc.ppo_epochs == 1
            and tc.mini_batch_prompts == tc.prompts_per_step
        )
        ctx = StepContext(
            step=self.step, rollout=extra_rollout, score=self.old_logprobs, on_policy=on_policy
        )
        train_batch, algo_metrics = step_protocol.prepare(self.algorithm, batch, scores, ctx)
        algo_metrics.update(self.correct_mismatch(batch, train_batch))
        t_prepare = time.perf_counter()
        update_metrics = self.update(train_batch)
        t_update = time.perf_counter()
        self.algorithm.after_update(update_metrics)

        lengths = batch.response_lengths.float()
        correct = (scores > 0.5).float()
        corr = length_accuracy_correlation(lengths, correct, batch.group_index)
        length = length_summary(lengths, correct > 0)
        generated = float(lengths.sum())
        metrics = {
            "reward/accuracy": float(scores.mean()),
            "reward/pass_at_n": _pass_at_n(correct, batch.group_index),
            "length/mean": length["mean"],
            "length/p90": length["p90"],
            "length/max": length["max"],
            "length/truncated_frac": float(batch.truncated.float().mean()),
            "length/correct_mean": length["correct_mean"],
            "corr/length_acc_group": float(corr["group"]),
            "corr/length_acc_batch": float(corr["batch"]),
            **algo_metrics,
            **update_metrics,
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
        trainer_logprobs, _ = self.old_logprobs(*batch.sequences(), batch.response_mask)
        metrics = logprob_mismatch(batch.sampling_logprobs, trainer_logprobs, batch.response_mask)
        cap = self.config.train.rollout_is_cap
        if cap:
            # The rows line up with the rollout's (row-replacing targets are refused with a cap).
            weights = truncated_importance_weights(
                batch.sampling_logprobs, trainer_logprobs, batch.response_mask, cap
            )
            width = train_batch.advantages.shape[1]
            train_batch.advantages = train_batch.advantages * weights[:, :width].to(
                train_batch.advantages
            )
            metrics["rollout/is_weight_mean"] = float(weights[batch.response_mask.bool()].mean())
        return metrics

    def score(self, batch: Any, problems: Sequence[Any]) -> torch.Tensor:
        """Rewards of a rollout batch's responses: float (N,)."""
        from dcrl.rewards import score_batch

        answers = [problems[int(g)].answer for g in batch.group_index]
        metas = [problems[int(g)].meta for g in batch.group_index]
        values = score_batch(self.reward_fn, batch.response_texts, answers, metas)
        return torch.tensor(values, dtype=torch.float32)

    @torch.no_grad()
    def old_logprobs(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        response_mask: torch.Tensor,
        temperature: float = 1.0,
        with_entropy: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Log-probs (and entropy) of the responses (the last Lr columns of the sequences) under
        the current policy at temperature T, micro-batched, no grad: (N, Lr) each."""
        # The results stay on the device of the inputs (the rollout's CPU tensors); only each
        # chunk visits the model's device.
        width = response_mask.shape[1]
        # float32 for float32/bf16 weights, float64 for a float64 model (the tests' exact checks)
        dtype = torch.promote_types(next(self.model.parameters()).dtype, torch.float32)
        out = torch.zeros(response_mask.shape, dtype=dtype, device=response_mask.device)
        ent = torch.zeros_like(out) if with_entropy else None
        self.model.eval()
        # Each row is scored on its own (no statistic across rows), so grouping rows of similar
        # length changes no result beyond float rounding and pads less.
        for rows in length_sorted_chunks(response_mask, 2 * self.config.train.micro_batch_size):
            part = trim_padding(
                TrainBatch(
                    input_ids=input_ids[rows],
                    attention_mask=attention_mask[rows],
                    response_mask=response_mask[rows],
                    old_logprobs=out[rows],
                    advantages=out[rows],
                )
            )
            keep = part.response_mask.shape[1]
            with self._must_fit(
                "the log-prob pass",
                f"{len(rows)} sequences of {part.input_ids.shape[1]} tokens without gradients, "
                "2 × train.micro_batch_size at a time",
                lambda error, used=len(rows): self._lower_batch(error, 2, used),
            ):
                part_ids = part.input_ids.to(self.device)
                logprobs, entropy = score_responses(
                    self.model,
                    part_ids,
                    part.attention_mask.to(self.device),
                    part_ids[:, -keep:],
                    temperature=temperature,
                    with_entropy=with_entropy,
                    chunk_size=self.config.train.logprob_chunk_size,
                    fused=self.config.train.fused_head,
                )
            out[rows, :keep] = logprobs.to(out.device) * part.response_mask
            if ent is not None:
                ent[rows, :keep] = entropy.to(out.device) * part.response_mask
        assert out.shape[1] == width
        return out, ent

    def update(self, batch: TrainBatch) -> dict[str, float]:
        """One PPO epoch (or several) over mini-batches; gradient accumulation over micro-batches
        with the mini-batch's global token/sequence counts, so the loss does not depend on the
        micro-batch size."""
        tc = self.config.train
        self.model.train()
        num_minibatches = tc.prompts_per_step // tc.mini_batch_prompts
        rows_per_minibatch = math.ceil(len(batch) / num_minibatches)
        sums: dict[str, float] = {}
        tokens_seen = 0.0
        entropy_window = torch.zeros(5, dtype=torch.float64)  # step_protocol.measure_entropy
        grad_norms = []
        losses = []
        skipped = 0
        batch = batch.to(self.device)
        for _ in range(tc.ppo_epochs):
            for mb_rows in _chunks(len(batch), rows_per_minibatch):
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
                    micro_rows = _chunks(len(minibatch), tc.micro_batch_size)
                else:
                    micro_rows = length_sorted_chunks(mask, tc.micro_batch_size)
                for rows in micro_rows:
                    micro = trim_padding(minibatch.select(rows))
                    keep = micro.response_mask.shape[1]
                    with self._must_fit(
                        "the update's forward/backward",
                        f"a micro-batch of {len(micro)} sequences of {micro.input_ids.shape[1]} "
                        "tokens",
                        lambda error, used=len(micro): self._lower_batch(error, 1, used),
                    ):
                        logprobs, entropy = score_responses(
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
                    n_tok = float(micro.response_mask.sum())
                    tokens_seen += n_tok
                    # Rows a target drew from another distribution (its `foreign_rows`) are
                    # left out of the policy's own entropy estimate.
                    entropy_window += step_protocol.measure_entropy(
                        logprobs,
                        micro.response_mask,
                        self.algorithm.foreign_rows(micro.extras),
                        entropy,
                    ).cpu()
                    for name, value in metrics.items():
                        sums[name] = sums.get(name, 0.0) + float(value) * n_tok
                grad_norm = float(
                    torch.nn.utils.clip_grad_norm_(self.model.parameters(), tc.grad_clip)
                )
                grad_norms.append(grad_norm)
                losses.append(mb_loss)
                if not (math.isfinite(mb_loss) and math.isfinite(grad_norm)):
                    skipped += 1  # a NaN/inf would poison the weights and Adam's moments
                    continue
                with self._must_fit(
                    "the optimizer step",
                    f"AdamW keeps two moments per trainable weight, {self._adam_state_size()}",
                    lambda _: (
                        "the weights, their gradients and AdamW's state do not fit: train "
                        "fewer weights (model.lora) or a smaller model"
                    ),
                ):
                    self.optimizer.step()
                self.scheduler.step()
                self.weights_version += 1
        denom = max(tokens_seen, 1.0)
        out = {f"loss/{name}": value / denom for name, value in sums.items()}
        out.update(
            {
                "loss/policy": sum(losses) / len(losses),
                "loss/grad_norm": sum(grad_norms) / len(grad_norms),
                **step_protocol.entropy_signals(entropy_window),
                "train/optimizer_steps": float(len(losses) - skipped),
                "train/skipped_updates": float(skipped),
            }
        )
        return out

    def _adam_state_size(self) -> str:
        trainable = (p for p in self.model.parameters() if p.requires_grad)
        return human_bytes(2 * sum(p.numel() * p.element_size() for p in trainable))


def _resolve_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def _pass_at_n(correct: torch.Tensor, group_index: torch.Tensor) -> float:
    """Fraction of prompts with at least one correct response among their n."""
    dense, num_groups = dense_group_index(group_index, len(correct))
    any_correct = torch.zeros(num_groups).scatter_reduce(0, dense, correct, "amax")
    return float(any_correct.mean())


def _load_data(config: RunConfig) -> tuple[list[Any], str, Callable]:
    """Problems, the prompt template and the reward function of the data section, checked.

    Raises:
        UserError: a missing data.path, an unknown task option, or a reward function that
            cannot be found or called as the contract says.
    """
    from dcrl.rewards import check_reward_fn, get_reward_fn
    from dcrl.tasks import TASKS, get_task, load_problems

    dc = config.data
    if dc.task == "file":
        if dc.path is None:
            raise ValueError("data.task is 'file' but data.path is not set: give the JSONL/Parquet")
        try:
            problems = load_problems(dc.path, problem_key=dc.problem_key, answer_key=dc.answer_key)
        except FileNotFoundError as error:
            raise ConfigError(f"data.path: {one_line(error)}; check the path") from None
        reward = _user_reward(dc, get_reward_fn("math" if dc.reward == "auto" else dc.reward))
        template = "boxed" if dc.template == "auto" else dc.template
    else:
        if dc.task not in TASKS:
            raise ConfigError(f"data.task: unknown task {dc.task!r}; use one of {sorted(TASKS)}")
        options = inspect.signature(TASKS[dc.task]).parameters
        takes_any = any(o.kind is inspect.Parameter.VAR_KEYWORD for o in options.values())
        unknown = sorted(set(dc.task_options) - set(options))
        if unknown and not takes_any:
            raise ConfigError(
                f"unknown config key data.task_options.{unknown[0]}: the task {dc.task!r} takes "
                f"{', '.join(options)}"
            )
        try:
            task = get_task(dc.task, **dc.task_options)
        except (TypeError, ValueError) as error:
            raise ConfigError(f"data.task_options: {one_line(error)}") from None
        problems = task.problems("train", dc.train_size)
        reward = task.verify if dc.reward == "auto" else _user_reward(dc, get_reward_fn(dc.reward))
        template = task.prompt_template if dc.template == "auto" else dc.template
    if problems:
        check_reward_fn(reward, problems[0].meta)
    return problems, template, reward


def _user_reward(dc: Any, reward: Callable) -> Callable:
    """A user reward ('package.module:function') under data.reward_timeout_s (rewards/bounded.py)."""
    from dcrl.rewards.bounded import BoundedReward

    if ":" not in dc.reward:
        return reward
    return BoundedReward(reward, dc.reward_timeout_s, dc.reward_max_timeouts)


def _prepare_run_dir(run_dir: Path, config_text: str) -> None:
    """Create the run directory and write its config.yaml, or say why it cannot be written."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(run_dir / "config.yaml", config_text)
    except OSError as error:
        fix = "choose a writable directory for log.output_dir"
        if is_write_failure(error) and not isinstance(error, PermissionError):
            fix += (
                f", or free space there (config.yaml alone needs {len(config_text.encode())} "
                "bytes; the logs and checkpoints need more)"
            )
        raise UserError(
            f"log.output_dir={run_dir}: cannot write the run directory there ({one_line(error)})"
            f"; {fix}"
        ) from None


def check_prompt_lengths(
    prompts: Sequence[str], problems: Sequence[Any], tokenizer: Any, context: int | None
) -> None:
    """Raise a UserError naming the first problem whose prompt fills the model's context.

    Args:
        prompts: the formatted prompts, one per problem.
        problems: the problems (their ids name the offending row).
        tokenizer: the policy's tokenizer.
        context: the model's context length in tokens (max_position_embeddings); None skips.
    """
    if context is None or not prompts:
        return
    lengths = [len(ids) for ids in tokenizer(list(prompts), add_special_tokens=True)["input_ids"]]
    for row, (length, problem) in enumerate(zip(lengths, problems, strict=True)):
        if length >= context:
            raise UserError(
                f"problem {problem.id!r} (row {row + 1} of the training data) is a prompt of "
                f"{length} tokens, but the model's context holds {context}, with no room to "
                "answer: shorten or drop that problem (or use a model with a longer context)"
            )
