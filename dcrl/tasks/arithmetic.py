"""The synthetic reasoning task: multi-step arithmetic chains with worked solutions of varying length.

A problem is a chain such as `12+5-3=`, evaluated left to right. Its worked solution writes one
running partial result per step and ends with the answer after a fixed marker:

    concise:  12+5=17,17-3=14#14
    verbose:  12+5=17,17-5=12,17-3=14,check 14#14

Verbose solutions insert redundant re-checks after a step (the inverse operation, or restating the
result), each with probability `verbosity`, so supervised pre-training on a mix of both teaches the
policy to over-think: a correct answer can be reached in fewer characters, and length-control
methods (ICR, arXiv 2605.07316) have redundancy to remove. The text uses only
`SYNTHETIC_ALPHABET`, so a character-level tokenizer can be built from it.

With `answer_format="line"` the task grades the other common format instead: the answer alone on
the first non-blank line of the completion (`7`, or ` 7\\nQ: ...` when a few-shot model goes on to
invent the next question), which is what an instruction-tuned model writes under a few-shot prompt
such as `"Q: 2+3=\\nA: 5\\nQ: {problem}\\nA:"` (the recipe smollm2-135m-addition).

Difficulty `level` is the number of operations, hence of solution steps. The problem space is split
in two halves by a hash of the problem text; "train" and "test" draw from different halves, so the
splits are disjoint whatever their sizes, and each is a deterministic function of (seed, split).
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
ANSWER_FORMATS = ("marker", "line")

# Every character a problem or a worked solution can contain (order fixes character token ids).
SYNTHETIC_ALPHABET = "0123456789+-*=, \n#chek"

_STEP = re.compile(r"([+\-*])(\d+)")
_CHAIN = re.compile(r"(\d+)((?:[+\-*]\d+)+)=")  # first operand, then the steps
_INTEGER = re.compile(r"-?\d+")


def _apply(left: int, operator: str, right: int) -> int:
    if operator == "+":
        return left + right
    if operator == "-":
        return left - right
    return left * right


class ArithmeticChainTask:
    """Multi-step arithmetic chains (see the module docstring).

    Args:
        level: the number of operations per problem (1 = `a+b=`), or several levels to mix; each
            problem draws its level uniformly from them.
        seed: fixes both splits and the solutions' redundancy pattern.
        max_digits: operands are drawn uniformly from 1 .. 10**max_digits - 1; the right operand of
            `*` from 1..9, so numbers stay short.
        operators: the operators to draw from, a subset of "+-*". Chains are evaluated left to
            right (no precedence), as the worked solution shows; with "*" the written chain does
            not follow the usual precedence, so "+-" is the default.
        verbosity_levels: the verbosities that `Problem.solution` is drawn from, uniformly per
            problem; 0 is concise, 1 re-checks every step.
        answer_format: where `verify` reads the answer. "marker": after the last `#`, the
            worked-solution format. "line": the first non-blank line of the completion, which
            must be the integer alone (spaces around it allowed); the rest of the completion is
            ignored, so a few-shot model that goes on to write the next question still scores.
            With "line", `solution` is the bare answer.
        slip_rate: the over-thinking regime. When > 0, every redundant re-check restates the
            running value (`check 17`) and the chain goes on from the restated value; with this
            probability the restatement is a slip (off by 1-3), so the worked solution ends on a
            wrong answer. A policy that imitates such solutions is more often wrong the more it
            re-checks: longer answers are less accurate (ICR's over-thinking, arXiv 2605.07316).
            Solutions with slips are still the targets of pretraining: they are the noisy
            reasoning the RL stage has to unlearn.

    With the defaults (2 digits, "+-") and level L <= 10, a concise solution has at most 13 L + 4
    characters (12 per step, the commas, the marker and answer): 43 at level 3. A fully verbose
    one is about twice as long.
    """

    prompt_template = "plain"

    def __init__(
        self,
        level: int | Sequence[int] = 2,
        seed: int = 0,
        *,
        max_digits: int = 2,
        operators: str = "+-",
        verbosity_levels: Sequence[float] = (0.0, 0.5, 1.0),
        answer_format: str = "marker",
        slip_rate: float = 0.0,
    ) -> None:
        self.levels = (level,) if isinstance(level, int) else tuple(level)
        if not self.levels or any(not isinstance(lv, int) or lv < 1 for lv in self.levels):
            raise ValueError(
                f"ArithmeticChainTask: level={level!r}; use an integer >= 1 (operations per "
                "problem) or a list of them."
            )
        if not 1 <= max_digits <= 3:
            raise ValueError(f"ArithmeticChainTask: max_digits={max_digits}; use 1, 2 or 3.")
        if not operators or set(operators) - set("+-*"):
            raise ValueError(
                f"ArithmeticChainTask: operators={operators!r}; use a non-empty subset of '+-*'."
            )
        if not verbosity_levels or any(not 0.0 <= v <= 1.0 for v in verbosity_levels):
            raise ValueError(
                f"ArithmeticChainTask: verbosity_levels={verbosity_levels!r}; use probabilities "
                "in [0, 1]."
            )
        if answer_format not in ANSWER_FORMATS:
            raise ValueError(
                f"ArithmeticChainTask: answer_format={answer_format!r}; use 'marker' (the answer "
                "after the last '#') or 'line' (the answer alone on the first line)."
            )
        if not 0.0 <= slip_rate < 1.0:
            raise ValueError(
                f"ArithmeticChainTask: slip_rate={slip_rate!r}; use a probability in [0, 1) "
                "(0: re-checks never change the running value)."
            )
        self.seed = seed
        self.slip_rate = float(slip_rate)
        self.max_digits = max_digits
        self.operators = operators
        self.verbosity_levels = tuple(verbosity_levels)
        self.answer_format = answer_format

    @staticmethod
    def split_of(prompt: str) -> str:
        """The split ("train" or "test") whose half of the problem space holds `prompt`."""
        return "test" if zlib.crc32(prompt.encode()) & 1 else "train"

    def problems(self, split: str = "train", size: int | None = None) -> list[Problem]:
        """`size` distinct problems of `split`, each with a worked solution; deterministic.

        Raises:
            ValueError: an unknown split, no size, or more problems than the settings allow.
        """
        if split not in ("train", "test"):
            raise ValueError(
                f"ArithmeticChainTask: unknown split {split!r}; use 'train' or 'test'."
            )
        if size is None or size < 0:
            raise ValueError(
                f"ArithmeticChainTask.problems: size={size!r}; the task is generated, so pass how "
                "many problems to make."
            )
        rng = random.Random(
            f"arith:{self.seed}:{split}:{self.levels}:{self.max_digits}:{self.operators}"
        )
        largest_operand = 10**self.max_digits - 1
        problems: list[Problem] = []
        seen: set[str] = set()
        for _ in range(50 * size + 1000):  # bounded: small settings have few distinct chains
            if len(problems) == size:
                return problems
            level = rng.choice(self.levels)
            value = rng.randint(1, largest_operand)
            chain = str(value)
            for _ in range(level):
                operator = rng.choice(self.operators)
                operand = rng.randint(1, 9 if operator == "*" else largest_operand)
                chain += f"{operator}{operand}"
                value = _apply(value, operator, operand)
            prompt = chain + "="
            if prompt in seen or self.split_of(prompt) != split:
                continue
            seen.add(prompt)
            verbosity = rng.choice(self.verbosity_levels)
            problem = Problem(
                prompt=prompt,
                answer=str(value),
                id=f"arith-{split}-{len(problems)}",
                meta={"level": level, "solution_verbosity": verbosity},
            )
            problem.solution = self.solution(problem, verbosity)
            problems.append(problem)
        if len(problems) == size:
            return problems
        raise ValueError(
            f"ArithmeticChainTask: found only {len(problems)} distinct {split} problems of the "
            f"{size} asked for with levels={self.levels}, max_digits={self.max_digits}, "
            f"operators={self.operators!r}; ask for fewer or widen the settings."
        )

    def solution(self, problem: Problem, verbosity: float = 0.0) -> str:
        """The worked solution of `problem`: one step per operation, then the answer marker.

        After each step a redundant re-check is inserted with probability `verbosity`: the
        inverse operation for + and - (`17-3=14` then `14+3=17`), otherwise `check 14`. The
        pattern is a fixed function of (seed, problem text, verbosity). With `slip_rate` > 0 every
        re-check is `check <value>`, the chain continues from that value, and it is wrong with
        probability `slip_rate` (then so is the solution's final answer). With
        `answer_format="line"` the solution is the answer alone (`verbosity` has no effect).
        """
        chain = _CHAIN.fullmatch(problem.prompt)
        if chain is None:
            raise ValueError(
                f"ArithmeticChainTask.solution: {problem.prompt!r} is not a chain like '12+5-3='."
            )
        rng = random.Random(f"solution:{self.seed}:{problem.prompt}:{verbosity}")
        value = int(chain[1])
        steps = []
        for operator, operand_text in _STEP.findall(chain[2]):
            operand = int(operand_text)
            result = _apply(value, operator, operand)
            steps.append(f"{value}{operator}{operand}={result}")
            if rng.random() < verbosity:
                if self.slip_rate > 0.0:
                    if rng.random() < self.slip_rate:
                        result += rng.choice((-3, -2, -1, 1, 2, 3))
                    steps.append(f"check {result}")
                elif operator in "+-" and rng.random() < 0.5:
                    inverse = "-" if operator == "+" else "+"
                    steps.append(f"{result}{inverse}{operand}={value}")
                else:
                    steps.append(f"check {result}")
            value = result
        if self.answer_format == "line":
            return str(value)
        return ",".join(steps) + ANSWER_MARKER + str(value)

    def verify(self, completion: str, answer: str, **meta: Any) -> float:
        """1.0 if the completion's answer is the integer `answer`, else 0.0.

        The reward contract of `dcrl.rewards`. With `answer_format="marker"` the answer is the
        rest of the line after the last answer marker; with "line", the first non-blank line.
        Either must be exactly an integer once stripped of surrounding spaces.

        >>> ArithmeticChainTask().verify("12+5=17,17-3=14#14", "14")
        1.0
        >>> ArithmeticChainTask(answer_format="line").verify(" 14\\nQ: 2+2=\\nA: 4", "14")
        1.0
        """
        if self.answer_format == "line":
            extracted = completion.lstrip().split("\n", 1)[0].strip()
        else:
            extracted = extract_marked_answer(completion, ANSWER_MARKER)
        if extracted is None or not _INTEGER.fullmatch(extracted):
            return 0.0
        return float(int(extracted) == int(answer))
