"""Solvers for the empirical RLHF objective Ĵ_S: Newton, gradient ascent, stochastic gradient ascent.

- `newton_optimum`: the empirical optimum ŵ_S = argmax Ĵ_S to ‖∇Ĵ_S‖ ≤ 1e-10 (docs/papers.md §8.4).
- `gradient_ascent`: GA with η = 1/L̂ and the best-gradient iterate t* = argmin_{t<T} ‖∇Ĵ_S(w_t)‖,
  the iterate the GA bound O(T^-1/4 + n^-1/2) of arXiv 2601.16403 is stated for
  (docs/papers.md §8.2).
- `stochastic_gradient_ascent`: single-prompt steps with η_t = 1/(2L̂√t) and the best
  full-gradient iterate, the setting of the SGA bound O(T^-1/8 + n^-1/2) (docs/papers.md §8.2).
- `gradient_ascent_limit`: the limit of GA from w = 0, P_{span(S)} w* (docs/papers.md §8.4).

GA and SGA run a stack of independent problems at once: `prompts` (..., n) holds one training
sample per leading index, and every returned array carries the same leading dimensions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from dcrl.theory.environment import TheoryEnvironment
from dcrl.theory.objectives import (
    gradient,
    hessian,
    objective,
    prompt_gradient,
    span_projection,
    value_and_gradient,
)


def _check_sample(env: TheoryEnvironment, prompts: np.ndarray) -> np.ndarray:
    prompts = np.asarray(prompts)
    if prompts.ndim < 1 or prompts.shape[-1] < 1:
        raise ValueError(
            f"prompts has shape {prompts.shape}: a training sample needs n >= 1 prompt indices"
        )
    if not np.issubdtype(prompts.dtype, np.integer):
        raise TypeError(f"prompts must be integer indices into the pool, got dtype {prompts.dtype}")
    if prompts.min() < 0 or prompts.max() >= env.pool_size:
        raise ValueError(f"prompts must index the pool, i.e. lie in [0, {env.pool_size})")
    return prompts


def _check_steps(num_steps: int) -> None:
    if not isinstance(num_steps, int | np.integer) or num_steps < 1:
        raise ValueError(f"num_steps={num_steps!r}: must be an integer >= 1")


@dataclass
class NewtonResult:
    """The output of `newton_optimum`.

    Attributes:
        w: (d,) the stationary point found.
        grad_norm: ‖∇Ĵ_S(w)‖ at the end.
        num_iterations: Newton steps taken.
        converged: grad_norm ≤ grad_tol.
    """

    w: np.ndarray
    grad_norm: float
    num_iterations: int
    converged: bool


def newton_optimum(
    env: TheoryEnvironment,
    prompts: np.ndarray,
    grad_tol: float = 1e-10,
    max_iterations: int = 100,
) -> NewtonResult:
    """Maximize Ĵ_S from w = 0 with a safeguarded Newton method.

    Ĵ_S is not globally concave (docs/papers.md §8.1), so each step preconditions the gradient with
    |∇²Ĵ_S| (the Hessian's eigenvalues in absolute value, floored at 1e-12 of the largest), which is
    always an ascent direction, and backtracks until the Armijo condition holds. Near the optimum
    the Hessian is negative definite and this is plain Newton with quadratic convergence; the line
    search is skipped once ‖∇Ĵ_S‖ < 1e-6, where rounding would make it unreliable.

    Args:
        prompts: (n,) the training sample.

    Returns:
        A `NewtonResult`; under sample coverage w = θ*/β.
    """
    prompts = _check_sample(env, prompts)
    assert prompts.ndim == 1, "newton_optimum solves one sample at a time"
    w = np.zeros(env.dim)
    grad = gradient(env, w, prompts)
    grad_norm = float(np.linalg.norm(grad))
    iteration = 0
    while grad_norm > grad_tol and iteration < max_iterations:
        eigenvalues, eigenvectors = np.linalg.eigh(-hessian(env, w, prompts))
        magnitudes = np.maximum(np.abs(eigenvalues), 1e-12 * np.abs(eigenvalues).max())
        step = eigenvectors @ ((eigenvectors.T @ grad) / magnitudes)
        if grad_norm >= 1e-6:
            value = objective(env, w, prompts)
            slope = float(grad @ step)
            scale = 1.0
            while objective(env, w + scale * step, prompts) < value + 1e-4 * scale * slope:
                scale *= 0.5
                if scale < 1e-10:
                    break
            step = scale * step
        w = w + step
        grad = gradient(env, w, prompts)
        grad_norm = float(np.linalg.norm(grad))
        iteration += 1
    return NewtonResult(w, grad_norm, iteration, grad_norm <= grad_tol)


@dataclass
class AscentTrace:
    """Best-gradient iterates of GA or SGA recorded at a list of horizons T.

    Leading dimensions (...) are those of the `prompts` stack that was solved.

    Attributes:
        horizons: (R,) the horizons T; the record at T covers the iterates w_0, …, w_{T−1}.
        best_w: (R, ..., d) the iterate with the smallest ‖∇Ĵ_S‖ among them.
        best_grad_norm: (R, ...) its ‖∇Ĵ_S‖.
        best_step: (R, ...) its index t*.
        step_size: (...) the final base step size (GA: 1/L̂ halved by the safeguard, if it fired).
        iterates: (T_max, ..., d) every iterate w_0, …, w_{T_max−1}, when requested.
    """

    horizons: np.ndarray
    best_w: np.ndarray
    best_grad_norm: np.ndarray
    best_step: np.ndarray
    step_size: np.ndarray
    iterates: np.ndarray | None = None


class _BestIterateTracker:
    """Keeps argmin_t ‖∇Ĵ_S(w_t)‖ for a stack of runs and snapshots it at the horizons."""

    def __init__(self, horizons: Sequence[int], batch_shape: tuple[int, ...], dim: int):
        self.horizons = np.asarray(sorted(set(int(h) for h in horizons)))
        num = len(self.horizons)
        self.best_w = np.zeros(batch_shape + (dim,))
        self.best_norm = np.full(batch_shape, np.inf)
        self.best_step = np.zeros(batch_shape, dtype=np.int64)
        self.records = (
            np.zeros((num, *batch_shape, dim)),
            np.zeros((num, *batch_shape)),
            np.zeros((num, *batch_shape), dtype=np.int64),
        )
        self.next_record = 0

    def update(self, step: int, w: np.ndarray, grad_norm: np.ndarray) -> None:
        better = grad_norm < self.best_norm
        self.best_w = np.where(better[..., None], w, self.best_w)
        self.best_norm = np.where(better, grad_norm, self.best_norm)
        self.best_step = np.where(better, step, self.best_step)
        if self.next_record < len(self.horizons) and step + 1 == self.horizons[self.next_record]:
            for record, value in zip(
                self.records, (self.best_w, self.best_norm, self.best_step), strict=True
            ):
                record[self.next_record] = value
            self.next_record += 1

    def trace(self, step_size: np.ndarray, iterates: np.ndarray | None) -> AscentTrace:
        assert self.next_record == len(self.horizons), "every horizon must have been reached"
        return AscentTrace(self.horizons, *self.records, step_size, iterates)


def _check_horizons(horizons: Sequence[int], num_steps: int) -> None:
    if len(horizons) == 0 or min(horizons) < 1 or max(horizons) > num_steps:
        raise ValueError(f"horizons must lie in [1, num_steps={num_steps}], got {list(horizons)}")


def gradient_ascent(
    env: TheoryEnvironment,
    prompts: np.ndarray,
    smoothness: float,
    num_steps: int,
    horizons: Sequence[int] | None = None,
    keep_iterates: bool = False,
) -> AscentTrace:
    """Full-batch GA w_{t+1} = w_t + η ∇Ĵ_S(w_t) from w_0 = 0 with η = 1/L̂ (docs/papers.md §8.4).

    Safeguard (docs/papers.md §8.3): if a step would decrease Ĵ_S by more than rounding
    (1e-13 · max(1, |Ĵ_S|)), that run's η is halved until it does not.

    Args:
        prompts: (..., n) a stack of training samples, solved independently.
        smoothness: L̂ (see `objectives.smoothness_constant`).
        num_steps: T_max, the number of iterates w_0, …, w_{T_max−1} examined.
        horizons: the T at which the best-gradient iterate is recorded (default: T_max).
        keep_iterates: also return every iterate (T_max, ..., d).
    """
    prompts = _check_sample(env, prompts)
    _check_steps(num_steps)
    horizons = [num_steps] if horizons is None else list(horizons)
    _check_horizons(horizons, num_steps)
    if not smoothness > 0:
        raise ValueError(f"smoothness={smoothness}: L̂ must be > 0")
    batch_shape = prompts.shape[:-1]
    tracker = _BestIterateTracker(horizons, batch_shape, env.dim)
    step_size = np.full(batch_shape, 1.0 / smoothness)
    iterates = np.zeros((num_steps, *batch_shape, env.dim)) if keep_iterates else None
    w = np.zeros((*batch_shape, env.dim))
    value, grad = value_and_gradient(env, w, prompts)
    for step in range(num_steps):
        if iterates is not None:
            iterates[step] = w
        tracker.update(step, w, np.linalg.norm(grad, axis=-1))
        if step + 1 == num_steps:
            break
        candidate = w + step_size[..., None] * grad
        new_value, new_grad = value_and_gradient(env, candidate, prompts)
        decreased = new_value < value - 1e-13 * np.maximum(1.0, np.abs(value))
        while decreased.any():
            step_size = np.where(decreased, 0.5 * step_size, step_size)
            candidate = w + step_size[..., None] * grad
            new_value, new_grad = value_and_gradient(env, candidate, prompts)
            decreased = new_value < value - 1e-13 * np.maximum(1.0, np.abs(value))
        w, value, grad = candidate, new_value, new_grad
    return tracker.trace(step_size, iterates)


def stochastic_gradient_ascent(
    env: TheoryEnvironment,
    prompts: np.ndarray,
    smoothness: float,
    num_steps: int,
    seed: int,
    horizons: Sequence[int] | None = None,
    select_every: int = 1,
) -> AscentTrace:
    """SGA w_t = w_{t−1} + η_t ∇f(w_{t−1}; x_{i_t}), η_t = 1/(2L̂√t), i_t uniform over the sample.

    The best full-gradient iterate (smallest ‖∇Ĵ_S‖) is tracked, which costs a full-batch
    gradient per candidate (docs/papers.md §8.2). `select_every` = k > 1 examines only every k-th
    iterate (faster); the theory assumes k = 1.

    Args:
        prompts: (..., n) a stack of training samples; each run draws its own i_t.
        smoothness: L̂.
        num_steps: T_max.
        seed: seeds the draws i_t.
        horizons: the T at which the best iterate is recorded (default: T_max).
    """
    prompts = _check_sample(env, prompts)
    _check_steps(num_steps)
    horizons = [num_steps] if horizons is None else list(horizons)
    _check_horizons(horizons, num_steps)
    if not smoothness > 0:
        raise ValueError(f"smoothness={smoothness}: L̂ must be > 0")
    batch_shape = prompts.shape[:-1]
    num_prompts = prompts.shape[-1]
    rng = np.random.default_rng(seed)
    tracker = _BestIterateTracker(horizons, batch_shape, env.dim)
    flat_prompts = prompts.reshape(-1, num_prompts)  # (R, n)
    w = np.zeros((*batch_shape, env.dim))
    for step in range(num_steps):
        # w holds w_step; examine it, then take step number step + 1.
        if step % select_every == 0 or step + 1 in tracker.horizons:
            grad_norm = np.linalg.norm(gradient(env, w, prompts), axis=-1)
        else:
            grad_norm = np.full(batch_shape, np.inf)
        tracker.update(step, w, grad_norm)
        draws = rng.integers(num_prompts, size=flat_prompts.shape[0])
        chosen = flat_prompts[np.arange(flat_prompts.shape[0]), draws].reshape(*batch_shape, 1)
        single_gradient = prompt_gradient(env, w, chosen)[..., 0, :]  # (..., d)
        w = w + single_gradient / (2.0 * smoothness * np.sqrt(step + 1))
    return tracker.trace(np.full(batch_shape, 1.0 / (2.0 * smoothness)), None)


def gradient_ascent_limit(env: TheoryEnvironment, sample_covariance: np.ndarray) -> np.ndarray:
    """ŵ_GA∞ = P_{span(S)} w*, the limit of GA from w = 0 (docs/papers.md §8.4).

    Every gradient Σ̂_w(θ* − βw) lies in span(S) = span{φ(x_i, a) − φ(x_i, a′)}, the range of the
    sample mean reference covariance (1/n) Σ_i Σ_0(x_i); without coverage GA never leaves it.

    Args:
        sample_covariance: (..., d, d) the sample mean of Σ_0(x_i).

    Returns:
        (..., d).
    """
    return span_projection(sample_covariance) @ env.w_star
