r"""Rewards for answers that are compared as strings or numbers (synthetic and multiple-choice tasks).

Both follow the reward contract of `dcrl.rewards`: `fn(completion, answer, **meta) -> float` in
[0, 1]. The answer is taken from the completion by `extractor`, by default the last `\boxed{}`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from fractions import Fraction

from dcrl.rewards.extraction import extract_boxed

# Plain numbers: integers, decimals, scientific notation, thousands separators, simple fractions.
_NUMBER = re.compile(r"[+-]?(\d{1,3}(,\d{3})+(\.\d+)?|\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
_FRACTION = re.compile(r"([+-]?\d+)/(\d+)")


def exact_match_reward(
    completion: str,
    answer: str,
    *,
    extractor: Callable[[str], str | None] = extract_boxed,
    **meta: object,
) -> float:
    r"""1.0 if the extracted answer equals `answer` (both stripped of surrounding space), else 0.0.

    Args:
        completion: the model's response text.
        answer: the reference answer.
        extractor: text -> answer string or None (no answer scores 0); e.g.
            `functools.partial(extract_marked_answer, marker="#")`.
        **meta: the problem's metadata (unused).

    >>> exact_match_reward(r"I pick \boxed{B}", "B")
    1.0
    >>> exact_match_reward(r"I pick \boxed{b}", "B")
    0.0
    """
    extracted = extractor(completion)
    return float(extracted is not None and extracted.strip() == answer.strip())


def _parse_number(text: str) -> float | None:
    """`text` as a float if it is a plain number ("-12", "3.5", "1,000", "2e-3", "3/4"), else None."""
    text = text.strip().strip("$").strip()
    fraction = _FRACTION.fullmatch(text)
    if fraction is not None:
        denominator = int(fraction[2])
        return float(Fraction(int(fraction[1]), denominator)) if denominator else None
    if not _NUMBER.fullmatch(text):
        return None
    return float(text.replace(",", ""))


def numeric_reward(
    completion: str,
    answer: str,
    tol: float = 1e-6,
    *,
    extractor: Callable[[str], str | None] = extract_boxed,
    **meta: object,
) -> float:
    r"""1.0 if the extracted answer is a number within `tol` (absolute) of `answer`, else 0.0.

    Args:
        completion: the model's response text.
        answer: the reference number as text ("14", "-0.25", "3/4").
        tol: absolute tolerance, |prediction - answer| <= tol. A problem's metadata may carry its
            own `tol`, since metadata is passed as keyword arguments.
        extractor: text -> answer string or None (no answer, or not a number, scores 0).
        **meta: the problem's other metadata (unused).

    Raises:
        ValueError: if `answer` itself is not a number (a data error, not a wrong response).

    >>> numeric_reward(r"\boxed{0.75}", "3/4")
    1.0
    >>> numeric_reward(r"\boxed{0.7}", "3/4", tol=0.01)
    0.0
    """
    gold = _parse_number(answer)
    if gold is None:
        raise ValueError(
            f"numeric_reward: the reference answer {answer!r} is not a plain number; use the "
            "'math' reward for symbolic answers or fix the dataset's answer column."
        )
    extracted = extractor(completion)
    prediction = _parse_number(extracted) if extracted is not None else None
    if prediction is None or not math.isfinite(prediction):
        return 0.0
    return float(abs(prediction - gold) <= tol)
