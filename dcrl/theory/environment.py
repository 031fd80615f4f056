"""The simulated RLHF environment of the theory check ("Setting A", docs/papers.md §8.3).

This is a RECONSTRUCTION of the setting of Li et al., "Towards a Theoretical Understanding to the
Generalization of RLHF" (arXiv 2601.16403): the paper's body was not available, so the model is
the simplest one consistent with its abstract and a third-party reading note (docs/papers.md §8).

- A finite pool of M prompts; the population ρ is uniform on the pool, so every population
  quantity is an exact average over the pool. Training prompts are drawn i.i.d. with replacement.
- K actions per prompt with d-dimensional features φ(x, a), ‖φ‖ ≤ 1 (arXiv 2601.16403 assumes
  bounded features and K ≤ d with linearly independent action features per prompt).
- A known linear reward r*(x, a) = ⟨θ*, φ(x, a)⟩ and a Boltzmann reference policy
  π_ref(a|x) ∝ exp(⟨θ_ref, φ(x, a)⟩).
- The learned policy tilts the reference, π_w(a|x) ∝ π_ref(a|x) exp(⟨w, φ(x, a)⟩), and the
  KL-regularized optimum is w* = θ*/β (docs/papers.md §8.1).

The rare-direction construction (docs/papers.md §8.5, E3) breaks feature coverage on purpose: only a
fraction p of the prompts has features along the last coordinate e_d.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass, field

import numpy as np


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Stable log-softmax over the last axis (the actions).

    Args:
        logits: (..., K).

    Returns:
        (..., K) log-probabilities.
    """
    # Reductions over a short trailing axis are slow in numpy; fold the K slices pairwise instead.
    peak = functools.reduce(np.maximum, np.moveaxis(logits, -1, 0))  # (...,)
    shifted = logits - peak[..., None]
    return shifted - np.log(np.einsum("...k->...", np.exp(shifted)))[..., None]


@dataclass(eq=False)
class TheoryEnvironment:
    """A finite prompt pool with action features, a linear reward and a Boltzmann reference.

    Attributes:
        features: (M, K, d) action features φ(x, a), float64.
        theta_star: (d,) reward parameter θ*; r*(x, a) = ⟨θ*, φ(x, a)⟩.
        theta_ref: (d,) reference parameter; π_ref(a|x) ∝ exp(⟨θ_ref, φ(x, a)⟩).
        beta: KL coefficient β > 0.
        rare_mask: (M,) bool, the prompts of the rare-direction construction (all False when the
            environment has none).
        rewards: (M, K) r*(x, a), derived.
        ref_logits: (M, K) ⟨θ_ref, φ(x, a)⟩, derived.
        ref_log_probs: (M, K) log π_ref(a|x), derived.
    """

    features: np.ndarray
    theta_star: np.ndarray
    theta_ref: np.ndarray
    beta: float
    rare_mask: np.ndarray | None = None
    rewards: np.ndarray = field(init=False, repr=False)
    ref_logits: np.ndarray = field(init=False, repr=False)
    ref_log_probs: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.features = np.asarray(self.features, dtype=np.float64)
        if self.features.ndim != 3:
            raise ValueError(
                f"features must have shape (pool_size, num_actions, dim), got {self.features.shape}"
            )
        pool_size, num_actions, dim = self.features.shape
        check_positive_beta(self.beta)
        if num_actions > dim:
            raise ValueError(
                f"num_actions={num_actions} exceeds dim={dim}: the action features of a prompt "
                "must be linearly independent (arXiv 2601.16403, assumption K <= d); "
                "choose num_actions <= dim"
            )
        if num_actions < 2:
            raise ValueError(f"num_actions={num_actions}: a policy needs at least 2 actions")
        self.theta_star = np.asarray(self.theta_star, dtype=np.float64)
        self.theta_ref = np.asarray(self.theta_ref, dtype=np.float64)
        for name, vec in (("theta_star", self.theta_star), ("theta_ref", self.theta_ref)):
            if vec.shape != (dim,):
                raise ValueError(f"{name} must have shape ({dim},), got {vec.shape}")
        if self.rare_mask is None:
            self.rare_mask = np.zeros(pool_size, dtype=bool)
        self.rare_mask = np.asarray(self.rare_mask, dtype=bool)
        if self.rare_mask.shape != (pool_size,):
            raise ValueError(
                f"rare_mask must have shape ({pool_size},), got {self.rare_mask.shape}"
            )
        self.beta = float(self.beta)
        self.rewards = self.features @ self.theta_star  # (M, K)
        self.ref_logits = self.features @ self.theta_ref  # (M, K)
        self.ref_log_probs = log_softmax(self.ref_logits)

    @property
    def pool_size(self) -> int:
        return self.features.shape[0]

    @property
    def num_actions(self) -> int:
        return self.features.shape[1]

    @property
    def dim(self) -> int:
        return self.features.shape[2]

    @property
    def w_star(self) -> np.ndarray:
        """(d,) the KL-regularized optimum θ*/β (docs/papers.md §8.1)."""
        return self.theta_star / self.beta

    @property
    def rare_prompts(self) -> np.ndarray:
        """(#rare,) indices of the rare prompts."""
        return np.flatnonzero(self.rare_mask)

    @property
    def feature_bound(self) -> float:
        """B = max ‖φ(x, a)‖ over the pool."""
        return float(np.linalg.norm(self.features, axis=-1).max())

    def with_beta(self, beta: float) -> TheoryEnvironment:
        """The same pool, reward and reference with another KL coefficient."""
        return dataclasses.replace(self, beta=beta)


def check_positive_beta(beta: float) -> None:
    """Raise a ValueError unless β is a finite positive number."""
    if not (isinstance(beta, int | float) and math.isfinite(beta) and beta > 0):
        raise ValueError(
            f"beta={beta!r}: the KL coefficient must be a finite number > 0 (e.g. 0.5)"
        )


def _unit_vector(rng: np.random.Generator, dim: int) -> np.ndarray:
    direction = rng.normal(size=dim)
    return direction / np.linalg.norm(direction)


def _check_dimensions(dim: int, num_actions: int, pool_size: int) -> None:
    for name, value, minimum in (("dim", dim, 1), ("num_actions", num_actions, 2)):
        if not isinstance(value, int | np.integer) or value < minimum:
            raise ValueError(f"{name}={value!r}: must be an integer >= {minimum}")
    if not isinstance(pool_size, int | np.integer) or pool_size < 1:
        raise ValueError(f"pool_size={pool_size!r}: must be an integer >= 1 (e.g. 2**14)")


def make_environment(
    dim: int = 8,
    num_actions: int = 4,
    pool_size: int = 2**14,
    beta: float = 0.5,
    reward_norm: float = 2.0,
    ref_norm: float = 1.0,
    seed: int = 0,
) -> TheoryEnvironment:
    """Setting A (docs/papers.md §8.3).

    φ̃ ~ N(0, I_d/d), φ = φ̃ / max(1, ‖φ̃‖) (so B = 1); θ* = reward_norm · g/‖g‖ and
    θ_ref = ref_norm · h/‖h‖ with g, h ~ N(0, I_d). The same seed gives the same features and
    directions for any β or norms, so sweeps compare like with like.

    Args:
        dim: d, the feature dimension.
        num_actions: K ≤ d.
        pool_size: M, the number of prompts; the population is uniform on them.
        beta: β > 0.
        reward_norm: W = ‖θ*‖.
        ref_norm: ‖θ_ref‖ (0 gives a uniform reference).
        seed: the environment seed.
    """
    _check_dimensions(dim, num_actions, pool_size)
    check_positive_beta(beta)
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed={seed!r}: the environment seed must be an integer >= 0")
    if ref_norm < 0 or reward_norm < 0:
        raise ValueError(
            f"reward_norm={reward_norm}, ref_norm={ref_norm}: norms must be >= 0 (defaults 2 and 1)"
        )
    rng = np.random.default_rng(seed)
    raw = rng.normal(size=(pool_size, num_actions, dim)) / math.sqrt(dim)  # (M, K, d)
    features = raw / np.maximum(1.0, np.linalg.norm(raw, axis=-1, keepdims=True))
    theta_star = reward_norm * _unit_vector(rng, dim)
    theta_ref = ref_norm * _unit_vector(rng, dim)
    return TheoryEnvironment(features, theta_star, theta_ref, beta)


def make_rare_direction_environment(
    rare_fraction: float,
    dim: int = 8,
    num_actions: int = 4,
    pool_size: int = 2**14,
    beta: float = 0.5,
    reward_norm: float = 2.0,
    ref_norm: float = 1.0,
    rare_coordinate: float = 0.9,
    rare_reward: float = 3.0,
    seed: int = 0,
) -> TheoryEnvironment:
    """Setting A with coverage violated along e_d (docs/papers.md §8.5, E3).

    A fraction p of the pool (round(p·M) prompts, at least one) is "rare". Common prompts get
    φ(x, a)_d = 0, so their feature differences are orthogonal to e_d. Rare prompts get
    φ(x, a)_d = ±rare_coordinate and the other coordinates scaled by √(1 − rare_coordinate²),
    keeping ‖φ‖ ≤ 1. Each rare prompt has actions of both signs, so every rare prompt spans e_d
    (the brief only says "±0.9 at random"; forcing both signs makes "the sample holds a rare
    prompt" and "the sample covers e_d" the same event). θ*_d = rare_reward makes ignoring e_d
    cost O(1) reward on rare prompts. p = 1 is the covered control.

    Args:
        rare_fraction: p in (0, 1].
        rare_coordinate: |φ_d| on rare prompts, in (0, 1).
        rare_reward: θ*_d.
        Other arguments: as in `make_environment`; K ≤ d − 1 is needed here because common
            prompts live in the (d − 1)-dimensional subspace e_d^⊥.
    """
    if not (0.0 < rare_fraction <= 1.0):
        raise ValueError(
            f"rare_fraction={rare_fraction}: must be in (0, 1] (1 is the covered control)"
        )
    if not (0.0 < rare_coordinate < 1.0):
        raise ValueError(f"rare_coordinate={rare_coordinate}: must be in (0, 1), e.g. 0.9")
    _check_dimensions(dim, num_actions, pool_size)
    if num_actions > dim - 1:
        raise ValueError(
            f"num_actions={num_actions} with dim={dim}: the rare-direction construction puts common "
            "prompts in a (dim - 1)-dimensional subspace, so it needs num_actions <= dim - 1"
        )
    base = make_environment(dim, num_actions, pool_size, beta, reward_norm, ref_norm, seed)
    rng = np.random.default_rng([seed, 1])
    num_rare = max(1, round(rare_fraction * pool_size))
    rare_mask = np.zeros(pool_size, dtype=bool)
    rare_mask[rng.choice(pool_size, size=num_rare, replace=False)] = True

    features = base.features.copy()  # (M, K, d)
    features[:, :, -1] = 0.0
    signs = rng.choice([-1.0, 1.0], size=(num_rare, num_actions))  # (#rare, K)
    one_signed = np.abs(signs.sum(axis=1)) == num_actions
    flipped_action = rng.integers(num_actions, size=num_rare)
    signs[one_signed, flipped_action[one_signed]] *= -1.0
    rare_features = features[rare_mask] * math.sqrt(1.0 - rare_coordinate**2)  # (#rare, K, d)
    rare_features[:, :, -1] = rare_coordinate * signs
    features[rare_mask] = rare_features

    theta_star = base.theta_star.copy()
    theta_star[-1] = rare_reward
    return TheoryEnvironment(features, theta_star, base.theta_ref, beta, rare_mask)


def sample_prompts(pool_size: int, num_prompts: int, seed: int) -> np.ndarray:
    """n training prompts drawn i.i.d. (with replacement) from the uniform pool.

    With the same seed, a smaller n gives a prefix of a larger one (common random numbers,
    docs/papers.md §8.6).

    Returns:
        (n,) int64 prompt indices.
    """
    if not isinstance(num_prompts, int | np.integer) or num_prompts < 1:
        raise ValueError(
            f"num_prompts={num_prompts!r}: the training sample needs n >= 1 prompts "
            "(and n >= dim/(num_actions - 1) to be covered)"
        )
    return np.random.default_rng(seed).integers(pool_size, size=num_prompts)
