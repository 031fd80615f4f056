"""The rollout-backend registry: names and 'package.module:Class' resolve to backends, the trainer
builds its backend from the rollout section through it, a backend checks its settings at config
time, and a user backend (examples/rollout) trains a run."""

from __future__ import annotations

from pathlib import Path

import pytest

from dcrl.config import ConfigError
from dcrl.rollout import (
    ROLLOUT_BACKENDS,
    HFRolloutBackend,
    RolloutBackendError,
    get_rollout_backend_class,
)
from dcrl.rollout.vllm import VLLMRolloutBackend
from dcrl.train.trainer import Trainer
from tests.helpers import tiny_config

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "rollout"


def test_registered_names_resolve_to_their_backend_classes():
    assert list(ROLLOUT_BACKENDS) == ["hf", "vllm"]
    assert get_rollout_backend_class("hf") is HFRolloutBackend
    assert get_rollout_backend_class("vllm") is VLLMRolloutBackend  # vllm itself not imported
    assert get_rollout_backend_class("dcrl.rollout.hf:HFRolloutBackend") is HFRolloutBackend


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("sglang", "unknown rollout backend 'sglang': choose one of hf, vllm, or a"),
        ("no_such_module:X", "cannot import module 'no_such_module'"),
        ("dcrl.rollout.hf:Missing", "'dcrl.rollout.hf:Missing' is missing, not a subclass"),
        ("dcrl.rollout.base:RolloutBatch", "not a subclass of dcrl.rollout.RolloutBackend"),
    ],
)
def test_a_bad_backend_name_is_one_clear_error(name, message):
    with pytest.raises(RolloutBackendError, match=message):
        get_rollout_backend_class(name)


def test_the_config_names_the_bad_backend_and_its_refused_settings(tmp_path):
    with pytest.raises(ConfigError, match=r"rollout\.backend: unknown rollout backend 'sglang'"):
        tiny_config(tmp_path / "a", "grpo", "rollout.backend=sglang")
    # The vllm backend refuses the hf decoder when the config is read, before any model loads.
    with pytest.raises(ConfigError, match=r"rollout\.decoding=loop is the hf backend's decoder"):
        tiny_config(tmp_path / "b", "grpo", "rollout.backend=vllm", "rollout.decoding=loop")


@pytest.mark.parametrize(("decoding", "expected"), [("auto", "loop"), ("generate", "generate")])
def test_the_hf_backend_reads_its_settings_from_the_rollout_section(tmp_path, decoding, expected):
    config = tiny_config(tmp_path / "run", "grpo", f"rollout.decoding={decoding}")
    trainer = Trainer(config)
    assert type(trainer.backend) is HFRolloutBackend
    assert trainer.backend.decoding == expected
    assert trainer.backend.batch_size == config.rollout.batch_size == 8


@pytest.mark.slow
def test_a_user_backend_named_in_the_config_samples_every_step(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))
    with pytest.raises(ConfigError, match="recording backend wraps generate"):
        tiny_config(
            tmp_path / "x",
            "grpo",
            "rollout.backend=recording_backend:Recording",
            "rollout.decoding=loop",
        )
    config = tiny_config(
        tmp_path / "run",
        "grpo",
        "rollout.backend=recording_backend:Recording",
        "rollout.decoding=generate",
    )
    trainer = Trainer(config)
    assert type(trainer.backend).__name__ == "Recording"
    trainer.fit()
    # 2 steps, each one call of 4 prompts × 4 samples at the rollout temperature.
    assert trainer.backend.calls == [(4, 4, 1.0), (4, 4, 1.0)]


def test_backend_options_reach_the_constructor_and_are_checked_when_read(tmp_path):
    config = tiny_config(
        tmp_path / "run", "grpo", "rollout.backend_options={add_special_tokens: false}"
    )
    assert Trainer(config).backend.add_special_tokens is False
    with pytest.raises(
        ConfigError,
        match=r"rollout\.backend_options\.add_special_token: not a setting of the hf backend; "
        r"its settings: stop_token_ids, add_special_tokens",
    ):
        tiny_config(tmp_path / "a", "grpo", "rollout.backend_options={add_special_token: false}")
    with pytest.raises(ConfigError, match=r"backend_options\.decoding: set by the rollout section"):
        tiny_config(tmp_path / "b", "grpo", "rollout.backend_options={decoding: loop}")
    # vllm passes unknown options to vllm.LLM, so any key is accepted there.
    vllm = tiny_config(
        tmp_path / "c",
        "grpo",
        "rollout.backend=vllm",
        "rollout.backend_options={max_model_len: 64}",
    )
    assert vllm.rollout.backend_options == {"max_model_len": 64}
