"""Register dcrl's pieces in verl's registries. Import it in every Ray worker through verl's hook:

    export VERL_USE_EXTERNAL_MODULES=dcrl.integrations.verl.register

`import verl` then imports this module in the driver and in each worker (verl/__init__.py), which
is where the policy loss and the agent loop run (a decorator run only in the driver script would
not reach them; docs/papers.md §9.2). On a multi-node cluster forward the variable with
`+ray_kwargs.ray_init.runtime_env.env_vars.VERL_USE_EXTERNAL_MODULES=...`.

Registered names:
    adv_estimator "dcrl_icr" (`algorithm.adv_estimator=dcrl_icr`): GRPO + ICR's shortest-correct
        bonus, dcrl.core's functions; settings under `+algorithm.dcrl.*` (ICRConfig fields).
    adv_estimator "dcrl_grpo": dcrl's GRPO (advantage_std unbiased / population / none; verl's
        algorithm.norm_adv_by_std_in_grpo=False is advantage_std none, see `dcrl_settings`).
    policy loss "dcrl_ppo_clip" (`actor_rollout_ref.actor.policy_loss.loss_mode=dcrl_ppo_clip`):
        dcrl's PPO clip / dual clip on whatever advantages the batch carries (DCPO's token mix,
        AEPO's +1 rows), aggregated with dcrl's `aggregate_loss` on verl's global batch counts.
    agent loop "dcrl_tempered_agent": single-turn sampling at a per-row temperature (AEPO's
        tempered rollouts); the recipe trainer routes rows to it.
    platform "cpu" (`VERL_PLATFORM=cpu`, set by dcrl's entry point for `trainer.device=cpu`):
        verl's workers on the CPU, FSDP on gloo (cpu_platform.py).
    rollout "dcrl_hf" (`actor_rollout_ref.rollout.name=dcrl_hf`): a transformers rollout server
        verl's agent loop samples from on the CPU (hf_rollout.py).

No math here: each function converts verl's arguments and calls dcrl.core.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from verl.experimental.agent_loop.agent_loop import register as register_agent_loop
from verl.experimental.agent_loop.single_turn_agent_loop import SingleTurnAgentLoop
from verl.trainer.ppo.core_algos import register_adv_est, register_policy_loss
from verl.workers.rollout import base as rollout_base
from verl.workers.rollout.replica import RolloutReplicaRegistry

from dcrl.config import build
from dcrl.core.advantages import broadcast_to_tokens, grpo_advantages
from dcrl.core.losses import aggregate_loss, ppo_clip_token_loss

# cpu_platform registers verl's "cpu" platform on import; verl resolves its platform on the
# first call that asks for it (none of the imports above does), once per process.
from dcrl.integrations.verl import cpu_platform  # noqa: F401
from dcrl.integrations.verl.transforms import (
    TEMPERATURE_KEY,
    TEMPERED_AGENT,
    estimator_advantages,
    group_index,
    sequence_scores,
)

# verl clamps log(π_θ/π_old) to ±20 in all its PPO losses; the ICR code does too.
LOG_RATIO_CLAMP = 20.0
NORM_ADV_KEY = "norm_adv_by_std_in_grpo"  # verl's GRPO std switch, mapped to advantage_std


def dcrl_settings(algorithm_config: Any, config_class: type) -> Any:
    """dcrl's algorithm settings from verl's `algorithm.dcrl` block (a Hydra DictConfig or dict),
    built and validated by dcrl's own config dataclass: every default stays in dcrl.

    verl's own `algorithm.norm_adv_by_std_in_grpo` is honoured: False is dcrl's
    `advantage_std="none"` (the same GRPO: group mean subtracted, no division); True (verl's
    default) is a std, dcrl's `unbiased` by default (verl's: torch.std, eps 1e-6) or the block's
    `population`. A block that says otherwise is refused, naming both keys."""
    block = None if algorithm_config is None else algorithm_config.get("dcrl", None)
    if isinstance(block, DictConfig):
        data = OmegaConf.to_container(block, resolve=True)
    else:
        data = dict(block or {})
    _grpo_std_from_verl(algorithm_config, data, config_class)
    settings = build(config_class, data, prefix="algorithm.dcrl")
    settings.validate()
    return settings


def _grpo_std_from_verl(algorithm_config: Any, data: dict[str, Any], config_class: type) -> None:
    """Map verl's `algorithm.norm_adv_by_std_in_grpo` onto dcrl's `advantage_std` in `data`."""
    if "advantage_std" not in {f.name for f in dataclasses.fields(config_class)}:
        return
    value = None if algorithm_config is None else algorithm_config.get(NORM_ADV_KEY, None)
    normalize = True if value is None else bool(value)
    chosen = data.get("advantage_std")
    if not normalize:
        if chosen is None:
            data["advantage_std"] = "none"
        elif chosen != "none":
            raise ValueError(
                f"error: algorithm.{NORM_ADV_KEY}=False (GRPO advantages not divided by the "
                f"group std) conflicts with algorithm.dcrl.advantage_std={chosen!r}; drop "
                "algorithm.dcrl.advantage_std (dcrl then uses 'none', the same GRPO), or set "
                f"algorithm.{NORM_ADV_KEY}=True"
            )
    elif chosen == "none":
        raise ValueError(
            f"error: algorithm.dcrl.advantage_std='none' conflicts with algorithm.{NORM_ADV_KEY}"
            f"=True (verl's default: divide by the group std); set algorithm.{NORM_ADV_KEY}=False "
            "instead (dcrl maps it to advantage_std='none') and drop algorithm.dcrl.advantage_std"
        )


@register_adv_est("dcrl_icr")
def compute_icr_advantage(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    index: np.ndarray,
    config: Any = None,
    **unused: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """verl advantage estimator: ICR (arXiv 2605.07316) on dcrl.core. (N, L) each, (advantages,
    returns) with returns = advantages as verl's GRPO returns them.

    A registry entry: verl looks estimators up by name, and this name stands for ICR's preset
    (`dcrl.targets.icr`) with its settings from `algorithm.dcrl`; the computation is the step
    protocol's, generic over bonus-stage targets (`transforms.estimator_advantages`)."""
    from dcrl.targets.icr import ICR, ICRConfig

    settings = dcrl_settings(config, ICRConfig)
    with torch.no_grad():
        advantages, _ = estimator_advantages(
            token_level_rewards, response_mask, index, ICR(settings)
        )
    return advantages, advantages


@register_adv_est("dcrl_grpo")
def compute_dcrl_grpo_advantage(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    index: np.ndarray,
    config: Any = None,
    **unused: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """verl advantage estimator: dcrl's GRPO (`advantage_std` from `algorithm.dcrl`)."""
    from dcrl.algorithms.base import AlgorithmConfig

    settings = dcrl_settings(config, AlgorithmConfig)
    with torch.no_grad():
        advantages = grpo_advantages(
            sequence_scores(token_level_rewards).float(),
            group_index(index),
            std=settings.advantage_std,
        )
    token_advantages = broadcast_to_tokens(advantages, response_mask)
    return token_advantages, token_advantages


def _aggregation_counts(loss_agg_mode: str, global_batch_info: dict[str, Any]) -> dict[str, Any]:
    """verl's global batch counts as dcrl `aggregate_loss` arguments.

    verl's `agg_loss` returns sum / global_count × dp_size, so that FSDP's gradient averaging
    over the dp_size ranks gives the global mean; that is dcrl's sum / (global_count / dp_size).
    """
    dp_size = global_batch_info.get("dp_size", 1) or 1
    counts: dict[str, Any] = {"norm_constant": global_batch_info.get("loss_scale_factor")}
    if loss_agg_mode == "token-mean":
        tokens = global_batch_info.get("batch_num_tokens")
        counts["num_tokens"] = None if tokens is None else tokens / dp_size
    else:
        sequences = global_batch_info.get("global_batch_size")
        counts["num_sequences"] = None if sequences is None else sequences / dp_size
    return counts


@register_policy_loss("dcrl_ppo_clip")
def compute_dcrl_ppo_clip_loss(
    old_log_prob: torch.Tensor,
    log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    loss_agg_mode: str = "token-mean",
    config: Any = None,
    rollout_is_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """verl policy loss: dcrl's PPO clip with dual clip (`ppo_clip_token_loss`) and dcrl's
    aggregation. Clip settings come from verl's actor config (clip_ratio_low / high, clip_ratio_c).
    All tensors (N, L)."""
    if loss_agg_mode == "token-sum":
        raise ValueError(
            "loss_agg_mode=token-sum has no dcrl equivalent; use token-mean, seq-mean-token-mean, "
            "seq-mean-token-sum or seq-mean-token-sum-norm with loss_mode=dcrl_ppo_clip"
        )
    clip_ratio = config.clip_ratio if config is not None else 0.2
    clip_low = config.clip_ratio_low if config is not None else None
    clip_high = config.clip_ratio_high if config is not None else None
    dual_clip = config.get("clip_ratio_c", 3.0) if config is not None else 3.0
    loss_mat, metrics = ppo_clip_token_loss(
        log_prob,
        old_log_prob,
        advantages,
        response_mask,
        clip_low=clip_ratio if clip_low is None else clip_low,
        clip_high=clip_ratio if clip_high is None else clip_high,
        dual_clip=dual_clip,
        log_ratio_clamp=LOG_RATIO_CLAMP,
    )
    if rollout_is_weights is not None:
        loss_mat = loss_mat * rollout_is_weights
    global_batch_info = dict(config.global_batch_info) if config is not None else {}
    loss = aggregate_loss(
        loss_mat,
        response_mask,
        loss_agg_mode,
        **_aggregation_counts(loss_agg_mode, global_batch_info),
    )
    verl_metrics = {
        "actor/pg_clipfrac": metrics["clipfrac_high"] + metrics["clipfrac_low"],
        "actor/pg_clipfrac_lower": metrics["clipfrac_dual"],
        "actor/ppo_kl": metrics["approx_kl"],
        **{f"actor/dcrl_{name}": value for name, value in metrics.items()},
    }
    return loss, verl_metrics


@register_agent_loop(TEMPERED_AGENT)
class TemperedSingleTurnAgentLoop(SingleTurnAgentLoop):
    """AEPO's tempered rows: verl's single-turn loop at the row's own sampling temperature
    (verl samples every row at `rollout.temperature` otherwise)."""

    async def run(self, sampling_params: dict[str, Any], **kwargs: Any) -> Any:
        temperature = float(kwargs.pop(TEMPERATURE_KEY))
        return await super().run({**sampling_params, "temperature": temperature}, **kwargs)


HF_ROLLOUT = "dcrl_hf"  # dcrl.integrations.verl.hf_rollout.ROLLOUT_NAME


def _load_hf_replica() -> type:
    from dcrl.integrations.verl.hf_rollout import DcrlHFReplica

    return DcrlHFReplica


# verl's two rollout tables, as verl fills them for vllm / sglang: the replica class by a loader
# (imported when a run names the rollout), the worker-side adapter by its import path.
RolloutReplicaRegistry.register(HF_ROLLOUT, _load_hf_replica)
rollout_base._ROLLOUT_REGISTRY[(HF_ROLLOUT, "async")] = (
    "dcrl.integrations.verl.hf_rollout.DcrlHFServerAdapter"
)
