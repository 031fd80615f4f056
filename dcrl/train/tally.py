"""The update's numbers, summed as the trainer goes through its micro-batches and mini-batches:
each loss metric weighted by the micro-batch's response tokens, the entropy sums the controllers
read (`step.measure_entropy`), and each optimizer step's loss, gradient norm and whether it was
skipped for a NaN/inf."""

from __future__ import annotations

import torch

from dcrl.core.logprobs import ENTROPY_SUMS_SIZE


class UpdateTally:
    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.tokens = 0.0
        self.entropy_sums = torch.zeros(
            ENTROPY_SUMS_SIZE, dtype=torch.float64
        )  # step.measure_entropy
        self.losses: list[float] = []
        self.grad_norms: list[float] = []
        self.skipped = 0

    def add_micro_batch(
        self, metrics: dict[str, float], tokens: float, entropy_sums: torch.Tensor
    ) -> None:
        """A micro-batch's loss metrics (weighted by its `tokens` response tokens) and entropy
        sums."""
        self.tokens += tokens
        self.entropy_sums += entropy_sums.cpu()
        for name, value in metrics.items():
            self.sums[name] = self.sums.get(name, 0.0) + float(value) * tokens

    def add_step(self, loss: float, grad_norm: float, skipped: bool) -> None:
        """A mini-batch's summed loss, its gradient norm, and whether its step was skipped."""
        self.losses.append(loss)
        self.grad_norms.append(grad_norm)
        self.skipped += int(skipped)

    def metrics(self) -> dict[str, float]:
        """loss/<metric> (token-weighted means), loss/policy and loss/grad_norm (means over the
        mini-batches), train/optimizer_steps and train/skipped_updates."""
        denom = max(self.tokens, 1.0)
        out = {f"loss/{name}": value / denom for name, value in self.sums.items()}
        out["loss/policy"] = sum(self.losses) / len(self.losses)
        out["loss/grad_norm"] = sum(self.grad_norms) / len(self.grad_norms)
        out["train/optimizer_steps"] = float(len(self.losses) - self.skipped)
        out["train/skipped_updates"] = float(self.skipped)
        return out
