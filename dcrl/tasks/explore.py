"""The exploration testbed: two-digit additions solved by one of three strategies, some of which
fail on some problems, with redundant checks that cost length but never accuracy.

A problem is `a+b=` with a, b in 10..99. It is **plain** when the units digits do not carry
(`a % 10 + b % 10 < 10`) and a **trap** when they do. A worked solution starts with one letter
that names its strategy, the fork where the useful entropy sits:

    fast:       f72                         the digit-wise sum, forgetting the carry: right on
                                            plain problems, always wrong on traps (47+35 -> 72)
    decompose:  d7+5=12,40+30=70,70+12=82   units, tens, then their sum: right on both kinds,
                                            about four times as long; its last addition slips
                                            (off by 1 or 2) with probability `decompose_slip`
    guess:      g#84                        an answer only: the sum moved by a random offset
                                            within `guess_spread`, right by luck

then 0-3 checks that restate the strategy's result with the operands swapped (`,35+47=82`) —
redundant work that copies the result, so it never changes the answer, on either kind — and
the answer after the marker: `#82`. Guesses have no checks.

In pretraining the strategy and the number of checks are drawn independently of the problem's
kind, so the pretrained policy picks its strategy without looking at the carry: the cue that
decomposition is needed is in the prompt, but nothing taught the policy to read it at the fork.
Why this models the papers' mechanisms (docs/testbed.md has the full argument):

- exploration pays: the common strategy fails on traps, so a policy that keeps decomposing
  while it learns *when* to decompose ends more accurate than one that collapses onto the fast
  strategy, which most training prompts (plain ones) reward;
- too much entropy hurts: heated samples that are correct by luck (guesses) are reinforced
  as well, and guesses do not generalize;
- over-thinking is harmless: checks cost length and not accuracy, so outcome rewards alone
  leave them in place, and a length method that keeps the shortest *correct* answer can remove
  them, while a uniform length penalty also removes the decompositions that traps need.

Training draws plain problems with probability `trap_share`'s complement; the held-out split
is half plain, half trap (`test_trap_share`), and `Problem.meta["kind"]` says which, so
evaluation can report each kind. The two splits come from disjoint halves of the problem
space (a hash of the prompt).
"""

from __future__ import annotations

import random
import re
import zlib
from collections.abc import Sequence
from typing import Any

from dcrl.rewards import extract_marked_answer
from dcrl.tasks.problem import Problem

ANSWER_MARKER = "#"
# Every character a prompt or a worked solution can contain (order fixes character token ids).
EXPLORE_ALPHABET = "0123456789+=,#fdg"
STRATEGIES = {"f": "fast", "d": "decompose", "g": "guess"}
KINDS = ("plain", "trap")

_PROMPT = re.compile(r"(\d\d)\+(\d\d)=")
_INTEGER = re.compile(r"-?\d+")


def kind_of(a: int, b: int) -> str:
    """ "trap" when the units digits of a + b carry, else "plain"."""
    return "trap" if a % 10 + b % 10 >= 10 else "plain"


def strategy_of(completion: str) -> str:
    """The strategy a completion used ("fast", "decompose", "guess"), or "other"."""
    return STRATEGIES.get(completion[:1], "other")


def checks_of(completion: str) -> int:
    """How many checks (`,b+a=r` after the strategy's body) a completion wrote."""
    body = completion.split(ANSWER_MARKER, 1)[0]
    if strategy_of(completion) == "decompose":
        return max(0, body.count(",") - 2)  # the decomposition's own two commas
    return body.count(",")


def _check_probabilities(name: str, values: Sequence[float], size: int | None) -> tuple:
    values = tuple(float(v) for v in values)
    if (size is not None and len(values) != size) or any(v < 0 for v in values):
        raise ValueError(
            f"ExploreTask: {name}={list(values)!r}; use {size or 'some'} non-negative weights."
        )
    if sum(values) <= 0:
        raise ValueError(f"ExploreTask: {name}={list(values)!r}; the weights sum to 0.")
    return values


class ExploreTask:
    """Two-digit additions with three strategies and harmless checks (see the module docstring).

    Args:
        seed: fixes both splits and the solutions' strategy, checks and slips.
        trap_share: the fraction of trap problems in the training split.
        test_trap_share: the fraction of trap problems in the held-out split.
        strategy_weights: relative frequencies of fast, decompose and guess in the worked
            solutions (pretraining data), drawn independently of the problem's kind.
        check_weights: relative frequencies of 0, 1, 2, ... checks after the strategy's body.
        decompose_slip: the probability that a decomposition's last addition is off by 1 or 2.
        guess_spread: a guess is the true sum plus an offset drawn uniformly from
            -guess_spread .. guess_spread, so it is right with probability 1 / (2 spread + 1).
    """

    prompt_template = "plain"

    def __init__(
        self,
        seed: int = 0,
        *,
        trap_share: float = 0.25,
        test_trap_share: float = 0.5,
        strategy_weights: Sequence[float] = (0.65, 0.27, 0.08),
        check_weights: Sequence[float] = (0.4, 0.35, 0.15, 0.1),
        decompose_slip: float = 0.2,
        guess_spread: int = 4,
    ) -> None:
        for name, share in (("trap_share", trap_share), ("test_trap_share", test_trap_share)):
            if not 0.0 <= share <= 1.0:
                raise ValueError(f"ExploreTask: {name}={share!r}; use a fraction in [0, 1].")
        if not 0.0 <= decompose_slip < 1.0:
            raise ValueError(
                f"ExploreTask: decompose_slip={decompose_slip!r}; use a probability in [0, 1)."
            )
        if not isinstance(guess_spread, int) or not 0 <= guess_spread <= 9:
            raise ValueError(f"ExploreTask: guess_spread={guess_spread!r}; use 0 .. 9.")
        self.seed = seed
        self.trap_share = float(trap_share)
        self.test_trap_share = float(test_trap_share)
        self.strategy_weights = _check_probabilities("strategy_weights", strategy_weights, 3)
        self.check_weights = _check_probabilities("check_weights", check_weights, None)
        self.decompose_slip = float(decompose_slip)
        self.guess_spread = guess_spread

    @staticmethod
    def split_of(prompt: str) -> str:
        """The split ("train" or "test") whose half of the problem space holds `prompt`."""
        return "test" if zlib.crc32(prompt.encode()) & 1 else "train"

    def problems(self, split: str = "train", size: int | None = None) -> list[Problem]:
        """`size` distinct problems of `split`, each with a worked solution; deterministic.

        Problems repeat only when `size` exceeds the split's distinct problems of a kind
        (about 2,000 plain and 2,000 trap per split); each copy keeps its own worked solution,
        so pretraining sees the strategies in their proportions.

        Raises:
            ValueError: an unknown split or no size.
        """
        if split not in ("train", "test"):
            raise ValueError(f"ExploreTask: unknown split {split!r}; use 'train' or 'test'.")
        if size is None or size < 0:
            raise ValueError(
                f"ExploreTask.problems: size={size!r}; the task is generated, so pass how many "
                "problems to make."
            )
        pools: dict[str, list[tuple[int, int]]] = {kind: [] for kind in KINDS}
        for a in range(10, 100):
            for b in range(10, 100):
                if self.split_of(f"{a}+{b}=") == split:
                    pools[kind_of(a, b)].append((a, b))
        rng = random.Random(f"explore:{self.seed}:{split}")
        for pool in pools.values():
            rng.shuffle(pool)
        share = self.trap_share if split == "train" else self.test_trap_share
        problems: list[Problem] = []
        used = dict.fromkeys(KINDS, 0)
        for index in range(size):
            kind = "trap" if rng.random() < share else "plain"
            pool = pools[kind]
            a, b = pool[used[kind] % len(pool)]
            used[kind] += 1
            problem = Problem(
                prompt=f"{a}+{b}=",
                answer=str(a + b),
                id=f"explore-{split}-{index}",
                meta={"kind": kind},
            )
            problem.solution = self.solution(problem, rng)
            problems.append(problem)
        return problems

    def solution(self, problem: Problem, rng: random.Random | None = None) -> str:
        """A worked solution of `problem`: strategy, checks and answer drawn from `rng`."""
        match = _PROMPT.fullmatch(problem.prompt)
        if match is None:
            raise ValueError(f"ExploreTask.solution: {problem.prompt!r} is not like '47+35='.")
        rng = rng or random.Random(f"solution:{self.seed}:{problem.prompt}")
        a, b = int(match[1]), int(match[2])
        strategy = rng.choices("fdg", weights=self.strategy_weights)[0]
        if strategy == "g":
            offset = rng.randint(-self.guess_spread, self.guess_spread)
            return f"g{ANSWER_MARKER}{max(0, a + b + offset)}"
        if strategy == "f":
            result = (a // 10 + b // 10) * 10 + (a + b) % 10
            body = f"f{result}"
        else:
            units, tens = a % 10 + b % 10, (a // 10 + b // 10) * 10
            result = units + tens
            if rng.random() < self.decompose_slip:
                result += rng.choice((-2, -1, 1, 2))
            body = (
                f"d{a % 10}+{b % 10}={units},{a // 10}0+{b // 10}0={tens},{tens}+{units}={result}"
            )
        checks = rng.choices(range(len(self.check_weights)), weights=self.check_weights)[0]
        body += f",{b}+{a}={result}" * checks
        return f"{body}{ANSWER_MARKER}{result}"

    def verify(self, completion: str, answer: str, **meta: Any) -> float:
        """1.0 if the integer after the completion's last `#` is `answer`, else 0.0.

        >>> ExploreTask().verify("d7+5=12,40+30=70,70+12=82#82", "82")
        1.0
        >>> ExploreTask().verify("f72,35+47=72#72", "82")
        0.0
        """
        extracted = extract_marked_answer(completion, ANSWER_MARKER)
        if extracted is None or not _INTEGER.fullmatch(extracted):
            return 0.0
        return float(int(extracted) == int(answer))
