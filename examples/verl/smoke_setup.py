"""Files for examples/verl/gpu_smoke.sh, made offline from what this repository ships: the
built-in tiny-arith policy as a Hugging Face folder (with a chat template that passes the
prompt through, which verl's agent loop applies), and arithmetic prompts as verl parquet files.

    python examples/verl/smoke_setup.py OUT_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from dcrl.models.loading import builtin_checkpoint_directory
from dcrl.tasks import get_task

# The user turns' text, nothing added: tiny-arith was pretrained on the bare problem text.
CHAT_TEMPLATE = "{% for message in messages %}{{ message['content'] }}{% endfor %}"
DATA_SOURCE = "dcrl/arith"


def export_policy(directory: Path) -> Path:
    """tiny-arith as a Hugging Face folder vLLM and verl load (config, weights, tokenizer)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = builtin_checkpoint_directory("tiny-arith")
    model = AutoModelForCausalLM.from_pretrained(source)
    tokenizer = AutoTokenizer.from_pretrained(source)
    tokenizer.chat_template = CHAT_TEMPLATE
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def write_split(path: Path, split: str, size: int) -> Path:
    """`size` problems of dcrl's arithmetic task in verl's RLHF layout."""
    rows = [
        {
            "data_source": DATA_SOURCE,
            "prompt": [{"role": "user", "content": problem.prompt}],
            "ability": "math",
            "reward_model": {"style": "rule", "ground_truth": str(problem.answer)},
            "extra_info": {"index": index, "split": split},
        }
        for index, problem in enumerate(get_task("arith").problems(split, size))
    ]
    pd.DataFrame(rows).to_parquet(path)
    return path


def main(out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    export_policy(out_dir / "tiny-arith")
    write_split(out_dir / "train.parquet", "train", 64)
    write_split(out_dir / "val.parquet", "test", 16)
    print(f"smoke files in {out_dir}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
