"""dcrl.theory environment and objectives: closed forms, finite differences, loop references."""

import math

import numpy as np
import pytest

from dcrl.theory.environment import (
    TheoryEnvironment,
    log_softmax,
    make_environment,
    make_rare_direction_environment,
    sample_prompts,
)
from dcrl.theory.objectives import (
    excess_risk,
    gradient,
    hessian,
    is_covered,
    objective,
    optimal_prompt_objective,
    policy_covariance,
    policy_error,
    prompt_gradient,
    prompt_hessian,
    prompt_objective,
    smoothness_constant,
    span_projection,
    value_and_gradient,
)


@pytest.fixture(scope="module")
def env() -> TheoryEnvironment:
    return make_environment(dim=6, num_actions=3, pool_size=64, beta=0.7, seed=3)


def _loop_objective(env: TheoryEnvironment, w: np.ndarray, prompt: int) -> float:
    """f(w; x) written out action by action from the definition (docs/papers.md §8.1)."""
    ref = [math.exp(env.theta_ref @ env.features[prompt, a]) for a in range(env.num_actions)]
    ref = [p / sum(ref) for p in ref]
    tilted = [ref[a] * math.exp(w @ env.features[prompt, a]) for a in range(env.num_actions)]
    policy = [p / sum(tilted) for p in tilted]
    expected_reward = sum(
        policy[a] * (env.theta_star @ env.features[prompt, a]) for a in range(env.num_actions)
    )
    kl = sum(policy[a] * math.log(policy[a] / ref[a]) for a in range(env.num_actions))
    return expected_reward - env.beta * kl


def test_environment_matches_setting_a():
    env = make_environment(pool_size=256)
    assert env.features.shape == (256, 4, 8)
    assert env.features.dtype == np.float64
    assert np.linalg.norm(env.features, axis=-1).max() <= 1.0 + 1e-12
    assert np.linalg.norm(env.theta_star) == pytest.approx(2.0)
    assert np.linalg.norm(env.theta_ref) == pytest.approx(1.0)
    np.testing.assert_allclose(env.w_star, env.theta_star / 0.5)
    np.testing.assert_allclose(np.exp(env.ref_log_probs).sum(-1), 1.0)
    # β changes nothing else: sweeps compare the same pool.
    other = make_environment(pool_size=256, beta=2.0)
    np.testing.assert_array_equal(other.features, env.features)


def test_rare_direction_construction():
    env = make_rare_direction_environment(2**-5, pool_size=512, seed=1)
    rare = env.rare_mask
    assert rare.sum() == 16
    assert np.all(env.features[~rare, :, -1] == 0.0)
    np.testing.assert_allclose(np.abs(env.features[rare, :, -1]), 0.9)
    signs = np.sign(env.features[rare, :, -1])
    assert np.all(signs.max(axis=1) > 0) and np.all(
        signs.min(axis=1) < 0
    )  # every rare prompt spans e_d
    assert np.linalg.norm(env.features, axis=-1).max() <= 1.0 + 1e-12
    assert env.theta_star[-1] == 3.0


def test_log_softmax_is_stable_and_normalized():
    logits = np.array([[1000.0, 0.0, -1000.0], [1.0, 2.0, 3.0]])
    result = log_softmax(logits)
    np.testing.assert_allclose(np.exp(result).sum(-1), 1.0)
    np.testing.assert_allclose(result[1], np.log(np.exp([1.0, 2, 3]) / np.exp([1.0, 2, 3]).sum()))
    assert np.isfinite(result).all()


def test_prompt_objective_matches_loop_reference(env):
    rng = np.random.default_rng(0)
    w = rng.normal(size=env.dim)
    prompts = np.array([0, 5, 17, 63])
    expected = [_loop_objective(env, w, p) for p in prompts]
    np.testing.assert_allclose(prompt_objective(env, w, prompts), expected, rtol=1e-12)


def test_gradient_and_hessian_match_finite_differences(env):
    rng = np.random.default_rng(1)
    prompts = rng.integers(env.pool_size, size=40)
    step = 1e-6
    for w in (rng.normal(size=env.dim), env.w_star + 0.3 * rng.normal(size=env.dim)):
        basis = np.eye(env.dim)
        numeric_gradient = [
            (objective(env, w + step * e, prompts) - objective(env, w - step * e, prompts))
            / (2 * step)
            for e in basis
        ]
        np.testing.assert_allclose(gradient(env, w, prompts), numeric_gradient, atol=1e-8)
        numeric_hessian = np.stack(
            [
                (gradient(env, w + step * e, prompts) - gradient(env, w - step * e, prompts))
                / (2 * step)
                for e in basis
            ]
        )
        exact = hessian(env, w, prompts)
        np.testing.assert_allclose(exact, numeric_hessian, atol=1e-8)
        np.testing.assert_allclose(exact, exact.T, atol=1e-15)
        np.testing.assert_allclose(exact, prompt_hessian(env, w, prompts).mean(0), atol=1e-14)


def test_closed_forms_at_the_optimum(env):
    """∇f(w*; x) = 0 for every prompt, f(w*; x) = β log Σ π_ref e^{r*/β}, and J(w*) ≥ J(w)."""
    np.testing.assert_allclose(prompt_gradient(env, env.w_star), 0.0, atol=1e-13)
    np.testing.assert_allclose(
        prompt_objective(env, env.w_star), optimal_prompt_objective(env), atol=1e-13
    )
    w_star_hessian = hessian(env, env.w_star)
    np.testing.assert_allclose(
        w_star_hessian, -env.beta * policy_covariance(env, env.w_star).mean(0), atol=1e-14
    )
    others = np.random.default_rng(2).normal(size=(20, env.dim)) * 3
    assert np.all(excess_risk(env, others) > 0)
    assert excess_risk(env, env.w_star) == pytest.approx(0.0, abs=1e-14)
    assert policy_error(env, env.w_star) == pytest.approx(0.0, abs=1e-14)
    assert np.all(policy_error(env, others) > 0)


def test_gradient_is_covariance_times_parameter_gap(env):
    """∇f(w; x) = Σ_w(x)(θ* − βw) (docs/papers.md §8.1)."""
    w = np.random.default_rng(3).normal(size=env.dim)
    covariances = policy_covariance(env, w)  # (M, d, d)
    np.testing.assert_allclose(
        prompt_gradient(env, w), covariances @ (env.theta_star - env.beta * w), atol=1e-14
    )


def test_policy_covariance_matches_loop(env):
    w = np.random.default_rng(4).normal(size=env.dim)
    log_policy = log_softmax(env.ref_logits + env.features @ w)
    for prompt in (0, 9):
        policy = np.exp(log_policy[prompt])
        mean = policy @ env.features[prompt]
        expected = sum(
            policy[a] * np.outer(env.features[prompt, a] - mean, env.features[prompt, a] - mean)
            for a in range(env.num_actions)
        )
        np.testing.assert_allclose(policy_covariance(env, w, [prompt])[0], expected, atol=1e-15)


def test_batched_parameters_and_samples_match_single_calls(env):
    rng = np.random.default_rng(5)
    parameters = rng.normal(size=(3, env.dim))
    samples = rng.integers(env.pool_size, size=(3, 10))
    pool_values = objective(env, parameters)
    paired_values, paired_gradients = value_and_gradient(env, parameters, samples)
    for i in range(3):
        assert pool_values[i] == pytest.approx(objective(env, parameters[i]), abs=1e-14)
        assert paired_values[i] == pytest.approx(
            objective(env, parameters[i], samples[i]), abs=1e-14
        )
        np.testing.assert_allclose(
            paired_gradients[i], gradient(env, parameters[i], samples[i]), atol=1e-14
        )


def test_span_projection_and_coverage_without_the_rare_direction():
    env = make_rare_direction_environment(2**-6, pool_size=256, seed=2)
    common = np.flatnonzero(~env.rare_mask)[:30]
    covariance = policy_covariance(env, np.zeros(env.dim), common).mean(0)
    projection = span_projection(covariance)
    expected = np.eye(env.dim)
    expected[-1, -1] = 0.0
    np.testing.assert_allclose(projection, expected, atol=1e-12)
    assert not is_covered(covariance)
    with_rare = np.append(common, env.rare_prompts[0])
    assert is_covered(policy_covariance(env, np.zeros(env.dim), with_rare).mean(0))


def test_smoothness_bounds_the_hessian_on_the_path(env):
    smoothness = smoothness_constant(env)
    for scale in (0.0, 0.5, 1.0):
        hessians = prompt_hessian(env, scale * env.w_star)
        assert np.abs(np.linalg.eigvalsh(hessians)).max() <= smoothness


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dim": 3, "num_actions": 4}, "num_actions=4 exceeds dim=3"),
        ({"beta": 0.0}, "beta=0.0"),
        ({"beta": -1.0}, "beta=-1.0"),
        ({"beta": float("nan")}, "beta=nan"),
        ({"pool_size": 0}, "pool_size=0"),
        ({"num_actions": 1}, "num_actions=1"),
    ],
)
def test_bad_environment_parameters_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_environment(**kwargs)


def test_bad_rare_and_sample_parameters_are_rejected(env):
    with pytest.raises(ValueError, match="rare_fraction=0"):
        make_rare_direction_environment(0.0)
    with pytest.raises(ValueError, match="num_actions <= dim - 1"):
        make_rare_direction_environment(0.5, dim=4, num_actions=4)
    with pytest.raises(ValueError, match="num_prompts=0"):
        sample_prompts(env.pool_size, 0, seed=1)
    with pytest.raises(ValueError, match="beta"):
        env.with_beta(0.0)
