"""What verl's entry point needs on disk: the built-in tiny policy saved as a Hugging Face folder
(with a chat template, which verl's agent loop applies) and a small math parquet dataset in
verl's RLHF layout (chat prompt, data_source, reward_model.ground_truth)."""

from pathlib import Path

import pandas as pd

from dcrl.models.tiny import build_tiny_model, save_tiny_model

# A chat template over the tiny alphabet: the user turns' text, nothing added.
TINY_CHAT_TEMPLATE = "{% for message in messages %}{{ message['content'] }}{% endfor %}"


def tiny_policy_folder(directory: Path) -> Path:
    """The tiny policy as a Hugging Face folder (config, weights, tokenizer with a template)."""
    model, tokenizer = build_tiny_model()
    tokenizer.chat_template = TINY_CHAT_TEMPLATE
    return save_tiny_model(model, tokenizer, directory)


def math_parquet(path: Path, num_rows: int = 8) -> Path:
    """`num_rows` additions "a+b=" with their sums as ground truth, data_source openai/gsm8k (a
    source verl's default reward function grades)."""
    rows = []
    for index in range(num_rows):
        a, b = index + 1, 2 * index + 3
        rows.append(
            {
                "data_source": "openai/gsm8k",
                "prompt": [{"role": "user", "content": f"{a}+{b}="}],
                "ability": "math",
                "reward_model": {"style": "rule", "ground_truth": str(a + b)},
                "extra_info": {"index": index, "split": path.stem},
            }
        )
    pd.DataFrame(rows).to_parquet(path)
    return path
