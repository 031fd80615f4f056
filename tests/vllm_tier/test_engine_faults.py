"""The vLLM engine's faults end in one clear error naming the fix, with nothing lost: an engine
that cannot start (a KV cache too small, an architecture vLLM does not know), a prompt longer
than the engine's context, and an engine that fails in the middle of a run (the last checkpoint
is intact, and the resumed run logs what an uninterrupted one logs: vLLM's per-request seeds make
its samples reproducible)."""

from __future__ import annotations

import json
import math
import shutil

import pytest

import dcrl.rollout
from dcrl.models import load_policy
from dcrl.rollout.vllm import VLLMEngineError, VLLMRolloutBackend
from dcrl.train.trainer import Trainer
from tests.helpers import read_metrics
from tests.vllm_tier.helpers import ROOT, engine_backend, explore_config

TIMINGS = ("time/", "perf/")


@pytest.fixture(scope="module")
def policy():
    return load_policy("tiny-explore")


def test_a_kv_cache_too_small_is_one_error_naming_the_setting(policy):
    model, tokenizer = policy
    with pytest.raises(
        VLLMEngineError, match=r"could not start .* \(rollout.backend_options.kv_cache_gib"
    ):
        VLLMRolloutBackend(model, tokenizer, dtype="float32", enforce_eager=True, kv_cache_gib=1e-5)


def test_a_model_vllm_cannot_load_is_one_error_naming_the_model(policy, tmp_path):
    model, tokenizer = policy
    folder = tmp_path / "mystery"
    shutil.copytree(ROOT / "dcrl" / "assets" / "tiny-explore", folder)
    config = json.loads((folder / "config.json").read_text())
    config["architectures"] = ["MysteryNetForCausalLM"]
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(VLLMEngineError, match=f"could not start on {folder}.*architecture"):
        VLLMRolloutBackend(
            model, tokenizer, model_path=str(folder), dtype="float32", kv_cache_gib=1
        )
    with pytest.raises(VLLMEngineError, match="checkpoint directory"):
        VLLMRolloutBackend(model, tokenizer, model_path=str(tmp_path / "nowhere"))


@pytest.fixture(scope="module")
def engine(policy):
    backend = engine_backend(*policy)
    yield backend
    del backend


def test_a_prompt_past_the_engines_context_names_the_setting(engine):
    with pytest.raises(
        VLLMEngineError, match="rollout.max_new_tokens=300 exceeds .*max_model_len=256"
    ):
        engine.generate(["17+25="], 2, 1.0, 1.0, 300)


def test_an_engine_failing_mid_run_loses_nothing_and_the_resumed_run_is_identical(
    tmp_path, engine, monkeypatch
):
    settings = ("train.steps=3", "train.save_every=1")
    whole = Trainer(explore_config(tmp_path / "whole", "explore-dcpo", *settings), backend=engine)
    expected = whole.fit()

    run_dir = tmp_path / "broken"
    trainer = Trainer(explore_config(run_dir, "explore-dcpo", *settings), backend=engine)
    calls = {"n": 0}
    real_generate = engine.llm.generate

    def dies_at_the_third_call(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:  # step 3's rollout: steps 1 and 2 are checkpointed
            raise RuntimeError("EngineCore died unexpectedly")
        return real_generate(*args, **kwargs)

    monkeypatch.setattr(engine.llm, "generate", dies_at_the_third_call)
    with pytest.raises(VLLMEngineError, match="the vLLM engine failed during a rollout"):
        trainer.fit()
    monkeypatch.setattr(engine.llm, "generate", real_generate)
    del trainer
    # Nothing lost: the checkpoint of the last finished step, and its metrics.
    assert len(read_metrics(run_dir)) >= 1
    # The resumed trainer builds its backend as rollout.backend=vllm does; here it gets the
    # module's engine, which still holds the weights of the failed run's step 2.
    monkeypatch.setattr(dcrl.rollout, "build_rollout_backend", lambda *args: engine)
    Trainer.from_run_dir(run_dir).fit()
    logged = read_metrics(run_dir)
    assert [m["step"] for m in logged] == [1, 2, 3]
    for got, want in zip(logged, expected, strict=True):
        for key, value in want.items():
            if key.startswith(TIMINGS):
                continue
            if math.isnan(value):
                assert got[key] is None, key  # metrics.jsonl writes NaN as null
            else:
                assert math.isclose(got[key], value, rel_tol=1e-6, abs_tol=1e-6), key
