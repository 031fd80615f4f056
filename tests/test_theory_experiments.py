"""dcrl.theory experiments: the quick suite's criteria, slope fits and parameter plumbing."""

import json

import numpy as np
import pytest

from dcrl.theory.environment import sample_prompts
from dcrl.theory.experiments import (
    E6_SPEC,
    QUICK_SETTINGS,
    EnvSpec,
    SuiteOverrides,
    bootstrap_slope_interval,
    experiment_arguments,
    loglog_slope,
    run_e1,
    run_e3,
    run_e4,
    run_e5,
    run_suite,
)
from dcrl.theory.objectives import excess_risk, smoothness_constant
from dcrl.theory.solvers import gradient_ascent


@pytest.fixture(scope="module")
def quick_e1():
    return run_e1(**experiment_arguments("E1", quick=True, overrides=SuiteOverrides()))


@pytest.fixture(scope="module")
def quick_e3():
    return run_e3(**experiment_arguments("E3", quick=True, overrides=SuiteOverrides()))


def test_loglog_slope_recovers_a_power_law():
    x = np.array([1.0, 2, 4, 8, 16])
    assert loglog_slope(x, 3.0 * x**-0.5) == pytest.approx(-0.5)
    batch = np.stack([x**-1.0, 2 * x**0.25])
    np.testing.assert_allclose(loglog_slope(x, batch), [-1.0, 0.25])


def test_bootstrap_interval_brackets_the_slope_and_narrows_with_seeds():
    rng = np.random.default_rng(0)
    sizes = np.array([64, 128, 256, 512, 1024])
    gaps = rng.normal(size=(800, sizes.size)) / np.sqrt(sizes)  # (S, N)

    def rms(g):
        return np.sqrt((g**2).mean(axis=-2))

    widths = []
    for num_seeds in (50, 800):
        low, high = bootstrap_slope_interval(sizes, gaps[:num_seeds], rms)
        assert low < loglog_slope(sizes, rms(gaps[:num_seeds])) < high
        widths.append(high - low)
    assert widths[1] < 0.5 * widths[0]  # width ∝ 1/√S: a factor 4 here


def test_quick_e1_slope_and_criteria(quick_e1):
    """The quick E1 (100 seeds, n = 2^6…2^12) reproduces the n^-1/2 rate.

    Tolerance: over 300 independent sets of 100 seeds, this grid's RMS slope has mean −0.499 and
    s.d. 0.025 (Monte Carlo on the quick pool), so |slope + 0.5| ≤ 0.1 is a 4-s.d. band.
    """
    slope = quick_e1.slopes["rms_gap"]
    assert abs(slope + 0.5) <= 0.1
    low, high = quick_e1.series["slope_interval"]
    assert low < slope < high
    assert quick_e1.passed, [c for c in quick_e1.criteria if not c.passed]
    by_name = {c.name: c for c in quick_e1.criteria}
    assert by_name["optimum_identity"].value <= 1e-6
    assert by_name["all_covered"].passed


def test_quick_e3_identity_coverage_and_e5_bound(quick_e3):
    by_name = {c.name: c for c in quick_e3.criteria}
    assert by_name["identity"].value <= 1e-10
    assert by_name["control"].value <= 1e-10
    assert by_name["coverage_rate"].passed
    assert by_name["rare_excess_persists"].passed
    for entry in quick_e3.series["fractions"]:
        if entry["rare_fraction"] == 1.0:
            np.testing.assert_array_equal(entry["coverage_rate"], 1.0)
        else:  # coverage grows with n and the rare-slice excess falls with it
            assert entry["coverage_rate"][-1] >= entry["coverage_rate"][0]
            assert entry["mean_rare_excess"][-1] <= entry["mean_rare_excess"][0]
            np.testing.assert_allclose(
                entry["mean_rare_excess"],
                entry["rare_gap"] * (1 - entry["coverage_rate"]),
                atol=1e-10,
            )
    e5 = run_e5(quick_e3)
    assert e5.passed


def test_result_serializes_to_json(quick_e1):
    payload = json.loads(json.dumps(quick_e1.to_dict(), allow_nan=False))
    assert payload["name"] == "E1"
    assert len(payload["series"]["n"]) == 7
    assert {c["name"] for c in payload["criteria"]} >= {"rms_slope", "optimum_identity"}


def test_arguments_follow_defaults_then_quick_then_user():
    full = experiment_arguments("E1", quick=False, overrides=SuiteOverrides())
    assert full == {"spec": EnvSpec()}
    quick = experiment_arguments("E1", quick=True, overrides=SuiteOverrides(beta=1.0, num_seeds=7))
    assert quick["spec"] == EnvSpec(pool_size=QUICK_SETTINGS["E1"]["pool_size"], beta=1.0)
    assert quick["num_seeds"] == 7
    e4 = experiment_arguments("E4", quick=False, overrides=SuiteOverrides(beta=2.0, ref_norm=3.0))
    assert e4["betas"] == (2.0,) and e4["ref_norms"] == (3.0,)
    e6 = experiment_arguments("E6", quick=False, overrides=SuiteOverrides(dim=16))
    assert e6["configurations"] == ((0.5, 16), (2.0, 16))
    assert e6["spec"] == E6_SPEC
    e3 = experiment_arguments("E3", quick=False, overrides=SuiteOverrides(rare_fractions=[0.5]))
    assert e3["rare_fractions"] == (0.5,)


@pytest.mark.parametrize(
    ("names", "overrides", "message"),
    [
        (["E9"], SuiteOverrides(), "unknown experiment 'E9'"),
        (["E1"], SuiteOverrides(beta=0.0), "beta=0.0"),
        (["E1"], SuiteOverrides(dim=2, num_actions=4), "num_actions=4 exceeds dim=2"),
        (["E3"], SuiteOverrides(dim=4, num_actions=4), "num_actions <= dim - 1"),
        (["E1"], SuiteOverrides(num_seeds=1), "at least 2 seeds"),
        (["E2"], SuiteOverrides(extra={"E2": {"sample_sizes": [0, 64]}}), "n must be >= 1"),
    ],
)
def test_bad_parameters_fail_before_any_work(names, overrides, message):
    with pytest.raises(ValueError, match=message):
        run_suite(names, quick=True, overrides=overrides)


def test_e4_strided_scan_finds_the_first_step_below_tolerance():
    """T_hit from E4's stride-16 scan equals an exhaustive scan of every GA iterate."""
    spec = EnvSpec(pool_size=2**10)
    result = run_e4(spec, betas=(1.0,), ref_norms=(1.0,), max_steps=512)
    env = spec.build().with_beta(1.0)
    prompts = sample_prompts(env.pool_size, 256, 1000)
    trace = gradient_ascent(env, prompts, smoothness_constant(env), 512, keep_iterates=True)
    exhaustive = int(np.flatnonzero(excess_risk(env, trace.iterates) < 1e-6)[0])
    assert result.series["configurations"][0]["steps_to_tolerance"] == exhaustive
