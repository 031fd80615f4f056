"""The KL-regularized RLHF objective, its gradient and Hessian, and the coverage statistics.

Reconstructed model of arXiv 2601.16403 (docs/papers.md §8.1; the paper's body was not available).
Per prompt x and policy parameter w:

    π_w(a|x) = π_ref(a|x) exp(⟨w, φ(x,a)⟩) / Z_w(x)
    f(w; x)  = Σ_a π_w(a|x) r*(x,a) − β KL(π_w(·|x) ‖ π_ref(·|x))
    ∇f(w; x) = Σ_w(x) (θ* − βw)                       Σ_w(x) = Cov_{a~π_w}[φ(x,a)]
    ∇²f(w; x) = Σ_a π_w(a|x) (s_a − s̄ − β) (φ_a − μ_w)(φ_a − μ_w)ᵀ,   s_a = ⟨θ* − βw, φ(x,a)⟩

The population objective J(w) is the mean of f over the pool; the empirical objective Ĵ_S(w) the
mean over the training prompts S. The optimum is w* = θ*/β with f(w*; x) = β log Σ_a π_ref e^{r*/β}.

Shapes: `prompts` is None (the whole pool, M prompts) or an index array (..., N); `w` is (..., d).
Leading dimensions broadcast, so one call evaluates a stack of samples (S, N) at a stack of
parameters (S, d), or the whole pool at a batch of parameters (B, d).
"""

from __future__ import annotations

import functools

import numpy as np

from dcrl.theory.environment import TheoryEnvironment, log_softmax

COVERAGE_RELATIVE_TOLERANCE = 1e-10
"""A direction is covered when its eigenvalue exceeds this fraction of λ_max
(docs/papers.md §8.4)."""

_POOL_CHUNK_ELEMENTS = 2**22
"""Largest (parameters × prompts × actions) block evaluated at once over the pool (memory cap)."""


def _gather(env: TheoryEnvironment, prompts: np.ndarray | None):
    """Features (..., N, K, d), rewards, reference logits and log-probs (..., N, K) of prompts."""
    if prompts is None:
        return env.features, env.rewards, env.ref_logits, env.ref_log_probs
    prompts = np.asarray(prompts)
    return (
        env.features[prompts],
        env.rewards[prompts],
        env.ref_logits[prompts],
        env.ref_log_probs[prompts],
    )


def _policy_terms(env: TheoryEnvironment, w: np.ndarray, prompts: np.ndarray | None):
    """The per-action quantities every formula above is built from.

    Returns:
        features (..., N, K, d), policy π_w (..., N, K), log π_w, log π_ref, rewards r*
        (..., N, K), and the centered score s − s̄ (..., N, K) with s = r* − β⟨w, φ⟩.
    """
    features, rewards, ref_logits, ref_log_probs = _gather(env, prompts)
    w = np.asarray(w, dtype=np.float64)
    if features.ndim == 3:  # one prompt set for every parameter: a GEMM
        tilt = np.tensordot(w, features, axes=([-1], [-1]))  # ⟨w, φ(x,a)⟩ (..., N, K)
    else:
        tilt = np.einsum("...nkd,...d->...nk", features, w)  # (..., N, K)
    log_policy = log_softmax(ref_logits + tilt)
    policy = np.exp(log_policy)
    score = rewards - env.beta * tilt  # s_a = ⟨θ* − βw, φ⟩
    centered_score = score - np.einsum("...k,...k->...", policy, score)[..., None]
    return features, policy, log_policy, ref_log_probs, rewards, centered_score


def prompt_objective(
    env: TheoryEnvironment, w: np.ndarray, prompts: np.ndarray | None = None
) -> np.ndarray:
    """f(w; x) for each prompt.

    Args:
        w: (..., d).
        prompts: None (the pool) or (..., N) indices.

    Returns:
        (..., N) (N = M for the pool).
    """
    _, policy, log_policy, ref_log_probs, rewards, _ = _policy_terms(env, w, prompts)
    return np.einsum("...k,...k->...", policy, rewards - env.beta * (log_policy - ref_log_probs))


def prompt_gradient(
    env: TheoryEnvironment, w: np.ndarray, prompts: np.ndarray | None = None
) -> np.ndarray:
    """∇f(w; x) = Σ_w(x)(θ* − βw) = Σ_a π_w(a|x)(s_a − s̄) φ(x, a) for each prompt.

    Returns:
        (..., N, d).
    """
    features, policy, _, _, _, centered_score = _policy_terms(env, w, prompts)
    return np.einsum("...nk,...nkd->...nd", policy * centered_score, features)


def prompt_hessian(
    env: TheoryEnvironment, w: np.ndarray, prompts: np.ndarray | None = None
) -> np.ndarray:
    """∇²f(w; x) for each prompt (docs/papers.md §8.1); not negative definite in general.

    Returns:
        (..., N, d, d).
    """
    features, policy, _, _, _, centered_score = _policy_terms(env, w, prompts)
    centered = features - np.einsum("...nk,...nkd->...nd", policy, features)[..., None, :]
    weights = policy * (centered_score - env.beta)  # (..., N, K)
    return np.einsum("...nk,...nkd,...nke->...nde", weights, centered, centered)


def policy_covariance(
    env: TheoryEnvironment, w: np.ndarray, prompts: np.ndarray | None = None
) -> np.ndarray:
    """Σ_w(x) = Cov_{a~π_w(·|x)}[φ(x, a)], the centered action-feature covariance per prompt.

    Centered, because softmax policies ignore per-prompt shifts of φ (docs/papers.md §8.1).

    Returns:
        (..., N, d, d).
    """
    features, policy, _, _, _, _ = _policy_terms(env, w, prompts)
    centered = features - np.einsum("...nk,...nkd->...nd", policy, features)[..., None, :]
    return np.einsum("...nk,...nkd,...nke->...nde", policy, centered, centered)


def objective(
    env: TheoryEnvironment, w: np.ndarray, prompts: np.ndarray | None = None
) -> np.ndarray:
    """J(w) (prompts=None: the exact population mean over the pool) or Ĵ_S(w) (the sample mean).

    A batch of parameters over the pool is evaluated in chunks to bound memory.

    Args:
        w: (..., d).
        prompts: None or (..., N).

    Returns:
        (...).
    """
    w = np.asarray(w, dtype=np.float64)
    if prompts is not None or w.ndim == 1:
        return prompt_objective(env, w, prompts).mean(axis=-1)
    flat = w.reshape(-1, env.dim)  # (B, d)
    chunk = max(1, _POOL_CHUNK_ELEMENTS // (env.pool_size * env.num_actions))
    values = [
        prompt_objective(env, flat[start : start + chunk]).mean(axis=-1)
        for start in range(0, flat.shape[0], chunk)
    ]
    return np.concatenate(values).reshape(w.shape[:-1])


def value_and_gradient(
    env: TheoryEnvironment, w: np.ndarray, prompts: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Ĵ_S(w) and ∇Ĵ_S(w) from one pass over the sample.

    Args:
        w: (..., d).
        prompts: (..., N).

    Returns:
        values (...) and gradients (..., d).
    """
    features, policy, log_policy, ref_log_probs, rewards, centered_score = _policy_terms(
        env, w, prompts
    )
    num_prompts = features.shape[-3]
    values = (
        np.einsum("...nk,...nk->...", policy, rewards - env.beta * (log_policy - ref_log_probs))
        / num_prompts
    )
    gradients = np.einsum("...nk,...nkd->...d", policy * centered_score, features) / num_prompts
    return values, gradients


def gradient(
    env: TheoryEnvironment, w: np.ndarray, prompts: np.ndarray | None = None
) -> np.ndarray:
    """∇J(w) or ∇Ĵ_S(w). Returns (..., d)."""
    return prompt_gradient(env, w, prompts).mean(axis=-2)


def hessian(env: TheoryEnvironment, w: np.ndarray, prompts: np.ndarray | None = None) -> np.ndarray:
    """∇²J(w) or ∇²Ĵ_S(w), the prompt mean of `prompt_hessian`. Returns (..., d, d)."""
    features, policy, _, _, _, centered_score = _policy_terms(env, w, prompts)
    num_prompts = features.shape[-3]
    centered = features - np.einsum("...nk,...nkd->...nd", policy, features)[..., None, :]
    weighted = centered * (policy * (centered_score - env.beta))[..., None]
    flat_shape = (*centered.shape[:-3], -1, env.dim)  # (..., N·K, d): a GEMM over prompts×actions
    return (
        np.swapaxes(weighted.reshape(flat_shape), -1, -2)
        @ centered.reshape(flat_shape)
        / (num_prompts)
    )


def optimal_prompt_objective(
    env: TheoryEnvironment, prompts: np.ndarray | None = None
) -> np.ndarray:
    """f(w*; x) = β log Σ_a π_ref(a|x) exp(r*(x,a)/β), the per-prompt optimum (docs/papers.md §8.1).

    Returns:
        (..., N).
    """
    _, rewards, _, ref_log_probs = _gather(env, prompts)
    logits = ref_log_probs + rewards / env.beta  # (..., N, K)
    peak = functools.reduce(np.maximum, np.moveaxis(logits, -1, 0))  # (..., N)
    return env.beta * (peak + np.log(np.einsum("...k->...", np.exp(logits - peak[..., None]))))


def excess_risk(
    env: TheoryEnvironment, w: np.ndarray, prompts: np.ndarray | None = None
) -> np.ndarray:
    """E(w) = J(w*) − J(w) ≥ 0 over the pool, or over a slice of it when `prompts` is given
    (e.g. `env.rare_prompts` for the rare-slice excess of E3).

    Args:
        w: (..., d).
        prompts: None or (N,) indices of the evaluation slice.

    Returns:
        (...).
    """
    w = np.asarray(w, dtype=np.float64)
    optimum = optimal_prompt_objective(env, prompts).mean(axis=-1)
    if prompts is None:
        return optimum - objective(env, w)
    return optimum - prompt_objective(env, w, np.asarray(prompts)).mean(axis=-1)


def policy_error(env: TheoryEnvironment, w: np.ndarray) -> np.ndarray:
    """mean_x KL(π*(·|x) ‖ π_w(·|x)) over the pool. w: (..., d); returns (...)."""
    _, optimal_policy, log_optimal, _, _, _ = _policy_terms(env, env.w_star, None)
    _, _, log_policy, _, _, _ = _policy_terms(env, w, None)
    return np.einsum("...k,...k->...", optimal_policy, log_optimal - log_policy).mean(axis=-1)


def min_eigenvalue(covariance: np.ndarray) -> np.ndarray:
    """λ_min of symmetric matrices (..., d, d) → (...)."""
    return np.linalg.eigvalsh(covariance)[..., 0]


def is_covered(covariance: np.ndarray) -> np.ndarray:
    """Whether a mean covariance (..., d, d) is full rank: λ_min > 1e-10 · λ_max. Returns (...)."""
    eigenvalues = np.linalg.eigvalsh(covariance)
    return eigenvalues[..., 0] > COVERAGE_RELATIVE_TOLERANCE * eigenvalues[..., -1]


def span_projection(covariance: np.ndarray) -> np.ndarray:
    """Orthogonal projection onto the covered directions of a mean covariance.

    The covered subspace is spanned by the eigenvectors with eigenvalue > 1e-10 · λ_max. For the
    sample mean of Σ_0(x_i) this is span{φ(x_i, a) − φ(x_i, a′)}, the subspace gradient ascent
    from w = 0 never leaves (docs/papers.md §8.4).

    Args:
        covariance: (..., d, d) symmetric.

    Returns:
        (..., d, d).
    """
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    keep = eigenvalues > COVERAGE_RELATIVE_TOLERANCE * eigenvalues[..., -1:]  # (..., d)
    kept_vectors = eigenvectors * keep[..., None, :]
    return kept_vectors @ np.swapaxes(kept_vectors, -1, -2)


def smoothness_constant(
    env: TheoryEnvironment, num_probe_prompts: int = 256, max_rare_probes: int = 64, seed: int = 0
) -> float:
    """L̂ = 1.1 · max ‖∇²f(w; x)‖₂ over probe prompts and w ∈ {c·w*, c = 0, 0.2, …, 1.2}.

    The probe set is a random subset of the pool plus up to `max_rare_probes` rare prompts
    (docs/papers.md §8.3: rare prompts must be probed, they carry the largest curvature along e_d).

    Returns:
        L̂ > 0, the step-size scale of gradient ascent (η = 1/L̂).
    """
    rng = np.random.default_rng(seed)
    probes = rng.choice(env.pool_size, size=min(num_probe_prompts, env.pool_size), replace=False)
    rare = env.rare_prompts[:max_rare_probes]
    probes = np.union1d(probes, rare)
    scales = np.arange(7) * 0.2  # (7,)
    w_grid = scales[:, None] * env.w_star  # (7, d)
    hessians = prompt_hessian(
        env, w_grid, np.broadcast_to(probes, (7, probes.size))
    )  # (7, P, d, d)
    spectral_norms = np.abs(np.linalg.eigvalsh(hessians)).max(axis=-1)
    return 1.1 * float(spectral_norms.max())
