"""Setting B: Bradley–Terry preferences and a DPO-style end-to-end objective
(docs/papers.md §8.5, E6).

The preference reading of arXiv 2601.16403 (docs/papers.md §8.5): the policy is trained
directly on n preference triples instead of the known reward. Per [N] this is NOT the paper's
analyzed objective; it is the natural preference-based counterpart.

- Data: x ~ pool, a, a′ ~ π_ref(·|x) i.i.d., a wins with probability σ(r*(x,a) − r*(x,a′)).
- Loss: ℓ(w) = −log σ(β⟨w, φ(x, a_win) − φ(x, a_lose)⟩) (DPO, arXiv 2305.18290, for the
  log-linear policy). In θ = βw this is Bradley–Terry logistic regression, so ŵ = θ̂_MLE/β.
- Prediction [R]: E(ŵ) ≈ tr(Σ̄_{w*} I⁻¹) / (2βn), with Σ̄_{w*} = mean_x Cov_{π*}(φ) and
  I = mean_x E_{a,a′~π_ref}[σ′(Δr*) ΔφΔφᵀ] the BT Fisher information.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dcrl.theory.environment import TheoryEnvironment
from dcrl.theory.objectives import policy_covariance


def _log_sigmoid(x: np.ndarray) -> np.ndarray:
    """log σ(x) = min(x, 0) − log(1 + e^{−|x|}), stable for any x."""
    return np.minimum(x, 0.0) - np.log1p(np.exp(-np.abs(x)))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return np.exp(_log_sigmoid(x))


@dataclass
class PreferenceData:
    """n preference triples; index i says prompt `prompts[i]` preferred `chosen[i]` to `rejected[i]`.

    Attributes:
        prompts, chosen, rejected: (n,) int64.
    """

    prompts: np.ndarray
    chosen: np.ndarray
    rejected: np.ndarray

    def __len__(self) -> int:
        return self.prompts.shape[0]

    def prefix(self, num_pairs: int) -> PreferenceData:
        """The first n triples (common random numbers across sample sizes)."""
        return PreferenceData(
            self.prompts[:num_pairs], self.chosen[:num_pairs], self.rejected[:num_pairs]
        )


def sample_preferences(env: TheoryEnvironment, num_pairs: int, seed: int) -> PreferenceData:
    """Draw n Bradley–Terry preference triples with both actions from π_ref.

    Returns:
        A `PreferenceData` of length n.
    """
    if not isinstance(num_pairs, int | np.integer) or num_pairs < 1:
        raise ValueError(f"num_pairs={num_pairs!r}: a preference sample needs n >= 1 triples")
    rng = np.random.default_rng(seed)
    prompts = rng.integers(env.pool_size, size=num_pairs)
    cumulative = np.cumsum(np.exp(env.ref_log_probs[prompts]), axis=-1)  # (n, K)
    draws = rng.random((2, num_pairs))
    first, second = ((cumulative < u[:, None]).sum(axis=-1) for u in draws)
    first = np.minimum(first, env.num_actions - 1)
    second = np.minimum(second, env.num_actions - 1)
    reward_gap = env.rewards[prompts, first] - env.rewards[prompts, second]
    first_wins = rng.random(num_pairs) < _sigmoid(reward_gap)
    chosen = np.where(first_wins, first, second)
    rejected = np.where(first_wins, second, first)
    return PreferenceData(prompts, chosen, rejected)


def preference_differences(env: TheoryEnvironment, data: PreferenceData) -> np.ndarray:
    """Δφ_i = φ(x_i, chosen_i) − φ(x_i, rejected_i). Returns (n, d)."""
    return env.features[data.prompts, data.chosen] - env.features[data.prompts, data.rejected]


def dpo_loss(env: TheoryEnvironment, w: np.ndarray, data: PreferenceData) -> np.ndarray:
    """Empirical DPO loss L̂_S(w) = mean_i −log σ(β⟨w, Δφ_i⟩). w: (..., d); returns (...)."""
    margins = env.beta * (np.asarray(w) @ preference_differences(env, data).T)  # (..., n)
    return -_log_sigmoid(margins).mean(axis=-1)


def population_dpo_loss(env: TheoryEnvironment, w: np.ndarray) -> np.ndarray:
    """Exact population DPO loss over the pool and all action pairs.

    L(w) = mean_x Σ_{a,a′} π_ref(a)π_ref(a′) [σ(Δr*)(−log σ(m)) + σ(−Δr*)(−log σ(−m))] with
    Δ over (a, a′) and m = β⟨w, Δφ⟩. Using −log σ(−m) = −log σ(m) + m, the bracket is
    −log σ(m) + σ(−Δr*) m; it is symmetric in (a, a′) and equals log 2 on a = a′, so only the
    K(K−1)/2 pairs a < a′ are evaluated.

    Args:
        w: (B, d) or (d,).

    Returns:
        (B,) or ().
    """
    w = np.asarray(w, dtype=np.float64)
    flat = np.atleast_2d(w)  # (B, d)
    first, second = np.triu_indices(env.num_actions, k=1)  # the P = K(K−1)/2 pairs a < a′
    ref_probs = np.exp(env.ref_log_probs)  # (M, K)
    pair_weights = ref_probs[:, first] * ref_probs[:, second]  # (M, P)
    lose_probability = _sigmoid(env.rewards[:, second] - env.rewards[:, first])  # σ(−Δr*) (M, P)
    scores = flat @ env.features.reshape(-1, env.dim).T  # ⟨w, φ⟩ (B, M·K)
    scores = scores.reshape(flat.shape[0], env.pool_size, env.num_actions)  # (B, M, K)
    margins = env.beta * (scores[:, :, first] - scores[:, :, second])  # (B, M, P)
    pair_loss = lose_probability * margins - _log_sigmoid(margins)
    diagonal = np.log(2.0) * (ref_probs**2).sum() / env.pool_size
    losses = diagonal + 2.0 * np.einsum("mp,bmp->b", pair_weights, pair_loss) / env.pool_size
    return losses.reshape(w.shape[:-1])


def fit_dpo(
    env: TheoryEnvironment,
    data: PreferenceData,
    initial_w: np.ndarray | None = None,
    grad_tol: float = 1e-10,
    max_iterations: int = 100,
) -> tuple[np.ndarray, bool]:
    """Minimize the empirical DPO loss with damped Newton on θ = βw (convex logistic regression).

    The loss is convex, so the start (`initial_w`, default 0) only changes the iteration count;
    a fit on a prefix of the data is a good start for the full data.

    Returns:
        ŵ (d,) and whether a finite minimizer was found: ‖∇_θ L̂_S‖ ≤ grad_tol and the data are not
        linearly separable. On separable data the MLE does not exist (the loss keeps decreasing
        along a separating direction, so the gradient can still fall below grad_tol); a fit whose
        margins are all positive certifies separability and is reported as not converged.
    """
    differences = preference_differences(env, data)  # (n, d)
    num_pairs = differences.shape[0]
    theta = np.zeros(env.dim) if initial_w is None else env.beta * np.asarray(initial_w, float)

    def loss(theta: np.ndarray) -> float:
        return float(-_log_sigmoid(differences @ theta).mean())

    for _ in range(max_iterations):
        margins = differences @ theta
        residual = _sigmoid(-margins)  # −∂ℓ/∂margin
        grad = -(differences.T @ residual) / num_pairs
        if np.linalg.norm(grad) <= grad_tol:
            informative = np.abs(differences).sum(axis=-1) > 0  # a = a′ pairs carry no signal
            separable = informative.any() and bool(np.all(margins[informative] > 0))
            return theta / env.beta, not separable
        curvature = residual * (1.0 - residual)  # σ′(margin)
        hess = (differences.T * curvature) @ differences / num_pairs
        step = -np.linalg.lstsq(hess, grad, rcond=None)[0]
        current = loss(theta)
        scale = 1.0
        while loss(theta + scale * step) > current + 1e-4 * scale * float(grad @ step):
            scale *= 0.5
            if scale < 1e-10:
                break
        theta = theta + scale * step
    return theta / env.beta, False


def bradley_terry_fisher(env: TheoryEnvironment) -> np.ndarray:
    """I = mean_x Σ_{a,a′} π_ref(a)π_ref(a′) σ′(Δr*) ΔφΔφᵀ, the per-pair BT Fisher information in θ.

    Returns:
        (d, d).
    """
    pair_weights = np.exp(env.ref_log_probs[:, :, None] + env.ref_log_probs[:, None, :])  # (M,K,K)
    win_probability = _sigmoid(env.rewards[:, :, None] - env.rewards[:, None, :])
    differences = env.features[:, :, None, :] - env.features[:, None, :, :]  # (M, K, K, d)
    weights = pair_weights * win_probability * (1.0 - win_probability)
    return np.einsum("mab,mabd,mabe->de", weights, differences, differences) / env.pool_size


def predicted_scaled_excess_risk(env: TheoryEnvironment) -> float:
    """tr(Σ̄_{w*} I⁻¹) / (2β): the predicted limit of n·E(ŵ) for the DPO fit
    (docs/papers.md §8.5)."""
    optimal_covariance = policy_covariance(env, env.w_star).mean(axis=0)  # (d, d)
    fisher = bradley_terry_fisher(env)
    return float(np.trace(np.linalg.solve(fisher, optimal_covariance)) / (2.0 * env.beta))
