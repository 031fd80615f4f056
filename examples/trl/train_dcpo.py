"""DCPO in TRL's GRPOTrainer, on one process or data-parallel with torchrun.

    python examples/trl/train_dcpo.py                                   # CPU, built-in tiny model
    torchrun --standalone --nproc_per_node 2 examples/trl/train_dcpo.py # 2 processes (gloo on CPU)
    torchrun --standalone --nproc_per_node 8 examples/trl/train_dcpo.py \\
        --model Qwen/Qwen2.5-Math-7B --steps 500 --group-size 8 --max-length 3072 --bf16

The task is dcrl's synthetic arithmetic (checkable, no download); swap in your own dataset with a
"prompt" column and a reward function `f(completions, **columns) -> list[float]`.
"""

from __future__ import annotations

import argparse

from datasets import Dataset
from trl import GRPOConfig

from dcrl.integrations.trl import DCRLGRPOTrainer
from dcrl.models.loading import load_policy
from dcrl.targets.dcpo import DCPOConfig
from dcrl.tasks import get_task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", default="tiny-arith", help="HF directory/cached id or tiny-arith"
    )
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--group-size", type=int, default=4, help="completions per prompt")
    parser.add_argument("--prompts-per-process", type=int, default=2)
    parser.add_argument("--max-length", type=int, default=32, help="max completion tokens")
    parser.add_argument("--target-entropy", type=float, default=0.5)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (GPUs)")
    parser.add_argument("--output-dir", default="runs/trl-dcpo")
    args = parser.parse_args()

    task = get_task("arith")
    problems = task.problems("train", 1024)
    dataset = Dataset.from_list([{"prompt": p.prompt, "answer": p.answer} for p in problems])

    def correct(completions: list[str], answer: list[str], **columns) -> list[float]:
        return [task.verify(text, truth) for text, truth in zip(completions, answer, strict=True)]

    model, tokenizer = load_policy(args.model)
    trainer = DCRLGRPOTrainer(
        model=model,
        reward_funcs=correct,
        args=GRPOConfig(
            output_dir=args.output_dir,
            max_steps=args.steps,
            per_device_train_batch_size=args.prompts_per_process * args.group_size,
            num_generations=args.group_size,
            max_completion_length=args.max_length,
            learning_rate=args.lr,
            beta=0.0,  # the papers train without a KL term
            bf16=args.bf16,
            gradient_checkpointing=False,
            logging_steps=1,
            save_steps=max(1, args.steps // 2),
            report_to=[],
        ),
        train_dataset=dataset,
        processing_class=tokenizer,
        algorithm=DCPOConfig(target_entropy=args.target_entropy),
    )
    trainer.train()


if __name__ == "__main__":
    main()
