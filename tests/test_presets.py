"""One extension point: every algorithm name is a preset of GRPO plus at most one target, each
config carries its own name, a policy loss declares what it needs through its registration, and
the trainer knows no method (docs/design.md). The numbers of every preset are pinned by
tests/test_algorithm_reference.py.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
from pathlib import Path

import pytest
import torch

from dcrl.algorithms import ALGORITHMS, get_algorithm_class, make_algorithm
from dcrl.algorithms.base import AlgorithmConfig, Preset, own_name
from dcrl.algorithms.composed import Composed, ComposedConfig
from dcrl.algorithms.grpo import GRPOConfig
from dcrl.core import losses as core_losses
from dcrl.step_data import TrainBatch
from dcrl.targets import TARGETS, Target, TargetConfig, get_target_class
from dcrl.targets.dcpo import DCPOConfig
from dcrl.targets.lp_f import LPFTarget
from dcrl.train.config import load_run_config
from dcrl.train.trainer import Trainer
from tests.helpers import tiny_config, tiny_overrides

TRAIN = Path(__file__).resolve().parents[1] / "dcrl" / "train"


# ------------------------------------------------------------------------------------------
# Each config carries its own name.
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_each_config_names_its_own_algorithm(name):
    algorithm_class = get_algorithm_class(name)
    assert algorithm_class.name == name
    assert own_name(algorithm_class.config_class) == name
    config = algorithm_class.config_class()
    assert config.name == name
    algorithm = make_algorithm(config)
    assert type(algorithm) is algorithm_class
    assert isinstance(algorithm, Composed if name == "composed" else Preset)


def test_a_config_of_another_method_cannot_build_it():
    with pytest.raises(
        ValueError, match=r"DCPOConfig\(name='grpo'\) cannot build algorithm 'grpo'"
    ):
        make_algorithm(DCPOConfig(name="grpo"))
    with pytest.raises(ValueError, match=r"AlgorithmConfig\(name='dcpo'\) .* reads a DCPOConfig"):
        make_algorithm(AlgorithmConfig(name="dcpo"))
    with pytest.raises(ValueError, match=r"reads a GRPOConfig"):
        make_algorithm(AlgorithmConfig())  # the base settings, not GRPO's own config
    with pytest.raises(ValueError, match=r"name: 'grpo' is not the algorithm DCPOConfig"):
        DCPOConfig(name="grpo").validate()
    assert make_algorithm(DCPOConfig()).name == "dcpo"
    assert make_algorithm(GRPOConfig()).name == "grpo"


def test_a_yaml_section_still_names_its_algorithm():
    config = load_run_config(None, tiny_overrides(Path("unused"), "kimi", "algorithm.weight=2"))
    assert type(config.algorithm).__name__ == "KimiConfig" and config.algorithm.weight == 2.0
    assert load_run_config(None, []).algorithm.name == "grpo"


# ------------------------------------------------------------------------------------------
# Presets are GRPO plus targets; LP-F exists once.
# ------------------------------------------------------------------------------------------


PRESET_TARGETS = {
    "grpo": None,
    "clip_higher": None,
    "clip_cov": None,
    "kl_cov": None,
    "aepo": "aepo",
    "dcpo": "dcpo",
    "icr": "icr",
    "lp_f": "lp_f",
    "kimi": "kimi",
    "shorter_better": "shorter_better",
    "entropy_adv": "entropy_adv",
    "entropy_reg": "entropy_reg",
}


@pytest.mark.parametrize("name", sorted(PRESET_TARGETS))
def test_a_preset_is_grpo_plus_its_one_target(name):
    algorithm = make_algorithm(get_algorithm_class(name).config_class())
    expected = PRESET_TARGETS[name]
    assert [t.name for t in algorithm.targets] == ([expected] if expected else [])
    if expected:
        assert type(algorithm.target) is get_target_class(expected)


@pytest.mark.parametrize("name", sorted(name for name, target in PRESET_TARGETS.items() if target))
def test_a_method_is_one_file_its_settings_target_and_preset(name):
    """The registries point at one module holding the target and the preset of the name, and the
    preset's config has every setting of the target's, with the same default and help."""
    algorithm_class = get_algorithm_class(name)
    target_class = get_target_class(name)
    assert (
        ALGORITHMS[name] == TARGETS[name] == algorithm_class.__module__ == target_class.__module__
    )
    assert algorithm_class.target_class is target_class
    preset_fields = {f.name: f for f in dataclasses.fields(algorithm_class.config_class)}
    for setting in dataclasses.fields(target_class.config_class):
        if setting.name != "name":
            preset = preset_fields[setting.name]
            assert (preset.default, preset.metadata) == (setting.default, setting.metadata)


def test_the_entropy_controllers_settings_are_declared_once():
    """AEPO and DCPO mix in EntropyControlFields and redeclare none of its fields."""
    from dcrl.targets.aepo import AEPOSettings
    from dcrl.targets.base import EntropyControlFields
    from dcrl.targets.dcpo import DCPOSettings

    shared = {f.name for f in dataclasses.fields(EntropyControlFields)}
    assert "target_entropy" in shared
    for settings in (AEPOSettings, DCPOSettings):
        assert issubclass(settings, EntropyControlFields)
        assert shared.isdisjoint(inspect.get_annotations(settings)), settings


def test_lp_f_exists_once_icr_runs_the_lp_f_target():
    icr = make_algorithm(
        load_run_config(None, ["algorithm.name=icr", "algorithm.lp_f_max_length=5000"]).algorithm
    )
    assert type(icr.target.lp_f) is LPFTarget
    assert (icr.target.lp_f.config.max_length, icr.target.lp_f.config.buffer) == (5000, 4096)
    no_lp_f = load_run_config(None, ["algorithm.name=icr", "algorithm.lp_f=false"]).algorithm
    assert make_algorithm(no_lp_f).target.lp_f is None


@pytest.mark.slow
@pytest.mark.parametrize("name", ["lp_f", "kimi", "shorter_better", "entropy_adv", "entropy_reg"])
def test_a_baseline_preset_trains_exactly_as_its_target_composed(tmp_path, name):
    """The preset and `composed` with its one target log the same steps (the reference values
    of the presets are in tests/test_algorithm_reference.py)."""

    def without_timings(history):
        return [
            {k: v for k, v in m.items() if not k.startswith(("time/", "perf/"))} for m in history
        ]

    preset = Trainer(tiny_config(tmp_path / "preset", name)).fit()
    composed = Trainer(
        tiny_config(tmp_path / "composed", "composed", f"algorithm.targets=[{name}]")
    )
    assert without_timings(composed.fit()) == without_timings(preset)


# ------------------------------------------------------------------------------------------
# A loss declares what it needs; a target may add a loss term.
# ------------------------------------------------------------------------------------------


def test_a_loss_declares_its_settings_its_random_source_and_its_micro_batch_order(monkeypatch):
    clip_cov = core_losses.policy_loss_spec("clip_cov")
    assert clip_cov.options == ("clip_cov_ratio", "clip_cov_lb", "clip_cov_ub")
    assert clip_cov.seeded and clip_cov.micro_batch_statistic
    assert not core_losses.policy_loss_spec("ppo_clip").micro_batch_statistic

    monkeypatch.setattr(core_losses, "_POLICY_LOSSES", dict(core_losses._POLICY_LOSSES))

    @core_losses.register_policy_loss("per_call_mean", micro_batch_statistic=True)
    def per_call_mean(logprobs, old_logprobs, advantages, mask, **options):
        return core_losses.ppo_clip_loss(logprobs, old_logprobs, advantages, mask, **options)

    config = AlgorithmConfig(policy_loss="per_call_mean")
    assert Composed(config, []).micro_batches_in_order
    assert not Composed(AlgorithmConfig(), []).micro_batches_in_order
    with pytest.raises(ValueError, match=r"unknown policy loss 'nonesuch'; registered: \["):
        AlgorithmConfig(policy_loss="nonesuch").validate()


class ConstantLoss(Target):
    """A user's target that only adds a loss term: 0.5 · mean log-prob of the micro-batch."""

    name = "constant_loss"

    def loss_term(self, mb, logprobs, entropy, counts):
        term = 0.5 * (logprobs * mb.response_mask).sum() / counts["num_tokens"]
        return term, {"constant_loss/term": float(term.detach())}


def test_a_target_adds_a_loss_term_beside_the_policy_loss():
    base = ComposedConfig()
    plain = Composed(base, [])
    with_term = Composed(base, [ConstantLoss(TargetConfig(name="constant_loss"), base)])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    batch = TrainBatch(
        input_ids=torch.zeros(2, 5, dtype=torch.long),
        attention_mask=torch.ones(2, 5, dtype=torch.long),
        response_mask=mask,
        old_logprobs=torch.full((2, 3), -1.0),
        advantages=torch.tensor([[1.0, 1.0, 0.0], [-1.0, 0.0, 0.0]]),
    )
    logprobs = torch.tensor([[-0.9, -1.2, 0.0], [-1.1, 0.0, 0.0]])
    counts = {"num_tokens": 3.0, "num_sequences": 2.0}
    loss, metrics = plain.loss(batch, logprobs, None, counts)
    total, total_metrics = with_term.loss(batch, logprobs, None, counts)
    term = 0.5 * (logprobs * mask).sum() / 3.0
    assert torch.equal(total, loss + term)
    assert total_metrics == {**metrics, "constant_loss/term": float(term)}


def test_entropy_reg_needs_the_entropy_graph_only_in_its_true_entropy_form():
    def algorithm(form):
        overrides = ["algorithm.name=entropy_reg", f"algorithm.form={form}"]
        return make_algorithm(load_run_config(None, overrides).algorithm)

    assert algorithm("true_entropy").needs_entropy_grad
    assert not algorithm("sampled_nll").needs_entropy_grad
    composed = load_run_config(
        None,
        ["algorithm.name=composed", "algorithm.targets=[{name: entropy_reg, form: true_entropy}]"],
    ).algorithm
    assert make_algorithm(composed).needs_entropy_grad


def test_only_a_row_replacing_target_names_foreign_rows():
    assert {n for n in TARGETS if get_target_class(n).foreign_rows} == {"aepo"}
    aepo = make_algorithm(load_run_config(None, ["algorithm.name=aepo"]).algorithm)
    marks = torch.tensor([True, False])
    assert aepo.foreign_rows({"is_reinforce": marks, "icr_selected": ~marks}) is marks
    assert aepo.foreign_rows({}) is None
    assert make_algorithm(GRPOConfig()).foreign_rows({"is_reinforce": marks}) is None


# ------------------------------------------------------------------------------------------
# The trainer knows no method.
# ------------------------------------------------------------------------------------------


def method_words() -> set[str]:
    """Names of methods, losses and target columns that only the registries may know."""
    losses = set(core_losses._POLICY_LOSSES) - {"ppo_clip"}
    targets = set(TARGETS)
    columns = {get_target_class(n).foreign_rows for n in TARGETS} - {None}
    return losses | targets | columns | (set(ALGORITHMS) - {"grpo", "composed"})


def words_in_code(path: Path) -> set[str]:
    """String constants (docstrings aside) and identifiers of a module."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    words: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if id(node) not in docstrings:
                words.add(node.value)
        elif isinstance(node, ast.Name):
            words.add(node.id)
        elif isinstance(node, ast.Attribute):
            words.add(node.attr)
    return words


@pytest.mark.parametrize("path", sorted(TRAIN.glob("*.py")), ids=lambda p: p.name)
def test_the_trainer_names_no_loss_target_or_target_column(path):
    assert words_in_code(path) & method_words() == set()
