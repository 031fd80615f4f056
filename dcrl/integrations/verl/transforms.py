"""The data transformations of dcrl's verl recipe, as plain functions on `verl.DataProto` batches.

`DcrlRayPPOTrainer` (trainer.py) calls these at verl's hooks, so they run (and are tested)
without Ray or GPUs. They hold no algorithm of their own: `rollout_batch` hands a verl batch to
dcrl's step protocol (`dcrl.train.step.prepare`, the targets' `apply`), `estimator_advantages`
runs that protocol for verl's own trainer (the `dcrl_icr` estimator), and AEPO's splice calls the
aepo target's functions and dcrl.core's; these functions only move tensors between DataProto
keys and dcrl's (N,) / (N, L) conventions.

Key conventions of a verl PPO batch (verl 0.9, `RayPPOTrainer.fit`):
    batch["prompts"]: (N, Lp) left-padded prompts; batch["attention_mask"]: (N, Lp + L);
    batch["responses"], batch["response_mask"]: (N, L) response tokens and the 0/1 valid mask;
    batch["rm_scores"] / batch["token_level_rewards"]: (N, L) rewards, the score on the last
        valid token; their row sum is the sequence score;
    batch["old_log_probs"]: (N, L) log π_old at T = 1 (the old-log-prob pass);
    non_tensor_batch["uid"]: (N,) object array, one id per prompt (the GRPO group).
dcrl adds batch["dcrl_advantages"] (the step's advantages) and batch["dcrl_is_reinforce"] (AEPO),
and, with AEPO, non_tensor_batch["dcrl_rollout_row"] from the rollout to the splice (each row's
position in the rollout, which verl's balance_batch reorders).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from dcrl.core.advantages import grpo_advantages
from dcrl.core.control import ControlDecision
from dcrl.core.logprobs import entropy_signals as core_entropy_signals
from dcrl.core.logprobs import entropy_sums
from dcrl.core.regularizers import aepo_mix_batch
from dcrl.rollout.base import RolloutBatch
from dcrl.step_data import StepContext
from dcrl.targets.aepo import (
    AEPOSettings,
    center_reinforce,
    num_tempered_prompts,
    reinforce_rows,
    scale_reinforce_rows,
)

TEMPERED_AGENT = "dcrl_tempered_agent"  # the agent loop that samples AEPO's tempered rows
TEMPERATURE_KEY = "dcrl_temperature"  # its per-row sampling temperature (non-tensor column)
ADVANTAGES_KEY = "dcrl_advantages"  # the step protocol's advantages, set before verl's own
AEPO_ADVANTAGES_KEY = ADVANTAGES_KEY
IS_REINFORCE_KEY = "dcrl_is_reinforce"  # AEPO's spliced rows, (N,) bool (a V1 field too)
# Each row's position in the training rollout (prompt-major: prompt p's k-th response at p·n + k,
# verl's interleaved repeat), set when the rollout returns; verl's balance_batch reorders rows.
ROLLOUT_ROW_KEY = "dcrl_rollout_row"


def group_index(uids: np.ndarray) -> torch.Tensor:
    """verl's per-prompt `uid` strings as dcrl group ids: (N,) object array -> (N,) LongTensor.

    Ids are numbered in sorted order of the uids; every dcrl.core group function depends only
    on which rows share an id, not on the numbering.
    """
    _, dense = np.unique(np.asarray(uids), return_inverse=True)
    return torch.from_numpy(dense.reshape(-1).astype(np.int64))


def sequence_scores(token_level_rewards: torch.Tensor) -> torch.Tensor:
    """(N, L) token-level rewards -> (N,) sequence scores (the row sum, as verl's GRPO takes)."""
    return token_level_rewards.sum(dim=-1)


def response_lengths(response_mask: torch.Tensor) -> torch.Tensor:
    """(N, L) 0/1 response mask -> (N,) number of valid response tokens."""
    return response_mask.sum(dim=-1)


# ------------------------------------------------------------------- the step protocol's view


def rollout_batch(
    batch: Any, pad_token_id: int, uids: np.ndarray | None = None, temperature: float = 1.0
) -> RolloutBatch:
    """A verl batch as dcrl's RolloutBatch, for `dcrl.train.step.prepare`.

    verl's layout is dcrl's: prompts left-padded (`prompts`, (N, Lp)), responses right-padded
    (`responses`, `response_mask`, (N, Lr)), `attention_mask` over both. Group ids come from the
    `uid` column; rows of a group need not be adjacent (verl's balance_batch reorders them). The
    texts are left empty: the targets read tensors only.

    Args:
        batch: a DataProto with prompts, responses, response_mask, attention_mask and uid.
        pad_token_id: the tokenizer's pad id.
        uids: (N,) prompt ids to group by, instead of the batch's uid column.
        temperature: the rows' sampling temperature (verl's rollout.temperature).
    """
    prompts, responses = batch.batch["prompts"], batch.batch["responses"]
    response_mask = batch.batch["response_mask"].long()
    lengths = response_mask.sum(-1)
    rows = len(prompts)
    return RolloutBatch(
        prompt_ids=prompts,
        prompt_mask=batch.batch["attention_mask"][:, : prompts.shape[1]].long(),
        response_ids=responses,
        response_mask=response_mask,
        response_lengths=lengths,
        truncated=lengths >= responses.shape[1],
        group_index=group_index(batch.non_tensor_batch["uid"] if uids is None else uids),
        temperature=torch.full((rows,), float(temperature)),
        top_p=torch.ones(rows),
        prompt_texts=[""] * rows,
        response_texts=[""] * rows,
        pad_token_id=pad_token_id,
    )


def check_same_rows(
    batch: RolloutBatch, input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> None:
    """A scoring request names the batch's own rows (verl scores its batch, not other rows)."""
    own_ids, own_attention = batch.sequences()
    valid = own_attention.bool()
    if not (
        input_ids.shape == own_ids.shape
        and torch.equal(attention_mask.bool(), valid)
        and torch.equal(input_ids[valid], own_ids[valid])
    ):
        raise ValueError(
            "error: a target asked verl to score rows that are not the batch's own; in verl, "
            "only a row-replacing target (aepo) changes rows, before the old-log-prob pass"
        )


def estimator_advantages(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    uids: np.ndarray,
    algorithm: Any,
) -> tuple[torch.Tensor, dict[str, float]]:
    """An algorithm's advantages as a verl advantage estimator (verl's own trainer: `dcrl_icr`
    registers ICR's), through the step protocol on the batch's rewards, lengths and groups.

    Only an algorithm whose targets all work on those alone runs here (stage "bonus": a
    per-response bonus or a reward shaping, no scoring pass, no new rows, no loss term); any other
    is refused, naming the target and what it needs (dcrl's recipe trainer runs it).

    Args:
        token_level_rewards: (N, L) verl rewards (score on the last valid token).
        response_mask: (N, L) 0/1 valid-token mask.
        uids: (N,) prompt ids (verl's `uid` column).
        algorithm: a dcrl Algorithm (e.g. the `icr` preset with its settings).

    Returns:
        (N, L) token-level advantages (0 on padding), and metrics.
    """
    from dcrl.train import step as step_protocol

    needs_more = [
        f"{target.name} (stage {target.stage!r})"
        for target in step_protocol.targets_of(algorithm)
        if target.stage != "bonus"
    ] + [f"{t.name} (a loss term)" for t in step_protocol.loss_term_targets(algorithm)]
    if needs_more:
        raise ValueError(
            f"error: {', '.join(needs_more)} needs more than the rewards, lengths and groups a "
            "verl advantage estimator sees; run it with dcrl's recipe trainer (python -m "
            "dcrl.integrations.verl.main)"
        )
    rows, width = response_mask.shape
    mask = response_mask.long()
    lengths = mask.sum(-1)
    batch = RolloutBatch(  # bonus targets read rewards, lengths and groups only: no tokens
        prompt_ids=torch.zeros(rows, 0, dtype=torch.long),
        prompt_mask=torch.zeros(rows, 0, dtype=torch.long),
        response_ids=torch.zeros(rows, width, dtype=torch.long),
        response_mask=mask,
        response_lengths=lengths,
        truncated=lengths >= width,
        group_index=group_index(uids),
        temperature=torch.ones(rows),
        top_p=torch.ones(rows),
        prompt_texts=[""] * rows,
        response_texts=[""] * rows,
        pad_token_id=0,
    )

    def no_pass(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a bonus-stage target asks for no scoring pass or extra samples")

    # on_policy: the protocol asks for no old log-probs (verl computes its own).
    ctx = StepContext(step=0, rollout=no_pass, logprob_pass=no_pass, on_policy=True)
    scores = sequence_scores(token_level_rewards).float()
    train_batch, metrics = step_protocol.prepare(algorithm, batch, scores, ctx)
    return train_batch.advantages, metrics


# ----------------------------------------------------------------------------------------- AEPO


def aepo_num_tempered_prompts(
    num_prompts: int, decision: ControlDecision, config: AEPOSettings
) -> int:
    """How many of the step's prompts AEPO re-samples at T: the first quarter (code), scaled up
    by a controller weight w > 1 (dcrl's pi with weight_max), as `dcrl.targets.aepo` does."""
    return num_tempered_prompts(num_prompts, decision, config)


# What the tempered-row splice reads of a row-replacing target's settings (`num_tempered_prompts`,
# `reinforce_rows`, `aepo_splice`); a target that carries them, marks its rows (`foreign_rows`)
# and decides with a controller (`decide`) runs in verl, whatever its name.
TEMPERED_ROW_SETTINGS = (
    "tempered_fraction",
    "positive_threshold",
    "include_all_correct_groups",
    "max_reinforce",
    "reinforce_scale_max",
    "center_reinforce",
    "placement",
)


def missing_splice_capabilities(target: Any) -> list[str]:
    """What a row-replacing target lacks for verl's splice of tempered rows ([] if nothing): its
    rows' extras column (`foreign_rows`), a controller decision (`decide()`: T, weight), and
    each of TEMPERED_ROW_SETTINGS in its config."""
    missing = []
    if not isinstance(getattr(target, "foreign_rows", None), str):
        missing.append("foreign_rows (the extras column marking its rows)")
    if not callable(getattr(target, "decide", None)):
        missing.append("decide() (a controller's temperature)")
    settings = [name for name in TEMPERED_ROW_SETTINGS if not hasattr(target.config, name)]
    if settings:
        missing.append(f"the settings {', '.join(settings)}")
    if getattr(target.config, "measure_replaced", False):
        missing.append(
            "measure_replaced=false (the splice does not measure the on-policy rows it replaces)"
        )
    prompts = getattr(target.config, "tempered_prompts", "first")
    if prompts != "first":
        missing.append(
            f"tempered_prompts={prompts} (the splice re-samples the first prompts: set "
            "tempered_prompts=first)"
        )
    return missing


def aepo_tempered_requests(
    gen_batch: Any, num_prompts: int, group_size: int, temperature: float
) -> Any:
    """The generation requests of AEPO's tempered groups: the first `num_prompts` prompts of an
    interleaved rollout request (each prompt's `group_size` copies are consecutive), routed to
    dcrl's tempered agent loop with the sampling temperature in a per-row column.

    Args:
        gen_batch: the on-policy generation request (a DataProto, `group_size` rows per prompt).
        num_prompts: how many prompts to re-sample.
        group_size: responses per prompt (verl's rollout.n).
        temperature: T.

    Returns:
        A new DataProto of num_prompts × group_size rows.
    """
    tempered = gen_batch.slice(0, num_prompts * group_size)
    rows = len(tempered)
    tempered.non_tensor_batch["agent_name"] = np.array([TEMPERED_AGENT] * rows, dtype=object)
    tempered.non_tensor_batch[TEMPERATURE_KEY] = np.full(rows, float(temperature))
    return tempered


def generate_for_workers(generate: Any, requests: Any, num_workers: int) -> Any:
    """Run verl's rollout on `requests` and return one output row per request row, carrying the
    request's own columns.

    verl's agent-loop manager splits a request batch into `num_workers` equal chunks (DataProto
    .chunk asserts that they are equal), and when rewards stream inside the agent loop its
    post-processing keeps none of the request's non-tensor columns (uid, data_source, ...).
    Here the request is padded to a multiple of `num_workers` with copies of its first rows, as
    verl pads its own validation batches, the padding is dropped from the output, and every
    request column the output lacks is copied in, row for row (the manager keeps row order).

    Args:
        generate: verl's `generate_sequences` (DataProto -> DataProto).
        requests: the generation requests, R rows.
        num_workers: the manager's agent-loop workers (rollout.agent.num_workers).

    Returns:
        The R output rows.
    """
    from verl.protocol import pad_dataproto_to_divisor, unpad_dataproto

    padded, pad_size = pad_dataproto_to_divisor(requests, max(1, int(num_workers)))
    output = unpad_dataproto(generate(padded), pad_size)
    if len(output) != len(requests):
        raise RuntimeError(
            f"verl's rollout returned {len(output)} rows for {len(requests)} requests; dcrl's "
            "tempered rollout needs one response per request (a single-turn agent loop)"
        )
    for key, column in requests.non_tensor_batch.items():
        if key not in output.non_tensor_batch:
            output.non_tensor_batch[key] = column.copy()
    return output


def mark_rollout_rows(output: Any) -> None:
    """Prepare a training rollout for AEPO's splice, in place, before verl's fit() sees it.

    Adds `ROLLOUT_ROW_KEY`, each row's position in the rollout, which verl's balance_batch
    carries along when it reorders the rows, so that the splice can choose rows by prompt and
    not by batch position. Turns the reward-extra columns (meta_info["reward_extra_keys"]) into
    object arrays, so that the splice can write a spliced row's values into the very arrays
    fit() has already taken (a fixed-width string column would truncate longer values).
    """
    output.non_tensor_batch[ROLLOUT_ROW_KEY] = np.arange(len(output), dtype=np.int64)
    reward_extras_as_objects(output)


def reward_extras_as_objects(data: Any) -> None:
    """The reward-extra columns of `data` (meta_info["reward_extra_keys"]) as object arrays."""
    for key in data.meta_info.get("reward_extra_keys", None) or []:
        column = data.non_tensor_batch.get(key, None)
        if column is not None and column.dtype != object:
            data.non_tensor_batch[key] = column.astype(object)


def aepo_splice(
    batch: Any,
    tempered: Any,
    decision: ControlDecision,
    config: AEPOSettings,
    advantage_std: str | None = None,
    order: np.ndarray | None = None,
) -> tuple[Any, dict[str, float]]:
    """AEPO's batch for the update: m correct tempered rows swapped into the on-policy batch.

    The same recipe as `dcrl.targets.aepo.AEPO.prepare` (docs/papers.md §2.2): GRPO advantages of
    the on-policy batch; positives = tempered samples with group advantage > threshold; m =
    `aepo_num_reinforce(...)`; the first m positives replace rows of the batch (front or spread)
    with advantage +1 on every valid token (scaled by `reinforce_scale_max`, and the correct
    on-policy rows centred by `center_reinforce`, when those options are set). Which rows: those
    at the front (or spread) positions of the batch in rollout order (`order`), the first
    prompts' rows as in dcrl's own trainer, wherever verl's balance_batch has moved them. Every tensor key the two batches share is
    replaced row for row, and so is every shared non-tensor column; keys only in `batch` keep
    the on-policy row (verl recomputes old/ref log-probs after this). Run it before the
    old-log-prob pass: the mixed batch is scored at T = 1.

    Args:
        batch: the on-policy DataProto (rm_scores or token_level_rewards, response_mask, uid).
        tempered: the tempered DataProto from `aepo_tempered_requests` after generation and
            scoring, padded to the batch's prompt and response widths.
        decision: this step's controller decision.
        config: dcrl's AEPO settings (the aepo target's, or the aepo algorithm's).
        advantage_std: GRPO's group std (the base estimator's); None: `config.advantage_std`.
        order: (N,) each row's position in the rollout (`ROLLOUT_ROW_KEY`, distinct integers);
            None: the batch is in rollout order.

    Returns:
        A new DataProto (N rows, in `batch`'s order) holding `dcrl_advantages` (N, L) and
        `dcrl_is_reinforce` (N,), and metrics.
    """
    from verl import DataProto

    std = config.advantage_std if advantage_std is None else advantage_std  # type: ignore[attr-defined]
    reward_key = "token_level_rewards" if "token_level_rewards" in batch.batch else "rm_scores"
    scores = sequence_scores(batch.batch[reward_key]).float()  # (N,)
    advantages = grpo_advantages(scores, group_index(batch.non_tensor_batch["uid"]), std=std)
    tempered_scores = sequence_scores(tempered.batch[reward_key]).float()  # (M,)
    positive_index, num_reinforce = reinforce_rows(
        tempered_scores,
        group_index(tempered.non_tensor_batch["uid"]),
        decision,
        config,
        std,
    )
    num_reinforce = min(num_reinforce, len(batch))
    # rollout_order[j]: the batch row that is j-th in the rollout.
    rollout_order = _rollout_order(order, len(batch))

    # .keys(): iterating a TensorDict itself walks its rows, not its keys.
    shared = [key for key in batch.batch.keys() if key in tempered.batch]  # noqa: SIM118
    on_policy = {key: batch.batch[key] for key in shared}
    on_policy["advantages"] = advantages
    mixed = aepo_mix_batch(
        {key: value[rollout_order] for key, value in on_policy.items()},
        {key: tempered.batch[key] for key in shared},
        positive_index[:num_reinforce],
        placement=config.placement,
    )
    # The target's own options on the mixed rows (rollout order), as `AEPOTarget.apply` does.
    extra_metrics = {}
    scale = scale_reinforce_rows(mixed, decision, config)
    if scale is not None:
        extra_metrics["aepo/row_scale"] = scale
    if config.center_reinforce:
        extra_metrics["aepo/center_weight"] = center_reinforce(mixed, scores[rollout_order])
    # Back to the batch's order.
    mixed = {key: _scatter_rows(value, rollout_order) for key, value in mixed.items()}
    is_reinforce = mixed.pop("is_reinforce")  # (N,) bool
    tensors = dict(batch.batch.items())
    tensors.update(mixed)
    tensors[ADVANTAGES_KEY] = tensors.pop("advantages")
    tensors[IS_REINFORCE_KEY] = is_reinforce

    # Non-tensor columns (uid, data source, ground truth...) follow their rows: the j-th positive
    # goes to the j-th replaced row in rollout order.
    mixed_rows = rollout_order[is_reinforce[rollout_order]].numpy()
    sources = positive_index[:num_reinforce].numpy()
    non_tensors = {key: value.copy() for key, value in batch.non_tensor_batch.items()}
    for key, value in non_tensors.items():
        if key in tempered.non_tensor_batch and len(mixed_rows):
            incoming = tempered.non_tensor_batch[key][sources]
            if value.dtype != object and not np.can_cast(incoming.dtype, value.dtype, "safe"):
                value = non_tensors[key] = value.astype(object)  # e.g. longer fixed-width strings
            value[mixed_rows] = incoming

    metrics = {
        "control/num_reinforce": float(num_reinforce),
        "aepo/num_positives": float(len(positive_index)),
        "aepo/tempered_accuracy": float(tempered_scores.mean()) if len(tempered) else 0.0,
        "aepo/tempered_length": (
            float(response_lengths(tempered.batch["response_mask"]).float().mean())
            if len(tempered)
            else 0.0
        ),
        **extra_metrics,
    }
    spliced = DataProto.from_dict(
        tensors=tensors, non_tensors=non_tensors, meta_info=dict(batch.meta_info)
    )
    return spliced, metrics


def _rollout_order(order: np.ndarray | None, num_rows: int) -> torch.Tensor:
    """(N,) LongTensor: the batch row at each rollout position, from each row's position."""
    if order is None:
        return torch.arange(num_rows)
    positions = np.asarray(order).astype(np.int64).reshape(-1)
    if len(positions) != num_rows or len(np.unique(positions)) != num_rows:
        raise ValueError(
            f"error: {ROLLOUT_ROW_KEY} must give each of the batch's {num_rows} rows a distinct "
            f"rollout position, got {len(positions)} values, {len(np.unique(positions))} distinct"
        )
    return torch.from_numpy(np.argsort(positions, kind="stable"))


def _scatter_rows(value: torch.Tensor, rollout_order: torch.Tensor) -> torch.Tensor:
    """Rows given in rollout order, put back at their batch rows."""
    out = torch.empty_like(value)
    out[rollout_order] = value
    return out


def write_spliced_rows(batch: Any, spliced: Any) -> None:
    """Make `batch` hold the rows of `spliced` (from `aepo_splice`), in place, and recompute the
    token counts verl's fit() took before the splice.

    verl's fit() reads the rewards before the old-log-prob hook (its reward tensor is the
    `rm_scores` tensor itself, its reward extras are the batch's own column arrays) and writes
    them back afterwards as `token_level_scores` / `token_level_rewards` and the reward columns,
    and it logs `meta_info["global_token_num"]`. Rebinding the batch's tensors would leave the
    spliced rows with the scores of the rows they replaced there; writing the spliced rows into
    the same tensors and arrays does not. Keys new in `spliced` are added; a column whose dtype
    cannot hold the new values (not an object array) is replaced instead (reward-extra columns
    were made object arrays by `mark_rollout_rows`).
    """
    rows = spliced.batch[IS_REINFORCE_KEY].bool()
    for key, value in spliced.batch.items():
        target = batch.batch.get(key, None)
        if target is not None and target.shape == value.shape and target.dtype == value.dtype:
            target[rows] = value[rows]
        else:
            batch.batch[key] = value
    index = rows.nonzero().flatten().numpy()
    for key, value in spliced.non_tensor_batch.items():
        target = batch.non_tensor_batch.get(key, None)
        if (
            target is not None
            and target.shape == value.shape
            and (target.dtype == object or np.can_cast(value.dtype, target.dtype, "safe"))
        ):
            target[index] = value[index]
        else:
            batch.non_tensor_batch[key] = value
    batch.meta_info["global_token_num"] = batch.batch["attention_mask"].sum(-1).tolist()


def neutralize_rollout_logprobs(batch: Any, old_log_probs: torch.Tensor) -> int:
    """Set the rollout log-probs of AEPO's spliced rows to their old log-probs, in place.

    verl keeps the sampler's log-probs (`rollout_log_probs`) for its rollout correction, which
    reweights or rejects a row by π_old/π_rollout. A spliced row was sampled at AEPO's T, and
    AEPO trains on it as a sample of its target π^T with no importance correction (docs/papers.md
    §2.2), so its ratio is made exactly 1. Returns how many rows changed (0 without the key or
    without spliced rows).

    Args:
        batch: the spliced DataProto (`dcrl_is_reinforce` marks the spliced rows).
        old_log_probs: (N, L) log π_old at T = 1 of the batch's rows.
    """
    if "rollout_log_probs" not in batch.batch or IS_REINFORCE_KEY not in batch.batch:
        return 0
    rows = batch.batch[IS_REINFORCE_KEY].bool()
    rollout = batch.batch["rollout_log_probs"].clone()
    rollout[rows] = old_log_probs[rows].to(rollout.dtype)
    batch.batch["rollout_log_probs"] = rollout
    return int(rows.sum())


# -------------------------------------------------------------------------------------- entropy


def entropy_signals(batch: Any, full_entropy: torch.Tensor | None = None) -> dict[str, float]:
    """The entropy signals dcrl's controllers read, from the old-log-prob pass of a verl batch:
    `dcrl.core.logprobs.entropy_sums` / `entropy_signals`, the functions dcrl's trainer and the
    TRL adapter measure them with ("entropy/sampled_nll", "entropy/on_policy_nll" without AEPO's
    tempered rows, "entropy/full" and "entropy/on_policy_full" when `full_entropy` is given). Here they come from π_old, the
    policy at the start of the step (equal to the first mini-batch's).

    Args:
        batch: a DataProto with old_log_probs and response_mask (and dcrl_is_reinforce for AEPO).
        full_entropy: (N, L) per-token entropy of the old-log-prob pass, or None.
    """
    signals = core_entropy_signals(
        entropy_sums(
            batch.batch["old_log_probs"].float(),
            batch.batch["response_mask"],
            batch.batch.get(IS_REINFORCE_KEY, None),
            full_entropy,
        )
    )
    if full_entropy is None:
        signals.pop("entropy/full")
        signals.pop("entropy/on_policy_full")
    return signals


# ------------------------------------------------------------- verl's V1 trainer (TransferQueue)

# What the recipe reads of a V1 batch from TransferQueue (one row per key, each a jagged nested
# tensor of its own length: prompts, responses and the per-response-token fields).
V1_SPLICE_FIELDS = ["prompts", "responses", "response_mask", "rm_scores", "uid"]
V1_STEP_FIELDS = [*V1_SPLICE_FIELDS, "old_log_probs", "entropy"]


def _rows(value: Any) -> list[torch.Tensor]:
    """A jagged nested tensor (or a padded one) as its rows."""
    return list(value.unbind()) if getattr(value, "is_nested", False) else list(value)


def _right_padded(rows: list[torch.Tensor], width: int, pad: float) -> torch.Tensor:
    out = torch.full((len(rows), width), pad, dtype=rows[0].dtype if rows else torch.float32)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out


def v1_step_view(fields: Any, pad_token_id: int) -> Any:
    """A V1 batch (verl's `PPOTrainer`, rows in TransferQueue) as the padded DataProto the
    recipe's step reads, in the rows' order: prompts left-padded (N, Lp), responses and every
    per-response-token field right-padded to the longest response (N, L), attention_mask over
    both, `uid` as the non-tensor group column. `old_log_probs` / `entropy` (as `entropys`) are
    there when `fields` has them (after verl's old-log-prob pass).

    Args:
        fields: the TensorDict `tq.kv_batch_get` returns for V1_STEP_FIELDS (or for
            V1_SPLICE_FIELDS, before the old-log-prob pass).
        pad_token_id: the tokenizer's pad id.
    """
    from verl import DataProto

    prompts = _rows(fields["prompts"])
    responses = _rows(fields["responses"])
    prompt_width = max(len(row) for row in prompts)
    width = max(len(row) for row in responses)
    prompt_ids = torch.full((len(prompts), prompt_width), pad_token_id, dtype=torch.long)
    prompt_mask = torch.zeros((len(prompts), prompt_width), dtype=torch.long)
    for i, row in enumerate(prompts):
        if len(row):
            prompt_ids[i, -len(row) :] = row
            prompt_mask[i, -len(row) :] = 1
    response_mask = _right_padded(_rows(fields["response_mask"]), width, 0).long()
    tensors = {
        "prompts": prompt_ids,
        "responses": _right_padded(responses, width, pad_token_id).long(),
        "response_mask": response_mask,
        "attention_mask": torch.cat([prompt_mask, response_mask], dim=-1),
        "rm_scores": _right_padded(_rows(fields["rm_scores"]), width, 0.0).float(),
    }
    names = set(fields.keys())
    for name, key in (("old_log_probs", "old_log_probs"), ("entropy", "entropys")):
        if name in names:
            tensors[key] = _right_padded(_rows(fields[name]), width, 0.0).float()
    uids = fields["uid"]
    uids = uids.tolist() if hasattr(uids, "tolist") else list(uids)
    return DataProto.from_dict(
        tensors=tensors, non_tensors={"uid": np.array([str(u) for u in uids], dtype=object)}
    )


def v1_key_parts(key: str) -> tuple[str, int, int]:
    """A V1 row key, `{uid}_{session}_{index}` (verl's AgentLoopWorkerTQ: the prompt's uid, the
    response's place among its prompt's rollout.n sessions, the agent loop's output index), as
    (uid, session, index)."""
    uid, session, index = key.rsplit("_", 2)
    return uid, int(session), int(index)


def v1_rollout_positions(keys: list[str], prompt_order: list[str]) -> np.ndarray:
    """(N,) each V1 row's position in the step's rollout, for `aepo_splice`'s `order`: rows in
    the order of their prompt (`prompt_order`, the uids as submitted to the rollout), then of
    their session and output index, as the legacy trainer's rollout lays them out (prompt p's
    k-th response at p·n + k). verl's replay buffer hands the rows over in no such order.

    Args:
        keys: the rows' TransferQueue keys.
        prompt_order: every prompt uid of the rows, in submission order.
    """
    place = {uid: i for i, uid in enumerate(prompt_order)}
    ranks = []
    for key in keys:
        uid, session, index = v1_key_parts(key)
        if uid not in place:
            raise ValueError(
                f"error: V1 row {key!r} belongs to prompt {uid!r}, which was not submitted to "
                "the rollout this step; dcrl cannot tell which rows are the first prompts'"
            )
        ranks.append((place[uid], session, index))
    order = sorted(range(len(keys)), key=ranks.__getitem__)
    positions = np.empty(len(keys), dtype=np.int64)
    positions[order] = np.arange(len(keys))
    return positions


def v1_tempered_request(prompts: Any, temperature: float) -> Any:
    """AEPO's tempered request on the V1 trainer: the given prompt rows of a rollout request (a
    TensorDict as verl's dataloader gives it, one row per prompt; verl's agent loop samples
    rollout.n sessions of each), routed to dcrl's tempered agent loop with the temperature, each
    under its own uid (`v1_tempered_uid`), so that its rows do not share TransferQueue keys with
    the training rollout's. The prompts' other columns (raw prompt, data source, index, ...) are
    kept."""
    from verl.utils import tensordict_utils as tu

    request = prompts.clone()
    uids = [v1_tempered_uid(str(uid)) for uid in tu.get(prompts, "uid")]
    tu.assign_non_tensor_stack(request, "uid", uids)
    tu.assign_non_tensor_data(request, "agent_name", TEMPERED_AGENT)
    tu.assign_non_tensor_data(request, TEMPERATURE_KEY, float(temperature))
    return request


def v1_tempered_uid(uid: str) -> str:
    """The uid a prompt's tempered groups go under in TransferQueue (no "_": verl reads a row
    key's uid as the part before its first "_")."""
    return f"{uid}-dcrl-tempered"


def v1_response_rows(padded: torch.Tensor, lengths: list[int]) -> torch.Tensor:
    """(N, L) right-padded per-response-token values as the jagged nested tensor V1 stores, row i
    cut to its response length lengths[i] (`verl.workers.utils.padding.response_to_nested`)."""
    return torch.nested.as_nested_tensor(
        [padded[i, :length] for i, length in enumerate(lengths)], layout=torch.jagged
    )
