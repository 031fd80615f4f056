"""Pulling the final answer out of a completion: the last `\\boxed{...}`, or a fixed answer marker.

Both run in time linear in the completion's length, so a megabyte of model output costs
milliseconds, never a hang.
"""

from __future__ import annotations

import re

# `\boxed{`, `\boxed {` and `\fbox{`; the command name must end there (`\boxedx{` is not a box).
_BOX_OPENING = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])\s*\{")


def extract_boxed(text: str) -> str | None:
    r"""The content of the last `\boxed{...}` (or `\fbox{...}`) in `text`, or None.

    Braces are balanced, so nested groups such as `\boxed{\frac{1}{2}}` come out whole, and the
    escaped braces `\{` `\}` of a LaTeX set do not count. If the last box is never closed (a
    generation cut off mid-answer), there is no answer: None, not an earlier box. This is the
    papers' answer extraction (arXiv 2510.08141 / 2601.12730 use EasyR1's
    `extract_boxed_content`; docs/papers.md §1.2, §6).

    >>> extract_boxed(r"so x = \boxed{1} ... no: \boxed {\frac{1}{2}}")
    '\\frac{1}{2}'
    >>> extract_boxed("no box here") is None
    True
    """
    last_opening = None
    for opening in _BOX_OPENING.finditer(text):
        last_opening = opening
    if last_opening is None:
        return None
    depth = 1
    position = last_opening.end()
    while position < len(text):
        char = text[position]
        if char == "\\":
            position += 2  # `\{`, `\}` and `\\` are literal characters, not grouping
            continue
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return text[last_opening.end() : position]
        position += 1
    return None


def extract_marked_answer(text: str, marker: str) -> str | None:
    """What follows the last `marker` in `text`, up to the end of that line, stripped; or None.

    None when the marker is absent or nothing but whitespace follows it. The synthetic tasks end
    their worked solutions with a fixed marker (`dcrl.tasks.arithmetic.ANSWER_MARKER`, "#").

    >>> extract_marked_answer("12+5=17,17-3=14#14", "#")
    '14'
    >>> extract_marked_answer("#3 then #4\\nmore text", "#")
    '4'
    """
    if not marker:
        raise ValueError(
            "extract_marked_answer: `marker` is empty; pass the answer marker, e.g. '#'."
        )
    start = text.rfind(marker)
    if start < 0:
        return None
    answer = text[start + len(marker) :].split("\n", 1)[0].strip()
    return answer or None
