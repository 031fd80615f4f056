"""dcrl's algorithms (AEPO, DCPO, ICR, compositions of targets, yours) inside TRL's
`GRPOTrainer` (TRL 1.16; `pip install 'dcrl[trl]'`); which ones run is decided by what they do
(`trl_refusal`).

    from trl import GRPOConfig
    from dcrl.targets.dcpo import DCPOConfig
    from dcrl.integrations.trl import DCRLGRPOTrainer

    trainer = DCRLGRPOTrainer(model, reward_funcs, args=GRPOConfig(...), train_dataset=dataset,
                              algorithm=DCPOConfig(target_entropy=0.5))
    trainer.train()

Where dcrl enters TRL's step (docs/papers.md §9.3):

1. TRL samples each process's completions and scores them; `_calculate_rewards` gathers the
   rewards of all processes. dcrl starts after that gather, so every group statistic (the GRPO
   baseline, AEPO's positives, DCPO's fraction correct, ICR's shortest correct response) sees whole
   groups, whichever process sampled them.
2. `_generate_and_score_completions` gathers the token ids too and hands the global batch to the
   algorithm's own `prepare` (`dcrl.algorithms`), the call dcrl's trainer makes on one process.
   Every process runs it on identical inputs, so all take the same decisions (T, α, which rows AEPO
   replaces); the forward passes it asks for (`_logprob_pass`) and AEPO's tempered generations
   (`_tempered_rollout`) are split over the processes and gathered. Each process keeps its rows,
   with (B, T) token advantages.
3. TRL's `_compute_loss` runs unchanged on them: its `loss_type`, `epsilon*`, `beta` and entropy
   options apply; the PPO fields of the dcrl config (clip_*, dual_clip, loss_agg_mode) do not.
4. After the last update on a generation batch, the entropy of those updates, summed over tokens
   and all-reduced over processes (sum, count), updates the entropy controller; the next
   generation decides from it, as in dcrl's trainer. The controller is saved in every TRL
   checkpoint (`dcrl_algorithm_state.json`) and restored on resume.

Temperatures are relative to `GRPOConfig.temperature` τ (1 by default, as in the papers): AEPO
samples its extra groups at τ·T, and DCPO's ratio is ρ = π^{τT}/π^τ. Cost: like dcrl's trainer,
`prepare` scores the batch once more without grad (DCPO twice), where TRL alone might not.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections import defaultdict
from collections.abc import Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch

from dcrl._atomic import write_text_atomic
from dcrl.algorithms import (
    Algorithm,
    AlgorithmConfig,
    StepContext,
    TrainBatch,
    get_algorithm_class,
    make_algorithm,
)
from dcrl.core.advantages import group_ids
from dcrl.core.logprobs import ENTROPY_SUMS_SIZE, logprobs_and_entropy
from dcrl.errors import UserError, one_line
from dcrl.rollout.base import RolloutBatch
from dcrl.train import step as step_protocol

try:
    from accelerate.utils import gather_object, pad_across_processes
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
    from trl import GRPOTrainer
    from trl.data_utils import is_conversational
    from trl.trainer.utils import pad
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError(
        f"dcrl.integrations.trl needs TRL 1.16 ({error}); install it with pip install 'dcrl[trl]'"
    ) from error

# Which algorithms run here is decided by what they do, not by name (`trl_refusal`): TRL
# computes the PPO-clip loss itself, so an algorithm runs when its policy loss is PPO-clip and
# none of its targets adds a loss term; targets that shape rewards, set advantages or replace rows
# (every preset of GRPO plus targets, and `composed`) run through dcrl's own `prepare`.
TRL_POLICY_LOSS = "ppo_clip"
STATE_FILE = "dcrl_algorithm_state.json"  # the algorithm's state_dict, in each TRL checkpoint


class DCRLGRPOTrainer(GRPOTrainer):
    """TRL's GRPOTrainer with the advantages, entropy control and metrics of a dcrl algorithm.

    Args:
        *args, **kwargs: those of `trl.GRPOTrainer` (model, reward_funcs, args, train_dataset, ...).
        algorithm: a dcrl algorithm config (`AEPOConfig(...)`, `DCPOConfig(...)`,
            `ICRConfig(...)`, dcrl's `GRPOConfig()`, `ComposedConfig(targets=[...])`) or a name
            for its defaults; any registered algorithm whose policy loss is PPO-clip and whose
            targets add no loss term (`trl_refusal` says why another is refused).
    """

    def __init__(self, *args: Any, algorithm: AlgorithmConfig | str, **kwargs: Any) -> None:
        self.algorithm: Algorithm = make_algorithm(_algorithm_config(algorithm))
        super().__init__(*args, **kwargs)
        _check_trainer_settings(self)
        self._gathered_rewards: torch.Tensor | None = None  # (N, F) of the last reward call
        self._local_widths = (0, 0)  # TRL's (prompt, completion) widths of this process's batch
        self._captured: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        # entropy_sums (Σ NLL, tokens, the on-policy rows', Σ entropy): one generation's updates.
        self._entropy_window = torch.zeros(ENTROPY_SUMS_SIZE, dtype=torch.float64)

    # -- after TRL's gather: the dcrl algorithm's step recipe on the global batch --------------
    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        self._gathered_rewards = super()._calculate_rewards(
            inputs, prompts, completions, completion_ids_list
        )
        return self._gathered_rewards

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        output = super()._generate_and_score_completions(inputs)
        if not self.model.training:
            return output  # evaluation keeps TRL's GRPO advantages
        self._local_widths = (output["prompt_ids"].shape[1], output["completion_ids"].shape[1])
        pad_id = self._tokenizer.pad_token_id
        batch = self._rollout_batch(
            *(
                self.accelerator.gather(
                    pad_across_processes(output[key], dim=1, pad_index=value, pad_first=left)
                )
                for key, value, left in (
                    ("prompt_ids", pad_id, True),
                    ("prompt_mask", 0, True),
                    ("completion_ids", pad_id, False),
                    ("completion_mask", 0, False),
                )
            )
        )
        ctx = StepContext(
            step=self.state.global_step + 1,
            rollout=partial(self._tempered_rollout, inputs, batch),
            logprob_pass=self._logprob_pass,
            # TRL leaves out old log-probs when its update is on-policy (it then uses the
            # detached training log-probs): prepare's no-grad T = 1 pass is skipped too.
            on_policy="old_per_token_logps" not in output,
        )
        train_batch, metrics = step_protocol.prepare(self.algorithm, batch, self._scores(), ctx)
        self._log_metrics(metrics)
        return self._local_inputs(output, train_batch)

    def _scores(self) -> torch.Tensor:
        """(N,) weighted sum of the gathered rewards, as TRL sums them before normalizing."""
        rewards_per_func = self._gathered_rewards  # (N, F)
        if torch.isnan(rewards_per_func).all(dim=1).any():
            raise UserError(
                "reward_funcs: every reward function returned None for some completion, but dcrl's "
                "algorithms need a score for each; return 0.0 for completions you cannot grade"
            )
        weights = self.reward_weights.to(rewards_per_func.device)
        return (rewards_per_func * weights).nansum(dim=1)

    def _rollout_batch(
        self,
        prompt_ids: torch.Tensor,
        prompt_mask: torch.Tensor,
        completion_ids: torch.Tensor,
        completion_mask: torch.Tensor,
        group_index: torch.Tensor | None = None,
    ) -> RolloutBatch:
        """TRL's padded tensors as dcrl's RolloutBatch (contiguous groups of num_generations).

        The texts are left empty: `prepare` reads tensors only.
        """
        rows = len(prompt_ids)
        if group_index is None:
            group_index = group_ids(rows // self.num_generations, self.num_generations)
        lengths = completion_mask.sum(-1)
        last_token = completion_ids.gather(1, (lengths - 1).clamp(min=0)[:, None])[:, 0]
        eos = torch.tensor(self.eos_token_ids, device=completion_ids.device)
        return RolloutBatch(
            prompt_ids=prompt_ids,
            prompt_mask=prompt_mask,
            response_ids=completion_ids,
            response_mask=completion_mask,
            response_lengths=lengths,
            truncated=(lengths == 0) | ~torch.isin(last_token, eos),
            group_index=group_index.to(completion_ids.device),
            temperature=torch.full((rows,), float(self.temperature)),
            top_p=torch.full((rows,), float(self.top_p)),
            prompt_texts=[""] * rows,
            response_texts=[""] * rows,
            pad_token_id=self._tokenizer.pad_token_id,
        )

    def _local_rows(self, num_rows: int) -> slice:
        """This process's rows of a global batch: TRL gathers equal shares in process order."""
        assert num_rows % self.accelerator.num_processes == 0
        per_process = num_rows // self.accelerator.num_processes
        start = self.accelerator.process_index * per_process
        return slice(start, start + per_process)

    def _local_view(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, response_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """This process's rows of a global (N, Lp + Lr) batch as TRL's (prompt_ids, prompt_mask,
        completion_ids, completion_mask), cut to TRL's own widths (or wider where AEPO swapped in
        longer rows), so TRL's forward sees exactly the tensors it would have made."""
        rows = self._local_rows(len(input_ids))
        response_width = response_mask.shape[1]
        prompt_end = input_ids.shape[1] - response_width
        prompt_mask = attention_mask[rows, :prompt_end]
        completion_mask = response_mask[rows]
        keep_prompt = max(self._local_widths[0], int(prompt_mask.sum(-1).max()))
        keep_response = max(self._local_widths[1], int(completion_mask.sum(-1).max()))
        return (
            input_ids[rows, prompt_end - keep_prompt : prompt_end],
            prompt_mask[:, prompt_end - keep_prompt :],
            input_ids[rows, prompt_end : prompt_end + keep_response],
            completion_mask[:, :keep_response],
        )

    def _local_inputs(self, output: dict[str, Any], train_batch: TrainBatch) -> dict[str, Any]:
        """TRL's inputs of this process from dcrl's global TrainBatch."""
        rows = self._local_rows(len(train_batch))
        prompt_ids, prompt_mask, completion_ids, completion_mask = self._local_view(
            train_batch.input_ids, train_batch.attention_mask, train_batch.response_mask
        )
        width = completion_ids.shape[1]
        output.update(
            prompt_ids=prompt_ids,
            prompt_mask=prompt_mask,
            completion_ids=completion_ids,
            completion_mask=completion_mask,
            advantages=train_batch.advantages[rows, :width],  # (B, T): TRL takes token advantages
            num_items_in_batch=self.accelerator.gather(completion_mask.sum()).sum(),
        )
        if "old_per_token_logps" in output:  # TRL needs them (stale or vLLM-sampled rows)
            output["old_per_token_logps"] = train_batch.old_logprobs[rows, :width]
        for key, value in train_batch.extras.items():  # AEPO's is_reinforce, ICR's icr_selected
            output[key] = value[rows] if value.dim() == 1 else value[rows, :width]
        return output

    # -- what `prepare` may ask for (StepContext) -----------------------------------------------
    @torch.no_grad()
    def _logprob_pass(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        response_mask: torch.Tensor,
        temperature: float = 1.0,
        with_entropy: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """StepContext.score on the global batch: each process scores its rows, then all gather.

        T = 1 goes through TRL's own log-prob pass (its fused head, fixed at τ), so the old
        log-probs equal those TRL trains with; T ≠ 1 through the logits at τ·T.
        Returns (N, Lr) log-probs and (N, Lr) entropy (or None).
        """
        prompt_ids, prompt_mask, completion_ids, completion_mask = self._local_view(
            input_ids, attention_mask, response_mask
        )
        ids = torch.cat([prompt_ids, completion_ids], dim=1)
        mask = torch.cat([prompt_mask, completion_mask], dim=1)
        width = completion_ids.shape[1]
        if temperature == 1.0:
            logprobs, entropy, _ = self._get_per_token_logps_and_entropies(
                self.model,
                ids,
                mask,
                width,
                batch_size=self.args.per_device_train_batch_size,
                compute_entropy=with_entropy,
            )
        else:
            logprobs, entropy = self._tempered_logprobs(
                ids, mask, width, self.temperature * temperature, with_entropy
            )

        def gathered(values: torch.Tensor) -> torch.Tensor:  # (B, width) -> (N, Lr)
            values = (values.float() * completion_mask).to(response_mask.device)
            padded = torch.nn.functional.pad(values, (0, response_mask.shape[1] - width))
            return self.accelerator.gather(padded)

        return gathered(logprobs), (gathered(entropy) if with_entropy else None)

    def _tempered_logprobs(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        width: int,
        temperature: float,
        with_entropy: bool,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Log-probs (and entropy) of the last `width` tokens under softmax(logits / temperature),
        from the model's logits (TRL's fused head is fixed at τ). (B, width) each."""
        logprobs, entropies = [], []
        step = self.args.per_device_train_batch_size
        for start in range(0, len(input_ids), step):
            rows = slice(start, start + step)
            with self.accelerator.autocast():
                logits = self.model(
                    input_ids=input_ids[rows],
                    attention_mask=attention_mask[rows],
                    logits_to_keep=width + 1,
                    use_cache=False,
                ).logits[:, :-1]  # (b, width, V): position j − 1 predicts token j
            part, entropy = logprobs_and_entropy(
                logits, input_ids[rows, -width:], temperature, with_entropy=with_entropy
            )
            logprobs.append(part)
            entropies.append(entropy)
        return torch.cat(logprobs), (torch.cat(entropies) if with_entropy else None)

    def _tempered_rollout(
        self,
        inputs: list[dict[str, Any]],
        batch: RolloutBatch,
        prompt_indices: Sequence[int],
        n: int,
        temperature: float,
    ) -> tuple[RolloutBatch, torch.Tensor]:
        """StepContext.rollout (AEPO): n samples at τ·T for the given groups of the global batch.

        The rows are shared out evenly over the processes (the last ones repeat the final row to
        keep the shares equal, and the repeats are dropped), then gathered. Returns the tempered
        RolloutBatch, its group ids numbering `prompt_indices` 0, 1, ..., and its (M,) scores.
        """
        rows = [int(p) * self.num_generations for p in prompt_indices for _ in range(n)]
        share = math.ceil(len(rows) / self.accelerator.num_processes)
        first = self.accelerator.process_index * share
        mine = [rows[min(i, len(rows) - 1)] for i in range(first, first + share)]
        all_inputs = gather_object(list(inputs))  # the dataset rows, for the reward functions
        prompt_ids = [batch.prompt_ids[i][batch.prompt_mask[i].bool()].tolist() for i in mine]
        with self._sampling_temperature(self.temperature * temperature):
            completion_ids, _ = self._generate_single_turn(prompt_ids, None, {}, n)
        my_inputs = [all_inputs[i] for i in mine]
        prompts = [example["prompt"] for example in my_inputs]
        completions: list[Any] = self.processing_class.batch_decode(
            completion_ids, skip_special_tokens=True
        )
        if is_conversational({"prompt": prompts[0]}):
            completions = [[{"role": "assistant", "content": text}] for text in completions]
        with self._reward_logs_discarded():
            self._calculate_rewards(my_inputs, prompts, completions, completion_ids)
            scores = self._scores()[: len(rows)]
        completion_ids = gather_object([list(ids) for ids in completion_ids])[: len(rows)]
        completion_tensors = [torch.tensor(ids, dtype=torch.long) for ids in completion_ids]
        index = torch.tensor(rows, device=batch.prompt_ids.device)
        device = batch.response_ids.device
        tempered = self._rollout_batch(
            batch.prompt_ids[index],
            batch.prompt_mask[index],
            pad(completion_tensors, self._tokenizer.pad_token_id, "right").to(device),
            pad([torch.ones_like(t) for t in completion_tensors], 0, "right").to(device),
            torch.arange(len(prompt_indices)).repeat_interleave(n),
        )
        return tempered, scores

    @contextlib.contextmanager
    def _sampling_temperature(self, temperature: float) -> Iterator[None]:
        """Generate at `temperature` inside the block (transformers' generate path)."""
        saved = self.generation_config.temperature, self.generation_kwargs.get("temperature")
        self.generation_config.temperature = temperature
        self.generation_kwargs["temperature"] = temperature
        try:
            yield
        finally:
            self.generation_config.temperature, self.generation_kwargs["temperature"] = saved

    @contextlib.contextmanager
    def _reward_logs_discarded(self) -> Iterator[None]:
        """What reward functions log for AEPO's tempered samples is dropped: the completions
        table and the reward metrics describe the on-policy samples only."""
        saved = self._pending_extra_logs, self._pending_metrics
        self._pending_extra_logs, self._pending_metrics = defaultdict(list), defaultdict(list)
        try:
            yield
        finally:
            self._pending_extra_logs, self._pending_metrics = saved

    # -- the update: entropy of TRL's training forward, fed to the controller -------------------
    def _get_per_token_logps_and_entropies(self, *args: Any, **kwargs: Any):
        result = super()._get_per_token_logps_and_entropies(*args, **kwargs)
        if self._captured is not None:  # inside _compute_loss: the training forward's numbers
            self._captured.append((result[0].detach(), result[1].detach()))
        return result

    def _compute_loss(self, model: torch.nn.Module, inputs: dict[str, Any]) -> torch.Tensor:
        self._captured = []
        try:
            loss = super()._compute_loss(model, inputs)
            ((logprobs, entropy),) = self._captured
        finally:
            self._captured = None
        if self.model.training:
            # Rows a target swapped in (AEPO's tempered ones) are not the policy's own samples.
            window = step_protocol.measure_entropy(
                logprobs, inputs["completion_mask"], self.algorithm.foreign_rows(inputs), entropy
            )
            self._entropy_window = self._entropy_window.to(window.device) + window
            if (self._step + 1) % (self.args.steps_per_generation * self.num_iterations) == 0:
                self._update_controller()  # the generation batch is used up
        return loss

    def _update_controller(self) -> None:
        """All-reduce the window's (sums, counts), log the entropies, update the controller."""
        totals = self.accelerator.reduce(self._entropy_window, reduction="sum")
        self._log_metrics(step_protocol.after_update(self.algorithm, totals))
        self._entropy_window = torch.zeros_like(self._entropy_window)

    def _log_metrics(self, metrics: dict[str, float]) -> None:
        """dcrl's metric names into TRL's logs (averaged over each logging window)."""
        for name, value in metrics.items():
            self._metrics["train"][name].append(float(value))

    # -- checkpoints ----------------------------------------------------------------------------
    def _save_checkpoint(self, model: torch.nn.Module, trial: Any) -> None:
        super()._save_checkpoint(model, trial)
        if self.args.should_save:
            folder = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
            path = Path(self._get_output_dir(trial=trial)) / folder / STATE_FILE
            write_text_atomic(path, json.dumps(self.algorithm.state_dict()))

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        super()._load_optimizer_and_scheduler(checkpoint)
        path = Path(checkpoint) / STATE_FILE if checkpoint is not None else None
        if path is not None and path.is_file():
            self.algorithm.load_state_dict(json.loads(path.read_text()))


def trl_refusal(algorithm: Algorithm) -> str | None:
    """Why TRL cannot run `algorithm` as it means it (None when it can): decided by what the
    algorithm does — its policy loss and its targets' loss terms — not by its name."""
    config = algorithm.config
    if config.policy_loss != TRL_POLICY_LOSS:
        return (
            f"its policy loss is {config.policy_loss!r}, and TRL computes its own "
            f"{TRL_POLICY_LOSS} loss here; train it with `dcrl train`"
        )
    loss_terms = ", ".join(t.name for t in step_protocol.loss_term_targets(algorithm))
    if loss_terms:
        return (
            f"its target {loss_terms} adds a loss term, which TRL's loss does not compute here; "
            "train it with `dcrl train`, or drop it"
        )
    return None


def _algorithm_config(algorithm: AlgorithmConfig | str) -> AlgorithmConfig:
    """The validated config of `algorithm` (a config, or a name for its defaults)."""
    if isinstance(algorithm, str):
        try:
            algorithm = get_algorithm_class(algorithm).config_class()  # each names its own
        except (KeyError, ValueError) as error:
            raise UserError(f"algorithm={algorithm!r}: {one_line(error)}") from None
    if not isinstance(algorithm, AlgorithmConfig):
        raise UserError(
            f"algorithm={algorithm!r}: pass a dcrl algorithm config or a registered name, e.g. "
            "DCPOConfig(target_entropy=0.5) or 'dcpo'"
        )
    try:
        algorithm.validate()
    except ValueError as error:
        raise UserError(f"algorithm ({algorithm.name}): {error}") from None
    refusal = trl_refusal(make_algorithm(algorithm))
    if refusal:
        raise UserError(f"algorithm {algorithm.name} is not available in TRL: {refusal}")
    return algorithm


def _check_trainer_settings(trainer: DCRLGRPOTrainer) -> None:
    """Refuse TRL settings the adapter does not carry through, naming the fix."""
    refused = {
        "scale_rewards": (
            trainer.scale_rewards != "group",
            "dcrl computes the group advantages itself; keep scale_rewards='group' and set the "
            "algorithm's advantage_std ('none' is Dr.GRPO)",
        ),
        "multi_objective_aggregation": (
            trainer.multi_objective_aggregation != "sum_then_normalize",
            "dcrl needs one summed reward per completion; keep 'sum_then_normalize'",
        ),
        "mask_truncated_completions": (
            trainer.mask_truncated_completions,
            "dcrl's algorithms train on every completion; set it to False",
        ),
        "tools / environment_factory / images": (
            bool(trainer.tools) or trainer.environment_factories is not None or trainer._is_vlm,
            "not supported by DCRLGRPOTrainer yet; use plain text prompts",
        ),
    }
    # By what a target does, not its name: a row-replacing target (stage "replace", e.g. aepo,
    # alone or in a composition) samples extra groups and swaps them in.
    replacing = ", ".join(t.name for t in step_protocol.row_replacing_targets(trainer.algorithm))
    if replacing:
        refused["use_vllm / rollout_func / use_transformers_continuous_batching"] = (
            trainer.use_vllm
            or trainer.rollout_func is not None
            or trainer.use_transformers_continuous_batching,
            f"its row-replacing target ({replacing}) samples extra groups with transformers' "
            "generate; turn these off",
        )
        refused["beta"] = (
            trainer.beta != 0.0,
            f"its row-replacing target ({replacing}) swaps rows in after the reference "
            "log-probs are taken; set beta=0.0 (the papers train without a KL term)",
        )
    # TRL clips with its own epsilons; an algorithm whose clip range differs (clip_higher) would
    # silently train with TRL's instead.
    # (CISPO reads epsilon_high as a cap on the ratio, not as a clip range.)
    config = trainer.algorithm.config
    refused["epsilon / epsilon_high"] = (
        trainer.loss_type != "cispo"
        and (config.clip_low, config.clip_high) != (trainer.epsilon_low, trainer.epsilon_high),
        f"TRL clips the ratio with its own epsilons ({trainer.epsilon_low}, "
        f"{trainer.epsilon_high}) and "
        f"the algorithm asks for ({config.clip_low}, {config.clip_high}): set "
        f"GRPOConfig(epsilon={config.clip_low}, epsilon_high={config.clip_high})",
    )
    for setting, (is_refused, fix) in refused.items():
        if is_refused:
            raise UserError(f"GRPOConfig {setting} with algorithm {trainer.algorithm.name}: {fix}")
