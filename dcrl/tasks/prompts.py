r"""Turning a problem's text into the prompt the policy sees.

The papers' prompt (docs/papers.md §1.2; arXiv 2510.08141, 2601.12730, 2605.07316 via EasyR1's
`verl/utils/dataset.py`) is the problem, a space, and an instruction to reason inside
`<think></think>` and put the final answer in `\boxed{}`, wrapped in the tokenizer's chat template
as one user turn. dcrl's instruction says the same in its own words.
"""

from __future__ import annotations

from typing import Any

BOXED_INSTRUCTION = (
    "Reason through the problem step by step inside <think> </think> tags, "
    "then write only the final answer inside \\boxed{}."
)

PROMPT_TEMPLATES = ("boxed", "plain", "chat")


def format_prompt(problem_text: str, tokenizer: Any = None, *, template: str = "boxed") -> str:
    r"""The prompt for `problem_text` under `template`.

    Args:
        problem_text: the problem.
        tokenizer: a Hugging Face tokenizer with a chat template; needed only for "chat".
        template: one of
            "boxed": the problem, a space, and `BOXED_INSTRUCTION` (for base models);
            "plain": the problem text unchanged (synthetic tasks, few-shot prompts);
            "chat": the "boxed" prompt as one user turn of the tokenizer's chat template, with
            the assistant turn opened (the papers' prompt);
            any other string containing "{problem}": that string with the problem substituted
            (other braces, such as `\boxed{}`, are kept as written).

    Raises:
        ValueError: an unknown template, or "chat" with a tokenizer that has no chat template.

    >>> format_prompt("1+1=", template="plain")
    '1+1='
    >>> format_prompt("What is 1+1?", template="Q: {problem}\nA: \\boxed{}")
    'Q: What is 1+1?\nA: \\boxed{}'
    """
    if template == "plain":
        return problem_text
    if template == "boxed":
        return f"{problem_text} {BOXED_INSTRUCTION}"
    if template == "chat":
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise ValueError(
                "format_prompt(template='chat') needs a tokenizer with a chat template, but "
                f"{'no tokenizer was given' if tokenizer is None else 'this tokenizer has none'}."
                " Use an instruction-tuned model's tokenizer, set tokenizer.chat_template, or use "
                "template='boxed' for a base model."
            )
        messages = [{"role": "user", "content": f"{problem_text} {BOXED_INSTRUCTION}"}]
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    if "{problem}" in template:
        return template.replace("{problem}", problem_text)
    raise ValueError(
        f"unknown prompt template {template!r}: use one of {list(PROMPT_TEMPLATES)} or a format "
        "string containing '{problem}'."
    )
