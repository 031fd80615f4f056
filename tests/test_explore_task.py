"""The exploration testbed's task (dcrl.tasks.explore): what each strategy gets right, that checks
never change an answer, the kind mix of the splits, and the profile's arithmetic."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from dcrl.eval.gates import _stats, pretraining_gates
from dcrl.tasks import get_task
from dcrl.tasks.explore import ExploreTask, checks_of, kind_of, strategy_of
from dcrl.tasks.problem import Problem


def _solutions(task: ExploreTask, prompt: str, answer: str, kind: str, draws: int = 400):
    rng = random.Random(0)
    problem = Problem(prompt=prompt, answer=answer, id="p", meta={"kind": kind})
    return [task.solution(problem, rng) for _ in range(draws)]


def test_kinds_follow_the_units_carry():
    assert kind_of(47, 35) == "trap"  # 7 + 5 carries
    assert kind_of(43, 35) == "plain"
    assert kind_of(45, 55) == "trap"  # 5 + 5 = 10 carries too


def test_fast_is_right_on_plain_and_wrong_on_traps_decompose_right_on_both():
    task = ExploreTask(decompose_slip=0.0)
    for prompt, answer, kind in (("43+35=", "78", "plain"), ("47+35=", "82", "trap")):
        by_strategy: dict[str, set[float]] = {}
        for text in _solutions(task, prompt, answer, kind):
            by_strategy.setdefault(strategy_of(text), set()).add(task.verify(text, answer))
        assert by_strategy["decompose"] == {1.0}
        assert by_strategy["fast"] == ({1.0} if kind == "plain" else {0.0})
    # The fast strategy's trap mistake is the forgotten carry: 47 + 35 -> 72.
    fast = next(t for t in _solutions(task, "47+35=", "82", "trap") if t.startswith("f"))
    assert fast.endswith("#72") and fast.startswith("f72")


def test_checks_restate_the_result_and_never_change_the_answer():
    task = ExploreTask(decompose_slip=0.0, check_weights=(0, 0, 0, 1))  # always 3 checks
    for text in _solutions(task, "47+35=", "82", "trap", draws=50):
        if strategy_of(text) == "guess":
            assert checks_of(text) == 0
            continue
        assert checks_of(text) == 3
        result = text.split("#")[1]
        assert text.count(f",35+47={result}") == 3
    decompose = "d7+5=12,40+30=70,70+12=82,35+47=82#82"
    assert checks_of(decompose) == 1 and task.verify(decompose, "82") == 1.0


def test_decompose_slips_at_its_rate_and_guesses_stay_within_their_spread():
    task = ExploreTask(strategy_weights=(0, 1, 0), decompose_slip=0.25)
    texts = _solutions(task, "43+35=", "78", "plain", draws=2000)
    wrong = sum(task.verify(t, "78") == 0 for t in texts) / len(texts)
    assert abs(wrong - 0.25) < 4 * (0.25 * 0.75 / len(texts)) ** 0.5  # 4 standard errors
    guesser = ExploreTask(strategy_weights=(0, 0, 1), guess_spread=2)
    guesses = {int(t.split("#")[1]) for t in _solutions(guesser, "43+35=", "78", "plain")}
    assert guesses == set(range(76, 81))


def test_splits_are_disjoint_and_mix_kinds_as_configured():
    task = get_task("explore", seed=3, trap_share=0.25)
    train = task.problems("train", 2000)
    test = task.problems("test", 2000)
    assert not {p.prompt for p in train} & {p.prompt for p in test}
    for problems, share in ((train, 0.25), (test, 0.5)):
        kinds = Counter(p.meta["kind"] for p in problems)
        assert abs(kinds["trap"] / len(problems) - share) < 0.05
        for p in problems:
            a, b = (int(x) for x in p.prompt[:-1].split("+"))
            assert p.meta["kind"] == kind_of(a, b) and p.answer == str(a + b)
    assert [p.solution for p in train[:50]] == [
        p.solution for p in get_task("explore", seed=3, trap_share=0.25).problems("train", 50)
    ]


@pytest.mark.parametrize(
    "bad",
    [
        {"trap_share": 1.5},
        {"strategy_weights": (1, 0)},
        {"decompose_slip": 1.0},
        {"guess_spread": 12},
    ],
)
def test_bad_settings_are_refused_by_name(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        ExploreTask(**bad)


def test_profile_statistics_and_gates_against_hand_counts():
    problems = [
        Problem("43+35=", "78", "a", {"kind": "plain"}),
        Problem("47+35=", "82", "b", {"kind": "trap"}),
    ]
    rows = []
    # plain: 2 samples, both right (one fast with a check, one decompose without);
    # trap: 2 samples, one wrong fast, one right decompose.
    for group, kind, score, strategy, checks in (
        (0, "plain", 1.0, "fast", 1),
        (0, "plain", 1.0, "decompose", 0),
        (1, "trap", 0.0, "fast", 0),
        (1, "trap", 1.0, "decompose", 2),
    ):
        rows.append(
            {
                "group": group,
                "kind": kind,
                "score": score,
                "strategy": strategy,
                "checks": checks,
                "length": 10,
            }
        )
    stats = _stats(rows, problems, samples=2)
    assert stats["accuracy"] == 0.75
    assert stats["mixed_groups"] == 0.5  # the trap group mixes, the plain one does not
    assert stats["trap"]["accuracy"] == 0.5 and stats["trap"]["pass@2"] == 1.0
    assert stats["correct_strategy_share"] == {"decompose": 2 / 3, "fast": 1 / 3}
    assert stats["plain_with_checks"] == 1.0 and stats["plain_without_checks"] == 1.0
    assert stats["checks"] == 0.75
    profile = {"samples": 2, "train": {"1.0": stats, "1.5": stats}, "test": {"1.0": stats}}
    gates = {row["gate"]: row for row in pretraining_gates(profile)}
    assert gates["accuracy at T = 1 (training prompts)"]["met"] is True  # 0.75 in 0.45 .. 0.8
    assert gates["largest pass@2 - avg@2 over kinds (held out)"]["value"] == 0.5
    # One sample each side, both right: no difference and no noise, so the gate is met at 0.
    checks_gate = gates["plain problems: accuracy with checks minus without (T = 1)"]
    assert checks_gate["value"] == 0.0 and checks_gate["met"] is True
    worse = dict(stats, plain_with_checks=0.8, plain_with_checks_n=100, plain_without_checks_n=100)
    worse_gate = pretraining_gates({**profile, "train": {"1.0": worse}})[-1]
    # 2 * sqrt(0.8 * 0.2 / 100 + 0) = 0.08 allowed; the difference is -0.2
    assert worse_gate["goal"].startswith(">= -0.080") and worse_gate["met"] is False


@pytest.mark.slow
def test_shipped_checkpoint_passes_its_gates_at_a_small_size():
    """tiny-explore, before any RL, at 32 prompts x 16 samples (bench/testbed_gates.py measures
    the same gates at 256 prompts): accuracy in range at T = 1 and enough of it at T = 1.5, two
    strategies among the correct answers, mixed groups, a pass@16 - avg@16 gap, harmless checks;
    and the entropy sits at the fork, not on the calculation."""
    import torch

    from dcrl.eval.gates import profile_testbed
    from dcrl.models import load_policy

    torch.manual_seed(0)
    model, tokenizer = load_policy("tiny-explore")
    profile = profile_testbed(
        model, tokenizer, get_task("explore"), prompts=32, samples=16, temperatures=(1.0, 1.5)
    )
    failed = [row for row in pretraining_gates(profile) if not row["met"]]
    assert not failed, failed
    assert profile["nll"]["fork"] > 0.5 > 0.15 > profile["nll"]["rest"]
