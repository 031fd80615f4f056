"""dcrl.theory: an exact numpy simulator that checks the RLHF generalization theory of
Li et al., "Towards a Theoretical Understanding to the Generalization of RLHF" (arXiv 2601.16403).

The model is a RECONSTRUCTION (the paper's body was not available; docs/papers.md §8): a
finite prompt pool, K actions with bounded d-dimensional features, a known linear reward, a
Boltzmann reference policy and a log-linear policy trained on the KL-regularized objective.
Experiments E1–E6 (`dcrl.theory.experiments`) test the n^-1/2 rate under feature coverage, the
GA/SGA extensions and what breaks without coverage; `dcrl theory run` runs them.

The names below are imported on first use, so that `dcrl --help` (which imports
`dcrl.theory.cli`) does not load numpy.
"""

from dcrl._lazy import lazy_exports

_EXPORTS = {
    "TheoryEnvironment": "environment",
    "make_environment": "environment",
    "make_rare_direction_environment": "environment",
    "sample_prompts": "environment",
    "EXPERIMENTS": "experiments",
    "Criterion": "experiments",
    "EnvSpec": "experiments",
    "ExperimentResult": "experiments",
    "SuiteOverrides": "experiments",
    "run_suite": "experiments",
    "excess_risk": "objectives",
    "gradient": "objectives",
    "hessian": "objectives",
    "objective": "objectives",
    "optimal_prompt_objective": "objectives",
    "policy_covariance": "objectives",
    "prompt_objective": "objectives",
    "smoothness_constant": "objectives",
    "gradient_ascent": "solvers",
    "gradient_ascent_limit": "solvers",
    "newton_optimum": "solvers",
    "stochastic_gradient_ascent": "solvers",
}

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_exports(__name__, {k: f"dcrl.theory.{v}" for k, v in _EXPORTS.items()})
