"""Experiments E1–E6 of the RLHF generalization check (docs/papers.md §8.5).

They test the claims of arXiv 2601.16403 in a RECONSTRUCTED model (the paper's body was not
available; see `dcrl.theory.environment`):

- E1  the generalization gap of the empirical optimum decays as n^-1/2 under feature coverage;
- E2  GA (η = 1/L) and SGA (η_t = 1/(2L√t)) best-gradient iterates converge at least as fast as
      the paper's O(T^-1/4) and O(T^-1/8) terms;
- E3  with coverage violated by a rare direction, the rare-slice excess stays O(1) until n ≳ 1/p,
      with an exact per-seed identity; E3b: at finite T, poorly covered directions learn slowly;
- E4  GA's iterations to tolerance grow with the conditioning Γ = L̂/(βλ_*);
- E5  the residual bound mean E(ŵ_GA∞) ≤ 4 B ‖θ*‖ d/(n + 1);
- E6  Setting B (Bradley–Terry preferences, DPO fit): E(ŵ) ∝ 1/n with a predicted constant.

Each `run_*` returns an `ExperimentResult`: its parameters, the measured series, the fitted
log-log slopes and the pass/fail of each criterion (docs/papers.md §8.5). Sample seeds are
1000 + s, and a smaller n is a prefix of a larger one (common random numbers, docs/papers.md §8.6).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dcrl.theory.environment import (
    TheoryEnvironment,
    make_environment,
    make_rare_direction_environment,
    sample_prompts,
)
from dcrl.theory.objectives import (
    excess_risk,
    is_covered,
    min_eigenvalue,
    objective,
    optimal_prompt_objective,
    policy_covariance,
    smoothness_constant,
)
from dcrl.theory.preference import (
    dpo_loss,
    fit_dpo,
    population_dpo_loss,
    predicted_scaled_excess_risk,
    sample_preferences,
)
from dcrl.theory.solvers import (
    gradient_ascent,
    gradient_ascent_limit,
    newton_optimum,
    stochastic_gradient_ascent,
)

SAMPLE_SEED_OFFSET = 1000
"""Sample seed s uses numpy seed 1000 + s (docs/papers.md §8.3)."""

EXCESS_FLOOR = 1e-14
"""Excess risks are floored here before taking logs: J is an average of O(1) terms over the
pool, so differences below ~1e-14 are rounding."""


def powers_of_two(low: int, high: int) -> tuple[int, ...]:
    """(2^low, …, 2^high)."""
    return tuple(2**k for k in range(low, high + 1))


@dataclass(frozen=True)
class EnvSpec:
    """The parameters of Setting A (docs/papers.md §8.3); `build` makes the environment."""

    dim: int = 8
    num_actions: int = 4
    pool_size: int = 2**14
    beta: float = 0.5
    reward_norm: float = 2.0
    ref_norm: float = 1.0
    seed: int = 0

    def build(self) -> TheoryEnvironment:
        return make_environment(
            self.dim,
            self.num_actions,
            self.pool_size,
            self.beta,
            self.reward_norm,
            self.ref_norm,
            self.seed,
        )

    def build_rare(self, rare_fraction: float) -> TheoryEnvironment:
        return make_rare_direction_environment(
            rare_fraction,
            self.dim,
            self.num_actions,
            self.pool_size,
            self.beta,
            self.reward_norm,
            self.ref_norm,
            seed=self.seed,
        )


@dataclass
class Criterion:
    """One pass/fail check of docs/papers.md §8.5.

    Attributes:
        name: a short identifier, e.g. "rms_slope".
        requirement: the check in words, with its threshold.
        passed: True/False, or None when these parameters make it inapplicable.
        value: the measured number the check is decided on.
    """

    name: str
    requirement: str
    passed: bool | None
    value: float | None = None

    def __post_init__(self) -> None:
        self.passed = None if self.passed is None else bool(self.passed)
        self.value = None if self.value is None else float(self.value)


@dataclass
class ExperimentResult:
    """What an experiment measured and how it fared against its criteria.

    Attributes:
        name: "E1" … "E6".
        title: one line.
        params: the parameters it ran with.
        series: the measured arrays (for JSON and the figure).
        slopes: fitted log-log slopes by name.
        criteria: the checks of docs/papers.md §8.5.
        seconds: wall-clock time.
    """

    name: str
    title: str
    params: dict[str, Any]
    series: dict[str, Any]
    slopes: dict[str, float]
    criteria: list[Criterion]
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        """All applicable criteria passed."""
        return all(c.passed for c in self.criteria if c.passed is not None)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serializable dict (arrays become lists)."""
        return _jsonable(
            {
                "name": self.name,
                "title": self.title,
                "passed": self.passed,
                "seconds": self.seconds,
                "params": self.params,
                "slopes": self.slopes,
                "criteria": [dataclasses.asdict(c) for c in self.criteria],
                "series": self.series,
            }
        )


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.bool_ | bool):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        value = float(value)
        return value if math.isfinite(value) else None
    if dataclasses.is_dataclass(value):
        return _jsonable(dataclasses.asdict(value))
    return value


def loglog_slope(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """OLS slope of log y on log x along the last axis.

    Args:
        x: (N,) positive.
        y: (..., N) positive.

    Returns:
        (...) slopes.
    """
    log_x = np.log(np.asarray(x, dtype=np.float64))
    log_y = np.log(np.asarray(y, dtype=np.float64))
    centered_x = log_x - log_x.mean()
    return (log_y - log_y.mean(axis=-1, keepdims=True)) @ centered_x / (centered_x @ centered_x)


def bootstrap_slope_interval(
    x: np.ndarray,
    per_seed: np.ndarray,
    statistic: Callable[[np.ndarray], np.ndarray],
    num_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of a log-log slope, resampling seeds (docs/papers.md §8.4).

    Args:
        x: (N,) the abscissa (n or T).
        per_seed: (S, N) one row per seed.
        statistic: maps resampled rows (B, S, N) to the curve (B, N), e.g. the RMS over seeds.

    Returns:
        (low, high).
    """
    rng = np.random.default_rng(seed)
    rows = rng.integers(per_seed.shape[0], size=(num_resamples, per_seed.shape[0]))
    slopes = loglog_slope(x, statistic(per_seed[rows]))  # (B,)
    tail = 100.0 * (1.0 - level) / 2.0
    low, high = np.percentile(slopes, [tail, 100.0 - tail])
    return float(low), float(high)


def _check_sizes(sample_sizes: Sequence[int], num_seeds: int, min_seeds: int = 1) -> np.ndarray:
    sizes = np.asarray(sorted(set(int(n) for n in sample_sizes)))
    if sizes.size == 0 or sizes[0] < 1:
        raise ValueError(
            f"sample_sizes={list(sample_sizes)}: every n must be >= 1 (the default grid is 2^6…2^14)"
        )
    if num_seeds < min_seeds:
        raise ValueError(f"num_seeds={num_seeds}: this experiment needs at least {min_seeds} seeds")
    return sizes


def _reference_covariances(env: TheoryEnvironment) -> np.ndarray:
    """Σ_0(x) = Cov_{π_ref}[φ(x, ·)] for the whole pool, flattened. Returns (M, d·d)."""
    return policy_covariance(env, np.zeros(env.dim)).reshape(env.pool_size, -1)


def _prefix_mean_covariances(
    reference_covariances: np.ndarray, prompts: np.ndarray, sizes: np.ndarray
) -> np.ndarray:
    """(1/n) Σ_{i<n} Σ_0(x_i) for every prefix size n of one sample.

    Args:
        reference_covariances: (M, d·d) from `_reference_covariances`.
        prompts: (n_max,) the sample; sizes: (N,) increasing, sizes[-1] = n_max.

    Returns:
        (N, d, d).
    """
    dim = math.isqrt(reference_covariances.shape[1])
    segment_sums = np.add.reduceat(reference_covariances[prompts], np.r_[0, sizes[:-1]], axis=0)
    return (np.cumsum(segment_sums, axis=0) / sizes[:, None]).reshape(-1, dim, dim)


# --------------------------------------------------------------------------------------------- E1


def run_e1(
    spec: EnvSpec = EnvSpec(),
    sample_sizes: Sequence[int] = powers_of_two(6, 14),
    num_seeds: int = 100,
    num_newton_seeds: int = 10,
    slope_tolerance: float = 0.05,
) -> ExperimentResult:
    """E1: the gap G(ŵ_S; S) = Ĵ_S(ŵ_S) − J(ŵ_S) of the empirical optimum versus n.

    Under sample coverage ŵ_S = w* = θ*/β, so G is a zero-mean average with sd σ_f/√n. Newton
    solves Ĵ_S on the first `num_newton_seeds` seeds at every n to confirm ŵ_S = w* (to 1e-6); G
    is then evaluated at w* for all seeds, each of whose samples is checked to be covered.

    `slope_tolerance`: the RMS slope must lie in −0.5 ± this. 0.05 is the band for
    100 seeds on 2^6…2^14 (a Monte Carlo over 300 seed sets gives a slope s.d. of 0.016, so
    ±3.2 s.d.); `--quick` (2^6…2^12) has s.d. 0.025 and uses 0.1 (±4 s.d.).
    """
    sizes = _check_sizes(sample_sizes, num_seeds, min_seeds=2)
    start = time.perf_counter()
    env = spec.build()
    optimum_per_prompt = optimal_prompt_objective(env)  # f(w*; x) (M,)
    population_optimum = optimum_per_prompt.mean()
    noise_scale = optimum_per_prompt.std()  # σ_f
    reference_covariances = _reference_covariances(env)

    gaps = np.zeros((num_seeds, sizes.size))  # G(w*; S) (S, N)
    sample_coverage = np.zeros((num_seeds, sizes.size))  # λ̂_n
    covered = np.zeros((num_seeds, sizes.size), dtype=bool)
    newton_errors, newton_gap_differences = [], []
    for seed in range(num_seeds):
        prompts = sample_prompts(env.pool_size, int(sizes[-1]), SAMPLE_SEED_OFFSET + seed)
        running = np.cumsum(optimum_per_prompt[prompts])
        gaps[seed] = running[sizes - 1] / sizes - population_optimum
        covariances = _prefix_mean_covariances(reference_covariances, prompts, sizes)  # (N, d, d)
        sample_coverage[seed] = min_eigenvalue(covariances)
        covered[seed] = is_covered(covariances)
        if seed < num_newton_seeds:
            for column, n in enumerate(sizes):
                if not covered[seed, column]:
                    continue
                solution = newton_optimum(env, prompts[:n])
                newton_errors.append(np.linalg.norm(solution.w - env.w_star))
                newton_gap = objective(env, solution.w, prompts[:n]) - objective(env, solution.w)
                newton_gap_differences.append(abs(newton_gap - gaps[seed, column]))

    rms = np.sqrt((gaps**2).mean(axis=0))
    scaled_rms = np.sqrt(sizes) * rms / noise_scale
    scaled_abs_q90 = np.quantile(np.abs(gaps) * np.sqrt(sizes) / noise_scale, 0.9, axis=0)
    mean_gap = gaps.mean(axis=0)
    slope = float(loglog_slope(sizes, rms))
    interval = bootstrap_slope_interval(sizes, gaps, lambda g: np.sqrt((g**2).mean(axis=-2)))
    max_newton_error = max(newton_errors) if newton_errors else math.nan
    criteria = [
        Criterion(
            "optimum_identity",
            "‖ŵ_S − θ*/β‖ ≤ 1e-6 (Newton) on every covered sample checked",
            bool(newton_errors) and max_newton_error <= 1e-6,
            max_newton_error,
        ),
        Criterion(
            "all_covered", "every sample has λ̂_n > 1e-10·λ_max", bool(covered.all()), covered.mean()
        ),
        Criterion(
            "rms_slope",
            f"RMS_G slope in [{-0.5 - slope_tolerance:.2f}, {-0.5 + slope_tolerance:.2f}]",
            abs(slope + 0.5) <= slope_tolerance,
            slope,
        ),
        Criterion(
            "scaled_rms",
            "√n·RMS_G/σ_f in [0.75, 1.25] at every n (value: farthest from 1)",
            bool(np.all((scaled_rms >= 0.75) & (scaled_rms <= 1.25))),
            float(scaled_rms[np.argmax(np.abs(scaled_rms - 1.0))]),
        ),
        Criterion(
            "no_optimism",
            "|mean G| ≤ 0.3·RMS_G at the largest n (value: the ratio)",
            abs(mean_gap[-1]) <= 0.3 * rms[-1],
            abs(mean_gap[-1]) / rms[-1],
        ),
        Criterion(
            "q90",
            "90th percentile of |G|·√n/σ_f ≤ 2.0 at every n (docs/papers.md §8.5)",
            bool(np.all(scaled_abs_q90 <= 2.0)),
            float(scaled_abs_q90.max()),
        ),
    ]
    return ExperimentResult(
        "E1",
        "Generalization gap of the empirical optimum versus n",
        {
            **dataclasses.asdict(spec),
            "num_seeds": num_seeds,
            "num_newton_seeds": num_newton_seeds,
            "slope_tolerance": slope_tolerance,
        },
        {
            "n": sizes,
            "rms_gap": rms,
            "mean_gap": mean_gap,
            "mean_abs_gap": np.abs(gaps).mean(axis=0),
            "scaled_rms": scaled_rms,
            "scaled_abs_q90": scaled_abs_q90,
            "noise_scale": noise_scale,
            "min_sample_coverage": sample_coverage.min(axis=0),
            "max_newton_param_error": max_newton_error,
            "max_newton_gap_difference": max(newton_gap_differences, default=math.nan),
            "slope_interval": interval,
        },
        {"rms_gap": slope},
        criteria,
        time.perf_counter() - start,
    )


# --------------------------------------------------------------------------------------------- E2


def run_e2(
    spec: EnvSpec = EnvSpec(),
    sample_sizes: Sequence[int] = (256, 1024),
    num_seeds: int = 4,
    max_steps: int = 2048,
) -> ExperimentResult:
    """E2: GA and SGA best-gradient iterates versus the horizon T (docs/papers.md §8.2).

    Records, at T = 1, 2, 4, …, max_steps: the excess E(w_{t*}), the gap |G(w_{t*})| and
    ‖∇Ĵ_S(w_{t*})‖, averaged over seeds, for each n.
    """
    sizes = _check_sizes(sample_sizes, num_seeds)
    if max_steps < 128:
        raise ValueError(
            f"max_steps={max_steps}: E2 fits slopes over T in [16, 512] and [64, 2048], "
            "so it needs max_steps >= 128 (default 2048)"
        )
    start = time.perf_counter()
    env = spec.build()
    smoothness = smoothness_constant(env)
    horizons = np.asarray(
        sorted({2**k for k in range(int(math.log2(max_steps)) + 1)} | {max_steps})
    )
    series: dict[str, Any] = {"T": horizons, "n": sizes, "smoothness": smoothness}
    slopes: dict[str, float] = {}
    ga_monotone_violation = -math.inf
    ga_excess_by_1024, ga_gap_mismatch = [], []
    ga_slopes, sga_slopes, sga_improvement = [], [], []
    for n in sizes:
        prompts = np.stack(
            [
                sample_prompts(env.pool_size, int(n), SAMPLE_SEED_OFFSET + s)
                for s in range(num_seeds)
            ]
        )  # (S, n)
        gap_at_optimum = objective(env, env.w_star, prompts) - objective(env, env.w_star)  # (S,)
        for method in ("ga", "sga"):
            if method == "ga":
                trace = gradient_ascent(env, prompts, smoothness, int(max_steps), horizons)
            else:
                trace = stochastic_gradient_ascent(
                    env, prompts, smoothness, int(max_steps), seed=2000 + int(n), horizons=horizons
                )
            excess = excess_risk(env, trace.best_w)  # (R, S)
            gap = objective(env, trace.best_w, prompts) - objective(env, trace.best_w)  # (R, S)
            mean_excess = np.maximum(excess.mean(axis=1), EXCESS_FLOOR)
            key = f"{method}_n{n}"
            series[f"{key}_excess"] = mean_excess
            series[f"{key}_abs_gap"] = np.abs(gap).mean(axis=1)
            series[f"{key}_grad_norm"] = trace.best_grad_norm.mean(axis=1)
            series[f"{key}_abs_gap_at_optimum"] = float(np.abs(gap_at_optimum).mean())
            if method == "ga":
                window = (horizons >= 16) & (horizons <= 512)
                slope = float(loglog_slope(horizons[window], mean_excess[window]))
                ga_slopes.append(slope)
                allowed = excess[:-1] * (1.0 + 1e-9) + EXCESS_FLOOR
                ga_monotone_violation = max(
                    ga_monotone_violation, float((excess[1:] - allowed).max())
                )
                at_1024 = horizons == min(1024, horizons[-1])
                ga_excess_by_1024.append(float(excess[at_1024].max()))
                ga_gap_mismatch.append(float(np.abs(gap[-1] - gap_at_optimum).max()))
            else:
                window = (horizons >= 64) & (horizons <= 2048)
                slope = float(loglog_slope(horizons[window], mean_excess[window]))
                sga_slopes.append(slope)
                sga_improvement.append(float(mean_excess[-1] / mean_excess[horizons == 64][0]))
            slopes[f"{key}_excess"] = slope

    criteria = [
        Criterion(
            "ga_monotone",
            "GA best-iterate E(w_t*) non-increasing in T (relative tol 1e-9, absolute 1e-14; "
            "value: largest increase beyond them, ≤ 0 passes)",
            ga_monotone_violation <= 0.0,
            ga_monotone_violation,
        ),
        Criterion(
            "ga_slope",
            "GA slope of E over T in [16, 512] ≤ −0.25 (value: the shallowest n)",
            max(ga_slopes) <= -0.25,
            max(ga_slopes),
        ),
        Criterion(
            "ga_converged",
            "GA E(w_t*) < 1e-6 by T = 1024, every seed and n",
            max(ga_excess_by_1024) < 1e-6,
            max(ga_excess_by_1024),
        ),
        Criterion(
            "ga_gap_floor",
            "|G(w_t*) − G(ŵ_S)| ≤ 1e-6 at the last T",
            max(ga_gap_mismatch) <= 1e-6,
            max(ga_gap_mismatch),
        ),
        Criterion(
            "sga_slope",
            "SGA slope of E over T in [64, 2048] ≤ −0.125 (value: the shallowest n)",
            max(sga_slopes) <= -0.125,
            max(sga_slopes),
        ),
        Criterion(
            "sga_improves",
            "SGA mean E at the last T < mean E at T = 64, every n (value: largest ratio)",
            max(sga_improvement) < 1.0,
            max(sga_improvement),
        ),
    ]
    return ExperimentResult(
        "E2",
        "GA and SGA best-gradient iterates versus T",
        {**dataclasses.asdict(spec), "num_seeds": num_seeds, "max_steps": max_steps},
        series,
        slopes,
        criteria,
        time.perf_counter() - start,
    )


# --------------------------------------------------------------------------------------------- E3


def run_e3(
    spec: EnvSpec = EnvSpec(),
    rare_fractions: Sequence[float] = (1.0, 2**-5, 2**-8, 2**-11),
    sample_sizes: Sequence[int] = powers_of_two(6, 14),
    num_seeds: int = 50,
) -> ExperimentResult:
    """E3: coverage violated by a rare direction; estimator ŵ_GA∞ = P_{span(S)} w*.

    Measures P(covered), the in-distribution excess E(ŵ) and the rare-slice excess
    E_rare(ŵ) = J_rare(w*) − J_rare(ŵ), and checks the per-seed identity
    E_rare(ŵ) = Δ_rare · 1{uncovered} with Δ_rare = J_rare(w*) − J_rare(w* − w*_d e_d).
    """
    sizes = _check_sizes(sample_sizes, num_seeds)
    start = time.perf_counter()
    per_fraction: list[dict[str, Any]] = []
    identity_error = 0.0
    coverage_deviation_ok, coverage_margins = True, []
    rare_excess_ratios: list[float] = []
    control_excess: float | None = None
    for fraction in rare_fractions:
        env = spec.build_rare(float(fraction))
        rare = env.rare_prompts
        rare_share = rare.size / env.pool_size
        reference_covariances = _reference_covariances(env)
        uncovered_w = env.w_star.copy()
        uncovered_w[-1] = 0.0
        rare_gap = float(excess_risk(env, uncovered_w, rare))  # Δ_rare

        estimates = np.zeros((num_seeds, sizes.size, env.dim))
        covered = np.zeros((num_seeds, sizes.size), dtype=bool)
        for seed in range(num_seeds):
            prompts = sample_prompts(env.pool_size, int(sizes[-1]), SAMPLE_SEED_OFFSET + seed)
            covariances = _prefix_mean_covariances(reference_covariances, prompts, sizes)
            covered[seed] = is_covered(covariances)
            estimates[seed] = gradient_ascent_limit(env, covariances)
        # The estimates take a handful of distinct values (w* or a projection of it): evaluate
        # the pool once per value, identifying estimates that agree to 1e-12.
        flat_estimates = estimates.reshape(-1, env.dim)  # (S·N, d)
        _, first, inverse = np.unique(
            np.round(flat_estimates, 12), axis=0, return_index=True, return_inverse=True
        )
        representatives = flat_estimates[first]  # (U, d), one unrounded estimate per value
        inverse = inverse.ravel()
        excess = excess_risk(env, representatives)[inverse].reshape(num_seeds, -1)  # (S, N)
        rare_excess = excess_risk(env, representatives, rare)[inverse].reshape(num_seeds, -1)
        identity_error = max(
            identity_error,
            float(np.abs(rare_excess - rare_gap * ~covered).max()),
            float(np.abs(excess - rare_share * rare_gap * ~covered).max()),
        )
        coverage_rate = covered.mean(axis=0)
        predicted_rate = 1.0 - (1.0 - rare_share) ** sizes
        if fraction < 1.0:
            tolerance = 3.0 * np.sqrt(predicted_rate * (1.0 - predicted_rate) / num_seeds) + 0.02
            deviation = np.abs(coverage_rate - predicted_rate)
            coverage_deviation_ok &= bool(np.all(deviation <= tolerance))
            coverage_margins.append(float((deviation - tolerance).max()))
        else:
            control_excess = max(control_excess or 0.0, float(excess.max()))
        mean_rare_excess = rare_excess.mean(axis=0)
        rare_limited = sizes * fraction <= 0.5
        rare_excess_ratios += list(mean_rare_excess[rare_limited] / rare_gap)
        per_fraction.append(
            {
                "rare_fraction": float(fraction),
                "num_rare": int(rare.size),
                "rare_gap": rare_gap,
                "reference_coverage": float(
                    min_eigenvalue(reference_covariances.mean(axis=0).reshape(env.dim, env.dim))
                ),
                "feature_bound": env.feature_bound,
                "theta_star_norm": float(np.linalg.norm(env.theta_star)),
                "coverage_rate": coverage_rate,
                "predicted_coverage_rate": predicted_rate,
                "mean_excess": excess.mean(axis=0),
                "mean_rare_excess": mean_rare_excess,
            }
        )

    criteria = [
        Criterion(
            "control",
            "E(ŵ_GA∞) ≤ 1e-10 for p = 1 at every n",
            None if control_excess is None else control_excess <= 1e-10,
            control_excess,
        ),
        Criterion(
            "identity",
            "per seed, rare-slice excess = Δ_rare·1{uncovered} and E = (#rare/M)·Δ_rare·1{uncovered}"
            " within 1e-10",
            identity_error <= 1e-10,
            identity_error,
        ),
        Criterion(
            "coverage_rate",
            "P(covered) within 3 binomial s.e. + 0.02 of 1 − (1 − #rare/M)^n "
            "(value: worst margin, ≤ 0 passes)",
            coverage_deviation_ok if coverage_margins else None,
            max(coverage_margins) if coverage_margins else None,
        ),
        Criterion(
            "rare_excess_persists",
            "mean rare-slice excess ≥ 0.4·Δ_rare wherever n·p ≤ 0.5 (value: smallest ratio)",
            min(rare_excess_ratios) >= 0.4 if rare_excess_ratios else None,
            min(rare_excess_ratios) if rare_excess_ratios else None,
        ),
    ]
    return ExperimentResult(
        "E3",
        "Coverage violated: a rare direction",
        {
            **dataclasses.asdict(spec),
            "num_seeds": num_seeds,
            "rare_fractions": list(rare_fractions),
        },
        {"n": sizes, "fractions": per_fraction},
        {},
        criteria,
        time.perf_counter() - start,
    )


def run_e5(e3: ExperimentResult | None = None, **e3_arguments: Any) -> ExperimentResult:
    """E5: the residual bound mean_seeds E(ŵ_GA∞) ≤ 4 B ‖θ*‖ d/(n + 1) on the E3 runs.

    Args:
        e3: an E3 result to reuse; without it E3 runs with `e3_arguments`.
    """
    start = time.perf_counter()
    if e3 is None:
        e3 = run_e3(**e3_arguments)
    sizes = np.asarray(e3.series["n"])
    dim = e3.params["dim"]
    bounds = np.asarray(
        [
            4.0 * entry["feature_bound"] * entry["theta_star_norm"] * dim / (sizes + 1.0)
            for entry in e3.series["fractions"]
        ]
    )  # (P, N)
    ratios = np.asarray([entry["mean_excess"] for entry in e3.series["fractions"]]) / bounds
    worst = float(ratios.max())
    return ExperimentResult(
        "E5",
        "Residual bound on the uncovered mass",
        dict(e3.params),
        {
            "n": sizes,
            "rare_fractions": [entry["rare_fraction"] for entry in e3.series["fractions"]],
            "bound": bounds,
            "bound_ratio": ratios,
            "mean_excess": [entry["mean_excess"] for entry in e3.series["fractions"]],
        },
        {},
        [
            Criterion(
                "residual_bound",
                "mean E(ŵ_GA∞) ≤ 4·B·‖θ*‖·d/(n + 1) at every (p, n) (value: largest ratio)",
                worst <= 1.0,
                worst,
            )
        ],
        time.perf_counter() - start,
    )


# -------------------------------------------------------------------------------------------- E3b


def run_e3b(
    spec: EnvSpec = EnvSpec(),
    rare_fractions: Sequence[float] = (1.0, 2**-5, 2**-8),
    sample_sizes: Sequence[int] = (256, 2048),
    num_seeds: int = 4,
    num_steps: int = 256,
) -> ExperimentResult:
    """E3b: rare-slice excess of GA's best-gradient iterate at a finite horizon T.

    Poorly covered directions are learned slowly even once the sample holds them (Γ ∝ 1/λ̂).
    """
    sizes = _check_sizes(sample_sizes, num_seeds)
    start = time.perf_counter()
    fractions = sorted((float(p) for p in rare_fractions), reverse=True)
    rare_excess = np.zeros((len(fractions), sizes.size, num_seeds))
    for row, fraction in enumerate(fractions):
        env = spec.build_rare(fraction)
        smoothness = smoothness_constant(env)
        for column, n in enumerate(sizes):
            prompts = np.stack(
                [
                    sample_prompts(env.pool_size, int(n), SAMPLE_SEED_OFFSET + s)
                    for s in range(num_seeds)
                ]
            )
            trace = gradient_ascent(env, prompts, smoothness, int(num_steps))
            rare_excess[row, column] = excess_risk(env, trace.best_w[-1], env.rare_prompts)
    mean_rare_excess = rare_excess.mean(axis=-1)  # (P, N)
    steps = np.diff(mean_rare_excess, axis=0)  # (P − 1, N), positive where it increases
    increasing = bool(np.all(steps > 0.0))
    return ExperimentResult(
        "E3b",
        "Coverage and finite T: GA's rare-slice excess",
        {
            **dataclasses.asdict(spec),
            "num_seeds": num_seeds,
            "num_steps": num_steps,
            "rare_fractions": fractions,
        },
        {
            "n": sizes,
            "rare_fractions": fractions,
            "mean_rare_excess": mean_rare_excess,
            "rare_excess": rare_excess,
        },
        {},
        [
            Criterion(
                "monotone_in_p",
                "at each n, mean rare-slice excess strictly increases as p decreases "
                "(value: smallest increase)",
                increasing if len(fractions) > 1 else None,
                float(steps.min()) if len(fractions) > 1 else None,
            )
        ],
        time.perf_counter() - start,
    )


# --------------------------------------------------------------------------------------------- E4


SCAN_STRIDE = 16
"""E4 evaluates E(w_t) on every 16th GA iterate, then refines within one stride."""


def run_e4(
    spec: EnvSpec = EnvSpec(),
    betas: Sequence[float] = (0.25, 0.5, 1.0, 2.0),
    ref_norms: Sequence[float] = (1.0, 3.0),
    sample_size: int = 256,
    tolerance: float = 1e-6,
    max_steps: int = 4096,
) -> ExperimentResult:
    """E4: GA iterations T_hit to reach E(w_t) < tolerance versus Γ = L̂/(βλ_*).

    Sweeps β × ‖θ_ref‖ on one environment seed and one sample (seed 1000); `spec.beta` and
    `spec.ref_norm` are replaced by the sweep. Prediction [R]: T_hit ≈ c·Γ·log(1/tol).
    """
    _check_sizes([sample_size], 1)
    start = time.perf_counter()
    prompts = sample_prompts(spec.pool_size, int(sample_size), SAMPLE_SEED_OFFSET)
    rows = []
    for ref_norm in ref_norms:
        for beta in betas:
            env = dataclasses.replace(spec, beta=float(beta), ref_norm=float(ref_norm)).build()
            smoothness = smoothness_constant(env)
            optimal_coverage = float(
                min_eigenvalue(policy_covariance(env, env.w_star).mean(axis=0))
            )
            conditioning = smoothness / (env.beta * optimal_coverage)
            trace = gradient_ascent(env, prompts, smoothness, max_steps, keep_iterates=True)
            # Scan every SCAN_STRIDE-th iterate, then all iterates of the stride before the first
            # hit: E(w_t) decreases along GA here, and the pool evaluations dominate the cost.
            hit = None
            coarse = trace.iterates[::SCAN_STRIDE]  # (T_max / stride, d)
            for block in range(0, coarse.shape[0], 32):
                below = np.flatnonzero(excess_risk(env, coarse[block : block + 32]) < tolerance)
                if below.size:
                    last = (block + int(below[0])) * SCAN_STRIDE
                    first = max(0, last - SCAN_STRIDE + 1)
                    fine = excess_risk(env, trace.iterates[first : last + 1])  # (≤ stride,)
                    hit = first + int(np.flatnonzero(fine < tolerance)[0])
                    break
            rows.append(
                {
                    "beta": float(beta),
                    "ref_norm": float(ref_norm),
                    "smoothness": smoothness,
                    "optimal_coverage": optimal_coverage,
                    "conditioning": conditioning,
                    "steps_to_tolerance": hit,
                    "steps_per_conditioning": None if hit is None else hit / conditioning,
                }
            )

    def increasing_in_conditioning(group: list[dict[str, Any]]) -> bool:
        ordered = sorted(group, key=lambda row: row["conditioning"])
        hits = [row["steps_to_tolerance"] for row in ordered]
        return None not in hits and all(a < b for a, b in zip(hits, hits[1:], strict=False))

    across_beta = [
        increasing_in_conditioning([r for r in rows if r["ref_norm"] == m]) for m in ref_norms
    ]
    across_ref = [increasing_in_conditioning([r for r in rows if r["beta"] == b]) for b in betas]
    ratios = [r["steps_per_conditioning"] for r in rows]
    band = None if None in ratios else max(ratios) / min(ratios)
    criteria = [
        Criterion(
            "all_reached",
            f"every configuration reaches E < {tolerance:g} within {max_steps} steps",
            None not in ratios,
        ),
        Criterion(
            "increasing_across_beta",
            "T_hit strictly increasing in Γ across β at each fixed ‖θ_ref‖",
            all(across_beta) if len(betas) > 1 else None,
        ),
        Criterion(
            "increasing_across_ref",
            "T_hit strictly increasing in Γ across ‖θ_ref‖ at each fixed β",
            all(across_ref) if len(ref_norms) > 1 else None,
        ),
        Criterion(
            "proportional",
            "T_hit/Γ within a factor-2 band (value: max/min)",
            None if band is None else band <= 2.0,
            band,
        ),
    ]
    return ExperimentResult(
        "E4",
        "Conditioning sweep: GA steps to tolerance versus Γ",
        {
            **dataclasses.asdict(spec),
            "betas": list(betas),
            "ref_norms": list(ref_norms),
            "sample_size": sample_size,
            "tolerance": tolerance,
            "max_steps": max_steps,
        },
        {"configurations": rows},
        {},
        criteria,
        time.perf_counter() - start,
    )


# --------------------------------------------------------------------------------------------- E6


E6_SPEC = EnvSpec(pool_size=2**13)
"""E6's default environment: a 2^13 pool keeps the exact K² pair sums cheap (docs/papers.md
§8.5)."""

E6_CONFIGURATIONS = ((0.5, 8), (2.0, 8))
"""E6's default (β, d) pairs, the two the prototype checked (docs/papers.md §8.5)."""


def run_e6(
    spec: EnvSpec = E6_SPEC,
    configurations: Sequence[tuple[float, int]] = E6_CONFIGURATIONS,
    sample_sizes: Sequence[int] = powers_of_two(6, 13),
    num_seeds: int = 30,
) -> ExperimentResult:
    """E6: Setting B, the DPO fit on Bradley–Terry preferences, for each (β, d) configuration.

    Measures E(ŵ) under the RLHF objective and the DPO-loss gap L(ŵ) − L̂_S(ŵ), and compares
    n·E(ŵ) with tr(Σ̄_{w*} I⁻¹)/(2β). Seeds whose sample has no finite MLE are left out (counted).
    """
    sizes = _check_sizes(sample_sizes, num_seeds)
    start = time.perf_counter()
    rows = []
    slopes: dict[str, float] = {}
    excess_slopes, gap_slopes, prediction_errors = [], [], []
    for beta, dim in configurations:
        env = dataclasses.replace(spec, beta=float(beta), dim=int(dim)).build()
        prediction = predicted_scaled_excess_risk(env)
        estimates = np.zeros((num_seeds, sizes.size, env.dim))
        converged = np.zeros((num_seeds, sizes.size), dtype=bool)
        empirical_loss = np.zeros((num_seeds, sizes.size))
        for seed in range(num_seeds):
            data = sample_preferences(env, int(sizes[-1]), SAMPLE_SEED_OFFSET + seed)
            previous = None
            for column, n in enumerate(sizes):
                prefix = data.prefix(int(n))
                start_w = (
                    previous if previous is not None and np.all(np.isfinite(previous)) else None
                )
                estimates[seed, column], converged[seed, column] = fit_dpo(env, prefix, start_w)
                previous = estimates[seed, column] if converged[seed, column] else None
                empirical_loss[seed, column] = dpo_loss(env, estimates[seed, column], prefix)
        flat = estimates.reshape(-1, env.dim)
        excess = excess_risk(env, flat).reshape(num_seeds, sizes.size)
        loss_gap = population_dpo_loss(env, flat).reshape(num_seeds, sizes.size) - empirical_loss
        valid = converged.sum(axis=0)
        mean_excess = np.where(converged, excess, 0.0).sum(axis=0) / np.maximum(valid, 1)
        mean_abs_gap = np.where(converged, np.abs(loss_gap), 0.0).sum(axis=0) / np.maximum(valid, 1)
        large = sizes >= 2**9
        excess_slope = float(loglog_slope(sizes[large], mean_excess[large]))
        gap_slope = float(loglog_slope(sizes, mean_abs_gap))
        scaled = sizes * mean_excess
        checked = sizes >= 2**10
        relative_error = np.abs(scaled[checked] / prediction - 1.0)
        name = f"beta{beta:g}_d{dim}"
        slopes[f"{name}_excess"] = excess_slope
        slopes[f"{name}_abs_loss_gap"] = gap_slope
        excess_slopes.append(excess_slope)
        gap_slopes.append(gap_slope)
        prediction_errors.append(float(relative_error.max()) if relative_error.size else math.nan)
        rows.append(
            {
                "beta": float(beta),
                "dim": int(dim),
                "predicted_scaled_excess": prediction,
                "mean_excess": mean_excess,
                "scaled_excess": scaled,
                "mean_abs_loss_gap": mean_abs_gap,
                "mean_loss_gap": np.where(converged, loss_gap, 0.0).sum(axis=0)
                / np.maximum(valid, 1),
                "num_converged": valid,
            }
        )
    applicable = [e for e in prediction_errors if not math.isnan(e)]
    criteria = [
        Criterion(
            "excess_slope",
            "E(ŵ) slope over n ≥ 2^9 in [−1.2, −0.85], every configuration (value: shallowest)",
            all(-1.2 <= s <= -0.85 for s in excess_slopes),
            max(excess_slopes),
        ),
        Criterion(
            "excess_constant",
            "n·E(ŵ) within ±25% of tr(Σ̄_{w*} I⁻¹)/(2β) for n ≥ 2^10 (value: worst relative error)",
            max(applicable) <= 0.25 if applicable else None,
            max(applicable) if applicable else None,
        ),
        Criterion(
            "loss_gap_slope",
            "E|G_DPO| slope ≤ −0.45, every configuration (value: shallowest)",
            max(gap_slopes) <= -0.45,
            max(gap_slopes),
        ),
    ]
    return ExperimentResult(
        "E6",
        "Setting B: Bradley–Terry preferences with a DPO fit",
        {
            **dataclasses.asdict(spec),
            "configurations": [list(c) for c in configurations],
            "num_seeds": num_seeds,
        },
        {"n": sizes, "configurations": rows},
        slopes,
        criteria,
        time.perf_counter() - start,
    )


# ------------------------------------------------------------------------------------------ suite

EXPERIMENTS: dict[str, Callable[..., ExperimentResult]] = {
    "E1": run_e1,
    "E2": run_e2,
    "E3": run_e3,
    "E3b": run_e3b,
    "E4": run_e4,
    "E5": run_e5,
    "E6": run_e6,
}
"""The experiments in run order (E5 reuses E3's runs when both are selected)."""

QUICK_SETTINGS: dict[str, dict[str, Any]] = {
    "E1": {
        "pool_size": 2**12,
        "sample_sizes": powers_of_two(6, 12),
        "num_newton_seeds": 2,
        "slope_tolerance": 0.1,
    },
    "E2": {"pool_size": 2**12, "sample_sizes": (256,), "num_seeds": 2},
    "E3": {
        "pool_size": 2**12,
        "sample_sizes": powers_of_two(6, 12),
        "num_seeds": 30,
        "rare_fractions": (1.0, 2**-5, 2**-8),
    },
    "E3b": {"pool_size": 2**12, "num_seeds": 2},
    # E4 keeps the 2^14 pool: on 2^12 two configurations' Γ differ by only 6% (see docs/theory.md).
    "E4": {"betas": (0.5, 1.0, 2.0), "max_steps": 1024},
    "E6": {
        "pool_size": 2**12,
        "configurations": ((0.5, 8),),
        "sample_sizes": powers_of_two(6, 12),
        "num_seeds": 20,
    },
}
"""`--quick`: smaller pools, grids and seed counts. E1 keeps its 100 seeds; its shorter n grid
widens the slope tolerance to 0.1 (see `run_e1`)."""
QUICK_SETTINGS["E5"] = QUICK_SETTINGS["E3"]

_SPEC_FIELDS = {f.name for f in dataclasses.fields(EnvSpec)}


@dataclass
class SuiteOverrides:
    """Parameters a user sets for every selected experiment (None keeps each default).

    `beta` replaces E4's and E6's β sweeps by one value, `ref_norm` E4's reference sweep and `dim`
    E6's dimension sweep; `rare_fractions` applies to E3, E3b and E5.
    """

    dim: int | None = None
    num_actions: int | None = None
    pool_size: int | None = None
    beta: float | None = None
    ref_norm: float | None = None
    env_seed: int | None = None
    num_seeds: int | None = None
    rare_fractions: Sequence[float] | None = None
    extra: dict[str, dict[str, Any]] = field(default_factory=dict)


def experiment_arguments(name: str, quick: bool, overrides: SuiteOverrides) -> dict[str, Any]:
    """The keyword arguments `EXPERIMENTS[name]` runs with: defaults < quick < overrides."""
    settings: dict[str, Any] = dict(QUICK_SETTINGS.get(name, {})) if quick else {}
    spec_values = {k: settings.pop(k) for k in list(settings) if k in _SPEC_FIELDS}
    for key in ("dim", "num_actions", "pool_size", "beta", "ref_norm"):
        value = getattr(overrides, key)
        if value is not None:
            spec_values[key] = value
    if overrides.env_seed is not None:
        spec_values["seed"] = overrides.env_seed
    if name == "E4":
        if overrides.beta is not None:
            settings["betas"] = (overrides.beta,)
        if overrides.ref_norm is not None:
            settings["ref_norms"] = (overrides.ref_norm,)
    if name == "E6":
        configurations = settings.get("configurations", E6_CONFIGURATIONS)
        betas = [overrides.beta] if overrides.beta is not None else [c[0] for c in configurations]
        dims = [overrides.dim] if overrides.dim is not None else [c[1] for c in configurations]
        if overrides.beta is not None or overrides.dim is not None:
            configurations = tuple(dict.fromkeys((b, d) for b in betas for d in dims))
        settings["configurations"] = configurations
        spec_values.pop("dim", None)
        spec_values.pop("beta", None)
    if overrides.num_seeds is not None and name != "E4":
        settings["num_seeds"] = overrides.num_seeds
    if overrides.rare_fractions is not None and name in ("E3", "E3b", "E5"):
        settings["rare_fractions"] = tuple(overrides.rare_fractions)
    settings.update(overrides.extra.get(name, {}))
    base_spec = E6_SPEC if name == "E6" else EnvSpec()
    settings["spec"] = dataclasses.replace(base_spec, **spec_values)
    return settings


def run_suite(
    names: Sequence[str] | None = None,
    quick: bool = False,
    overrides: SuiteOverrides | None = None,
    on_start: Callable[[str], None] | None = None,
    on_done: Callable[[ExperimentResult], None] | None = None,
) -> list[ExperimentResult]:
    """Run the selected experiments (default: all) in order.

    Args:
        names: experiment names from `EXPERIMENTS` (case-insensitive).
        quick: the smaller `QUICK_SETTINGS`.
        overrides: user parameters.
        on_start, on_done: progress callbacks.
    """
    overrides = overrides or SuiteOverrides()
    canonical = {key.lower(): key for key in EXPERIMENTS}
    selected = list(EXPERIMENTS) if not names else []
    for name in names or []:
        if name.lower() not in canonical:
            raise ValueError(f"unknown experiment {name!r}; choose from {', '.join(EXPERIMENTS)}")
        selected.append(canonical[name.lower()])
    order = [name for name in EXPERIMENTS if name in selected]
    results: list[ExperimentResult] = []
    for name in order:
        if on_start is not None:
            on_start(name)
        arguments = experiment_arguments(name, quick, overrides)
        e3 = next((r for r in results if r.name == "E3"), None)
        reuse_e3 = name == "E5" and e3 is not None
        result = run_e5(e3) if reuse_e3 else EXPERIMENTS[name](**arguments)
        results.append(result)
        if on_done is not None:
            on_done(result)
    return results
