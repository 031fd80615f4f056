"""dcrl.theory solvers (Newton, GA, SGA, GA limit) and Setting B (preferences, DPO fit)."""

import math

import numpy as np
import pytest

from dcrl.theory.environment import (
    make_environment,
    make_rare_direction_environment,
    sample_prompts,
)
from dcrl.theory.objectives import (
    excess_risk,
    gradient,
    objective,
    policy_covariance,
    smoothness_constant,
)
from dcrl.theory.preference import (
    PreferenceData,
    dpo_loss,
    fit_dpo,
    population_dpo_loss,
    sample_preferences,
)
from dcrl.theory.solvers import (
    gradient_ascent,
    gradient_ascent_limit,
    newton_optimum,
    stochastic_gradient_ascent,
)


@pytest.fixture(scope="module")
def env():
    return make_environment(pool_size=2**10)


@pytest.fixture(scope="module")
def rare_env():
    return make_rare_direction_environment(2**-8, pool_size=2**10)


@pytest.mark.parametrize(("num_prompts", "beta"), [(64, 0.5), (512, 0.5), (256, 0.25), (256, 2.0)])
def test_newton_reaches_theta_star_over_beta_under_coverage(env, num_prompts, beta):
    """Under sample coverage the empirical optimum is sample-independent: ŵ_S = θ*/β."""
    env = env.with_beta(beta)
    for seed in (1000, 1001):
        prompts = sample_prompts(env.pool_size, num_prompts, seed)
        result = newton_optimum(env, prompts)
        assert result.converged
        assert np.linalg.norm(result.w - env.theta_star / beta) <= 1e-6


def test_gradient_ascent_without_coverage_converges_to_the_projection(rare_env):
    """A sample with no rare prompt never sees e_d: GA from 0 goes to w* − w*_d e_d."""
    common = np.flatnonzero(~rare_env.rare_mask)
    prompts = np.random.default_rng(0).choice(common, size=128)
    smoothness = smoothness_constant(rare_env)
    trace = gradient_ascent(rare_env, prompts, smoothness, 3000, horizons=[1, 3000])
    projection = rare_env.w_star.copy()
    projection[-1] = 0.0
    assert np.all(trace.best_w[:, -1] == 0.0)  # never leaves span(S)
    assert np.linalg.norm(trace.best_w[-1] - projection) <= 1e-7
    covariance = policy_covariance(rare_env, np.zeros(rare_env.dim), prompts).mean(0)
    np.testing.assert_allclose(gradient_ascent_limit(rare_env, covariance), projection, atol=1e-12)


def test_gradient_ascent_limit_is_w_star_under_coverage(env):
    prompts = sample_prompts(env.pool_size, 128, 1000)
    covariance = policy_covariance(env, np.zeros(env.dim), prompts).mean(0)
    np.testing.assert_allclose(gradient_ascent_limit(env, covariance), env.w_star, atol=1e-12)


def test_gradient_ascent_best_iterate_and_batching(env):
    smoothness = smoothness_constant(env)
    prompts = np.stack([sample_prompts(env.pool_size, 256, 1000 + s) for s in range(3)])  # (3, n)
    horizons = [1, 4, 16, 64, 256]
    batched = gradient_ascent(env, prompts, smoothness, 256, horizons, keep_iterates=True)
    assert batched.best_w.shape == (5, 3, env.dim)
    np.testing.assert_array_equal(batched.best_w[0], 0.0)  # T = 1 holds only w_0 = 0
    assert np.all(np.diff(batched.best_grad_norm, axis=0) <= 0.0)
    excess = excess_risk(env, batched.best_w)  # (R, S)
    assert np.all(np.diff(excess, axis=0) <= 1e-14)
    single = gradient_ascent(env, prompts[1], smoothness, 256, horizons)
    np.testing.assert_allclose(single.best_w, batched.best_w[:, 1], atol=1e-14)
    # The recorded best iterate is the argmin of the gradient norm over the kept iterates.
    norms = np.linalg.norm(gradient(env, batched.iterates[:, 1], prompts[1]), axis=-1)  # (T,)
    assert batched.best_step[-1, 1] == int(np.argmin(norms))


def test_gradient_ascent_halves_a_too_large_step(env):
    """With L̂ far too small, η = 1/L̂ overshoots; the safeguard keeps Ĵ_S non-decreasing."""
    prompts = sample_prompts(env.pool_size, 64, 1000)
    trace = gradient_ascent(env, prompts, 1e-3, 200, keep_iterates=True)
    assert trace.step_size < 1e3  # halved at least once from 1/L̂ = 1000
    values = objective(env, trace.iterates, prompts)
    assert np.all(np.diff(values) >= -1e-12)


def test_stochastic_gradient_ascent_is_seeded_and_improves(env):
    smoothness = smoothness_constant(env)
    prompts = np.stack([sample_prompts(env.pool_size, 256, 1000 + s) for s in range(2)])
    horizons = [1, 64, 1024]
    first = stochastic_gradient_ascent(env, prompts, smoothness, 1024, seed=7, horizons=horizons)
    again = stochastic_gradient_ascent(env, prompts, smoothness, 1024, seed=7, horizons=horizons)
    np.testing.assert_array_equal(first.best_w, again.best_w)
    assert np.all(np.diff(first.best_grad_norm, axis=0) <= 0.0)
    excess = excess_risk(env, first.best_w)  # (3, 2)
    assert np.all(excess[-1] < 0.2 * excess[0])


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda e: newton_optimum(e, np.array([], dtype=int)), "n >= 1"),
        (lambda e: gradient_ascent(e, np.array([1, 2]), 1.0, 0), "num_steps=0"),
        (lambda e: gradient_ascent(e, np.array([1, 2]), 0.0, 5), "smoothness"),
        (lambda e: gradient_ascent(e, np.array([1, 2]), 1.0, 5, horizons=[9]), "horizons"),
        (lambda e: gradient_ascent(e, np.array([1, 10**6]), 1.0, 5), "index the pool"),
    ],
)
def test_bad_solver_inputs_are_rejected(env, call, message):
    with pytest.raises(ValueError, match=message):
        call(env)


def test_rare_slice_identity(rare_env):
    """E3's identity: rare-slice excess of ŵ_GA∞ is Δ_rare without a rare prompt, else 0."""
    uncovered = rare_env.w_star.copy()
    uncovered[-1] = 0.0
    rare_gap = excess_risk(rare_env, uncovered, rare_env.rare_prompts)
    assert rare_gap > 0.5
    common = np.flatnonzero(~rare_env.rare_mask)[:200]
    for prompts, expected in (
        (common, rare_gap),
        (np.append(common, rare_env.rare_prompts[0]), 0.0),
    ):
        covariance = policy_covariance(rare_env, np.zeros(rare_env.dim), prompts).mean(0)
        estimate = gradient_ascent_limit(rare_env, covariance)
        assert excess_risk(rare_env, estimate, rare_env.rare_prompts) == pytest.approx(
            expected, abs=1e-10
        )
        share = rare_env.rare_prompts.size / rare_env.pool_size
        assert excess_risk(rare_env, estimate) == pytest.approx(share * expected, abs=1e-10)


def _loop_population_dpo_loss(env, w):
    total = 0.0
    for prompt in range(env.pool_size):
        ref = np.exp(env.ref_log_probs[prompt])
        for a in range(env.num_actions):
            for b in range(env.num_actions):
                win = 1.0 / (1.0 + math.exp(-(env.rewards[prompt, a] - env.rewards[prompt, b])))
                margin = env.beta * w @ (env.features[prompt, a] - env.features[prompt, b])
                total += (
                    ref[a]
                    * ref[b]
                    * (
                        win * math.log1p(math.exp(-margin))
                        + (1 - win) * math.log1p(math.exp(margin))
                    )
                )
    return total / env.pool_size


def test_population_dpo_loss_matches_loop_and_is_minimal_at_w_star():
    env = make_environment(dim=5, num_actions=3, pool_size=9, beta=0.7, seed=4)
    parameters = np.random.default_rng(0).normal(size=(2, env.dim))
    expected = [_loop_population_dpo_loss(env, w) for w in parameters]
    np.testing.assert_allclose(population_dpo_loss(env, parameters), expected, rtol=1e-12)
    step = 1e-6  # Bradley–Terry is well specified: the population loss is stationary at w*
    numeric_gradient = [
        (
            population_dpo_loss(env, env.w_star + step * e)
            - population_dpo_loss(env, env.w_star - step * e)
        )
        / (2 * step)
        for e in np.eye(env.dim)
    ]
    np.testing.assert_allclose(numeric_gradient, 0.0, atol=1e-8)


def test_dpo_fit_is_stationary_and_preferences_are_consistent(env):
    data = sample_preferences(env, 2000, seed=1000)
    assert len(data) == 2000 and data.chosen.max() < env.num_actions
    estimate, converged = fit_dpo(env, data)
    assert converged
    step = 1e-6
    numeric_gradient = [
        (dpo_loss(env, estimate + step * e, data) - dpo_loss(env, estimate - step * e, data))
        / (2 * step)
        for e in np.eye(env.dim)
    ]
    np.testing.assert_allclose(numeric_gradient, 0.0, atol=1e-8)
    warm, _ = fit_dpo(env, data, initial_w=estimate + 0.1)
    np.testing.assert_allclose(warm, estimate, atol=1e-8)
    # Winners have the higher reward more often than not (σ(Δr*) > 1/2 on average).
    rewards = env.rewards[data.prompts]
    differs = data.chosen != data.rejected
    wins = rewards[np.arange(len(data)), data.chosen] > rewards[np.arange(len(data)), data.rejected]
    assert wins[differs].mean() > 0.55


def test_dpo_fit_reports_separable_data(env):
    """Two pairs in d = 8 are separable: the MLE does not exist and the fit says so."""
    data = PreferenceData(np.array([0, 1]), np.array([0, 0]), np.array([1, 1]))
    _, converged = fit_dpo(env, data)
    assert not converged
