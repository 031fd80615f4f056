"""A user rollout backend: dcrl's hf backend, recording every call (e.g. to log prompts or
count samples), named in a run as `rollout.backend: recording_backend:Recording` with
examples/rollout on PYTHONPATH:

    PYTHONPATH=examples/rollout dcrl train -c tiny-grpo \
        rollout.backend=recording_backend:Recording rollout.decoding=generate

It shows the whole contract of a backend (docs/design.md, "Adding a piece"): subclass
`dcrl.rollout.RolloutBackend`, implement `generate` (or reuse a backend's, as here), and read
your settings from the run's rollout section in `from_config`; `check_config` refuses settings
the backend cannot honour before the model loads.
"""

from __future__ import annotations

from typing import Any

from dcrl.rollout import HFRolloutBackend, RolloutBatch


class Recording(HFRolloutBackend):
    name = "recording"

    def __init__(self, model: Any, tokenizer: Any, **options: Any) -> None:
        super().__init__(model, tokenizer, **options)
        self.calls: list[tuple[int, int, float]] = []  # (prompts, n, temperature) per call

    @classmethod
    def check_config(cls, config: Any) -> None:
        super().check_config(config)  # backend_options: the constructor's keyword arguments
        if config.decoding == "loop":
            raise ValueError("decoding=loop: the recording backend wraps generate; set generate")

    @classmethod
    def from_config(cls, config: Any, model: Any, tokenizer: Any) -> Recording:
        options = config.backend_options
        return cls(model, tokenizer, batch_size=config.batch_size, decoding="generate", **options)

    def generate(
        self, prompts: list[str], n: int, temperature: float, *args: Any, **kw: Any
    ) -> RolloutBatch:
        self.calls.append((len(prompts), n, temperature))
        return super().generate(prompts, n, temperature, *args, **kw)
