"""The bad-input corpus of the fault suite: inputs a user can get wrong, each of which must end
in one `error: ...` line that names the input, with exit status 2 and no traceback.

`BAD_INPUTS` is shared by tests/test_faults.py (in-process, every case) and bench/faults.py (each
case as a real `dcrl` process, counting tracebacks and hangs). A case's `args(scratch)` writes
whatever files it needs under the scratch directory and returns the `dcrl` arguments; `names`
is the text the error line must contain (the key, file, row or function it is about), with
"{scratch}" standing for the scratch directory.

The reward functions below break the reward contract `fn(completion, answer, **meta) -> float in
[0, 1]` in every way the trainer must catch.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import sys
import time
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from tests.helpers import tiny_overrides

NOT_CALLABLE = 0.5


def raises(completion: str, answer: str, **meta: Any) -> float:
    raise ZeroDivisionError("a bug in the reward")


def returns_nan(completion: str, answer: str, **meta: Any) -> float:
    return math.nan


def returns_five(completion: str, answer: str, **meta: Any) -> float:
    return 5.0


def returns_text(completion: str, answer: str, **meta: Any) -> Any:
    return "1"


def takes_completion_only(completion: str) -> float:
    return 0.0


def never_returns(completion: str, answer: str, **meta: Any) -> float:
    while True:
        time.sleep(0.01)


def exits(completion: str, answer: str, **meta: Any) -> float:
    sys.exit(0)


@dataclass(frozen=True)
class BadInput:
    name: str
    args: Callable[[Path], list[str]]
    names: str


def _train(*overrides: str) -> Callable[[Path], list[str]]:
    """`dcrl train` of the tiny test run (tests.helpers) with `overrides` added."""
    return lambda scratch: ["train", *tiny_overrides(scratch / "run"), *overrides]


def _reward(function: str) -> Callable[[Path], list[str]]:
    return _train(f"data.reward=tests.fault_inputs:{function}")


def _with_file(name: str, text: str, make_args: Callable[[Path], list[str]]) -> Callable:
    """Write `text` to scratch/name, then build the arguments with `{file}` filled in."""

    def args(scratch: Path) -> list[str]:
        path = scratch / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return [arg.replace("{file}", str(path)) for arg in make_args(scratch)]

    return args


def _with_bytes(name: str, data: bytes, make_args: Callable[[Path], list[str]]) -> Callable:
    """Write `data` to scratch/name, then build the arguments with `{file}` filled in."""

    def args(scratch: Path) -> list[str]:
        path = scratch / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return [arg.replace("{file}", str(path)) for arg in make_args(scratch)]

    return args


def _run_dir(
    *,
    config: str = "algorithm:\n  name: grpo\ntrain:\n  seed: 1\n",
    metrics_line_2: str = '{"step": 2, "reward/accuracy": 0.5}',
    command: str = "report",
    out: str = "report",
) -> Callable[[Path], list[str]]:
    """A hand-made run directory scratch/run (config.yaml, three metrics lines), then `dcrl
    report` of it (or `compare`, or `eval` of its policy) with --out under scratch."""

    def args(scratch: Path) -> list[str]:
        run = scratch / "run"
        run.mkdir(parents=True, exist_ok=True)
        (run / "config.yaml").write_text(config)
        (run / "metrics.jsonl").write_text(
            '{"step": 1, "reward/accuracy": 0.25}\n'
            + metrics_line_2
            + '\n{"step": 3, "reward/accuracy": 0.75}\n'
        )
        (scratch / "a-file").write_text("x")
        target = out if out.startswith("/") else str(scratch / out)
        if command == "compare":
            return ["compare", str(run)]
        if command == "eval":
            return ["eval", "-m", str(run), "--limit", "2", "--n", "2", "--out", target]
        return ["report", str(run), "--out", target]

    return args


def _problems(*rows: dict[str, Any]) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


# A file task of one-problem steps, its data in {file}.
_FILE_TASK = (
    "data.task=file",
    "data.path={file}",
    "train.prompts_per_step=1",
    "train.mini_batch_prompts=1",
)
_ROW = {"problem": "1+1=", "answer": "2"}

_RUN_CONFIG = "train:\n  lr: 1.0e-3\n  steps: 2\n"


def _config(scratch: Path) -> list[str]:
    return ["train", "--config", "{file}", *tiny_overrides(scratch / "run")[1:]]


def _eval(*options: str) -> Callable[[Path], list[str]]:
    return lambda scratch: [
        "eval",
        "-m",
        "tiny",
        "--data",
        "arith:level=1",
        "--limit",
        "2",
        "--n",
        "2",
        "--max-new-tokens",
        "4",
        "--out",
        str(scratch / "eval"),
        *options,
    ]


BAD_INPUTS = [
    # -- rollout
    BadInput("top_p-above-1", _train("rollout.top_p=2"), "rollout.top_p"),
    BadInput("top_p-zero", _train("rollout.top_p=0"), "rollout.top_p"),
    BadInput("max_new_tokens-zero", _train("rollout.max_new_tokens=0"), "rollout.max_new_tokens"),
    BadInput("temperature-zero", _train("rollout.temperature=0"), "rollout.temperature"),
    BadInput("temperature-negative", _train("rollout.temperature=-1"), "rollout.temperature"),
    BadInput("temperature-nan", _train("rollout.temperature=nan"), "rollout.temperature"),
    BadInput("group-of-one", _train("rollout.n=1"), "rollout.n"),
    BadInput("rollout-batch-zero", _train("rollout.batch_size=0"), "rollout.batch_size"),
    BadInput("unknown-backend", _train("rollout.backend=sglang"), "rollout.backend"),
    # -- train
    BadInput("ppo_epochs-zero", _train("train.ppo_epochs=0"), "train.ppo_epochs"),
    BadInput("one-beta", _train("train.betas=[0.9]"), "train.betas"),
    BadInput("beta-above-1", _train("train.betas=[0.9,1.5]"), "train.betas"),
    BadInput("grad_clip-nan", _train("train.grad_clip=nan"), "train.grad_clip"),
    BadInput("grad_clip-zero", _train("train.grad_clip=0"), "train.grad_clip"),
    BadInput("lr-nan", _train("train.lr=nan"), "train.lr"),
    BadInput("lr-inf", _train("train.lr=inf"), "train.lr"),
    BadInput("lr-negative", _train("train.lr=-1e-3"), "train.lr"),
    BadInput("lr-text", _train("train.lr=fast"), "train.lr"),
    BadInput("warmup-negative", _train("train.warmup_steps=-1"), "train.warmup_steps"),
    BadInput("save_every-negative", _train("train.save_every=-1"), "train.save_every"),
    BadInput("keep-negative", _train("train.keep_checkpoints=-1"), "train.keep_checkpoints"),
    BadInput("max_bad_steps-zero", _train("train.max_bad_steps=0"), "train.max_bad_steps"),
    BadInput("steps-zero", _train("train.steps=0"), "train.steps"),
    BadInput("steps-text", _train("train.steps=many"), "train.steps"),
    BadInput("steps-fraction", _train("train.steps=2.5"), "train.steps"),
    BadInput("weight_decay-negative", _train("train.weight_decay=-0.1"), "train.weight_decay"),
    BadInput("mini-batch-not-dividing", _train("train.mini_batch_prompts=3"), "mini_batch_prompts"),
    BadInput("micro-batch-zero", _train("train.micro_batch_size=0"), "train.micro_batch_size"),
    BadInput("chunk-zero", _train("train.logprob_chunk_size=0"), "train.logprob_chunk_size"),
    BadInput("threads-negative", _train("train.threads=-2"), "train.threads"),
    BadInput("unknown-train-key", _train("train.stepz=3"), "train.stepz"),
    # -- log
    BadInput("output_dir-unknown-placeholder", _train("log.output_dir=/x/{foo}"), "log.output_dir"),
    BadInput(
        "output_dir-under-a-file",
        _with_file("a-file", "x", _train("log.output_dir={file}/run")),
        "log.output_dir",
    ),
    BadInput("output_dir-read-only", _train("log.output_dir=/sys/dcrl-run"), "log.output_dir"),
    # -- data
    BadInput("task-option-typo", _train("data.task_options.levle=3"), "data.task_options.levle"),
    BadInput("task-option-value", _train("data.task_options.level=0"), "data.task_options"),
    BadInput("unknown-task", _train("data.task=nope"), "data.task"),
    BadInput("template-without-problem", _train("data.template=Solve it."), "data.template"),
    BadInput("chat-template-without-chat", _train("data.template=chat"), "data.template='chat'"),
    BadInput("file-task-without-path", _train("data.task=file"), "data.path"),
    BadInput(
        "missing-data-file",
        lambda s: _train("data.task=file", f"data.path={s / 'none.jsonl'}")(s),
        "data.path: problem file not found",
    ),
    BadInput(
        "data-row-without-answer",
        _with_file("rows.jsonl", _problems(_ROW, {"problem": "2+2="}), _train(*_FILE_TASK)),
        "rows.jsonl:2",
    ),
    BadInput(
        "problem-longer-than-the-context",
        _with_file(
            "long.jsonl",
            _problems(_ROW, {"problem": "7" * 200_000, "answer": "7"}),
            _train(*_FILE_TASK, "data.template=plain"),
        ),
        "row 2",
    ),
    BadInput(
        "answer-nan",
        _with_file("nan.jsonl", '{"problem": "1+1=", "answer": NaN}\n', _train(*_FILE_TASK)),
        "nan.jsonl:1: field 'answer' (answer) is NaN",
    ),
    BadInput(
        "answer-infinity",
        _with_file("inf.jsonl", '{"problem": "1+1=", "answer": -Infinity}\n', _train(*_FILE_TASK)),
        "inf.jsonl:1: field 'answer' (answer) is -Infinity",
    ),
    BadInput(
        "jsonl-not-utf8",
        _with_bytes(
            "latin1.jsonl", b'{"problem": "caf\xe9", "answer": "1"}\n', _train(*_FILE_TASK)
        ),
        "latin1.jsonl:1: not UTF-8",
    ),
    BadInput(
        "parquet-not-parquet",
        _with_file("rows.parquet", "problem,answer\n1+1=,2\n", _train(*_FILE_TASK)),
        "rows.parquet: not a readable Parquet file",
    ),
    # -- reward
    BadInput("reward-unknown-name", _train("data.reward=mathh"), "mathh"),
    BadInput(
        "reward-unknown-module", _train("data.reward=no_such_module_xyz:fn"), "no_such_module_xyz"
    ),
    BadInput("reward-not-callable", _reward("NOT_CALLABLE"), "NOT_CALLABLE"),
    BadInput("reward-wrong-signature", _reward("takes_completion_only"), "takes_completion_only"),
    BadInput("reward-raises", _reward("raises"), "raises raised ZeroDivisionError"),
    BadInput("reward-returns-nan", _reward("returns_nan"), "returns_nan returned nan"),
    BadInput("reward-returns-5", _reward("returns_five"), "returns_five returned 5.0"),
    BadInput("reward-returns-text", _reward("returns_text"), "returns_text returned '1'"),
    # -- model and algorithm
    BadInput("device-cuda-without-gpu", _train("model.device=cuda"), "model.device"),
    BadInput("device-unknown", _train("model.device=tpu9"), "model.device"),
    BadInput("device-meta", _train("model.device=meta"), "model.device"),
    BadInput("model-missing", _train("model.name=/no/such/model"), "/no/such/model"),
    BadInput("dtype-unknown", _train("model.dtype=float64"), "model.dtype"),
    BadInput("algorithm-unknown", _train("algorithm.name=ppo"), "ppo"),
    BadInput("algorithm-value", _train("algorithm.clip_low=1.5"), "algorithm.clip_low"),
    BadInput(
        "target-unknown",
        _train("algorithm.name=composed", "algorithm.targets=[dcpo, icrr]"),
        "algorithm.targets[1].name",
    ),
    BadInput(
        "target-key-typo",
        _train("algorithm.name=composed", "algorithm.targets=[{name: icr, bonus_totl: 4}]"),
        "algorithm.targets[0].bonus_totl",
    ),
    BadInput(
        "target-two-controllers",
        _train("algorithm.name=composed", "algorithm.targets=[aepo, dcpo]"),
        "algorithm.targets[1].name",
    ),
    BadInput("override-without-equals", _train("train.steps"), "train.steps"),
    # -- config files and resume
    BadInput(
        "config-duplicated-key",
        _with_file("dup.yaml", _RUN_CONFIG + "  lr: 3.0e-4\n", _config),
        "'lr' is given twice",
    ),
    BadInput("config-invalid-yaml", _with_file("bad.yaml", "train: [1\n", _config), "bad.yaml"),
    BadInput("config-not-a-mapping", _with_file("list.yaml", "- 1\n- 2\n", _config), "list.yaml"),
    BadInput("config-missing", lambda s: ["train", "--config", str(s / "none.yaml")], "none.yaml"),
    BadInput(
        "config-unknown-recipe",
        lambda s: ["train", "--config", "explore-dcpoo"],
        "--config explore-dcpoo: no such file and no packaged recipe",
    ),
    BadInput(
        "resume-not-a-run", lambda s: ["train", "--resume", str(s)], "{scratch} is not a dcrl run"
    ),
    # -- eval
    BadInput("eval-reward-raises", _eval("--reward", "tests.fault_inputs:raises"), "raises"),
    BadInput("eval-reward-nan", _eval("--reward", "tests.fault_inputs:returns_nan"), "nan"),
    BadInput("eval-n-zero", _eval("--n", "0"), "n (samples per problem)"),
    BadInput("eval-top_p-above-1", _eval("--top-p", "2"), "top_p"),
    BadInput("eval-device-cuda-without-gpu", _eval("--device", "cuda"), "--device='cuda'"),
    BadInput("eval-device-unknown", _eval("--device", "tpu9"), "--device='tpu9'"),
    BadInput("eval-unknown-data", lambda s: ["eval", "-m", "tiny", "--data", "nope"], "nope"),
    BadInput(
        "eval-task-option-typo",
        lambda s: ["eval", "-m", "tiny", "--data", "arith:levle=3"],
        "levle",
    ),
    BadInput(
        "eval-missing-model",
        lambda s: ["eval", "-m", "/no/such/model", "--data", "arith"],
        "/no/such/model",
    ),
    # -- huge values: refused before anything is allocated, naming the bound
    BadInput("group-of-a-million", _train("rollout.n=1000000"), "rollout.n must be ≥ 2 and ≤ 1024"),
    BadInput("threads-a-million", _train("train.threads=1000000"), "train.threads must be"),
    BadInput("seed-1e30", _train("train.seed=1e30"), "train.seed must be"),
    BadInput("train_size-a-billion", _train("data.train_size=1000000000"), "data.train_size"),
    # -- settings that would invert the objective
    BadInput(
        "icr-negative-bonus",
        _train("algorithm.name=icr", "algorithm.bonus_total=-4"),
        "algorithm.bonus_total",
    ),
    BadInput(
        "kimi-negative-weight",
        _train("algorithm.name=kimi", "algorithm.weight=-1"),
        "algorithm.weight",
    ),
    BadInput(
        "controller-option-typo",
        _train(
            "algorithm.name=dcpo", "algorithm.controller=pi", "algorithm.controller_options.gian=2"
        ),
        "algorithm.",
    ),
    BadInput(
        "lp_f-buffer-past-max",
        _train("algorithm.name=lp_f", "algorithm.max_length=10", "algorithm.buffer=20"),
        "algorithm.buffer",
    ),
    BadInput(
        "clip_cov-bounds-inverted",
        _train("algorithm.name=clip_cov", "algorithm.clip_cov_lb=5", "algorithm.clip_cov_ub=1"),
        "algorithm.clip_cov_lb",
    ),
    # -- user code: bounded in time, and no way to end dcrl silently
    BadInput(
        "reward-never-returns",
        _train(
            "data.reward=tests.fault_inputs:never_returns",
            "data.reward_timeout_s=0.2",
            "data.reward_max_timeouts=2",
        ),
        "never_returns did not return within 0.2 s",
    ),
    BadInput("reward-sys-exit", _reward("exits"), "exits called sys.exit(0)"),
    BadInput(
        "eval-reward-never-returns",
        _eval("--reward", "tests.fault_inputs:never_returns", "--reward-timeout", "0.2"),
        "never_returns did not return within 0.2 s",
    ),
    BadInput("eval-reward-sys-exit", _eval("--reward", "tests.fault_inputs:exits"), "sys.exit"),
    BadInput("eval-max-new-tokens-zero", _eval("--max-new-tokens", "0"), "--max-new-tokens"),
    # -- report and eval of damaged runs, unwritable outputs
    BadInput(
        "report-row-nested-200000-deep",
        _run_dir(metrics_line_2='{"step": 2, "x": ' + "[" * 200_000 + "]" * 200_000 + "}"),
        "run/metrics.jsonl:2",
    ),
    BadInput("report-broken-config", _run_dir(config="train: [1\n"), "run/config.yaml"),
    BadInput(
        "compare-broken-config", _run_dir(config="train: [1\n", command="compare"), "config.yaml"
    ),
    BadInput(
        "eval-run-with-broken-config",
        _run_dir(config="train: [1\n", command="eval"),
        "run/config.yaml is not valid YAML",
    ),
    BadInput("report-out-is-a-file", _run_dir(out="a-file"), "--out"),
    BadInput("report-out-read-only", _run_dir(out="/sys/dcrl-report"), "--out /sys/dcrl-report"),
    BadInput(
        "eval-out-is-a-file",
        lambda s: (
            (s.mkdir(parents=True, exist_ok=True), (s / "f").write_text("x"))
            and _eval("--out", str(s / "f"))(s)
        ),
        "give --out a writable directory",
    ),
    # -- theory
    BadInput(
        "theory-beta-zero",
        lambda s: ["theory", "run", "--quick", "--out", str(s), "--beta", "0"],
        "beta=0.0",
    ),
]


# -- model folders: a copy of the built-in tiny-arith, damaged -----------------------------------
TINY_ARITH = Path(__file__).resolve().parents[1] / "dcrl" / "assets" / "tiny-arith"


def _model(damage: Callable[[Path], None]) -> Callable[[Path], list[str]]:
    def args(scratch: Path) -> list[str]:
        folder = scratch / "model"
        shutil.copytree(TINY_ARITH, folder)
        damage(folder)
        return _train(f"model.name={folder}")(scratch)

    return args


def _cut(name: str, keep: float) -> Callable[[Path], None]:
    def damage(folder: Path) -> None:
        data = (folder / name).read_bytes()
        (folder / name).write_bytes(data[: int(len(data) * keep)])

    return damage


def _rewrite_weights(change: Callable[[dict], dict]) -> Callable[[Path], None]:
    def damage(folder: Path) -> None:
        from safetensors.torch import load_file, save_file

        path = folder / "model.safetensors"
        save_file(change(load_file(str(path))), str(path), metadata={"format": "pt"})

    return damage


def _half(weights: dict) -> dict:
    return {k: weights[k] for k in sorted(weights)[: len(weights) // 2]}


def _reshaped(weights: dict) -> dict:
    import torch

    name = next(k for k in sorted(weights) if k.endswith("q_proj.weight"))
    return {**weights, name: torch.zeros(3, 3)}


def _extra(weights: dict) -> dict:
    import torch

    return {**weights, "model.layers.99.extra.weight": torch.zeros(2)}


def _bert(folder: Path) -> None:
    config = json.loads((folder / "config.json").read_text())
    config["architectures"] = ["BertForMaskedLM"]
    (folder / "config.json").write_text(json.dumps(config))


def _no_tokenizer(folder: Path) -> None:
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (folder / name).unlink()


MODEL_INPUTS = [
    BadInput(
        "model-weights-truncated", _model(_cut("model.safetensors", 0.5)), "model/model.safetensors"
    ),
    BadInput(
        "model-weights-empty", _model(_cut("model.safetensors", 0.0)), "model/model.safetensors"
    ),
    BadInput(
        "model-weights-garbage",
        _model(lambda f: (f / "model.safetensors").write_bytes(b"\x07garbage" * 100)),
        "model/model.safetensors",
    ),
    BadInput(
        "model-weights-missing",
        _model(lambda f: (f / "model.safetensors").unlink()),
        "has no weights file",
    ),
    BadInput(
        "model-config-not-json",
        _model(lambda f: (f / "config.json").write_text("{model_type: llama")),
        "model/config.json is not readable JSON",
    ),
    BadInput(
        "model-half-the-weights", _model(_rewrite_weights(_half)), "are missing from its weights"
    ),
    BadInput("model-weights-wrong-shape", _model(_rewrite_weights(_reshaped)), "model"),
    BadInput("model-unexpected-weights", _model(_rewrite_weights(_extra)), "fit no layer"),
    BadInput("model-not-a-causal-lm", _model(_bert), "not a causal language model"),
    BadInput("model-no-tokenizer", _model(_no_tokenizer), "has no tokenizer"),
]
BAD_INPUTS += MODEL_INPUTS


# -- a case per setting, generated from the config classes --------------------------------------
# Every field of every config section, algorithm and target gets a value it must refuse: a number
# outside its declared range (`dcrl.config.field(ge=..., le=...)`), a choice that is not one, a
# value of the wrong type. A numeric setting without a declared range fails here, at import: a
# new setting cannot be forgotten.
def _outside(owner: str, name: str, tp: Any, meta: Any) -> str | None:
    """A YAML value the setting `owner.name` of type `tp` must refuse, or None to skip it."""
    options = [a for a in get_args(tp) if a is not type(None)]
    inner = (
        options[0]
        if get_origin(tp) in (typing.Union, types.UnionType) and len(options) == 1
        else tp
    )
    if inner in (int, float):
        bounds = meta.get("range")
        if bounds is None:
            raise TypeError(
                f"setting {owner}.{name} ({inner.__name__}) declares no range: give its field "
                "ge/gt/le/lt (dcrl.config.field) so that out-of-range values are refused"
            )
        if bounds.ge is not None:
            return str(bounds.ge - 1)
        if bounds.gt is not None:
            return str(bounds.gt)
        return str((bounds.le if bounds.le is not None else bounds.lt) * 10 + 1)
    if get_origin(inner) is Literal:
        return "not-a-choice"
    if inner is bool:
        return "maybe"
    if inner is str:
        return "[1, 2]"
    if get_origin(inner) is dict or dataclasses.is_dataclass(inner):
        return "5"
    if get_origin(inner) is list:
        return "{a: 1}"
    return None


def _setting_cases() -> list[BadInput]:
    from dcrl.algorithms import ALGORITHMS, get_algorithm_class
    from dcrl.algorithms.base import AlgorithmConfig
    from dcrl.targets import TARGETS, get_target_class
    from dcrl.train.config import LoraConfig, RunConfig

    sections: list[tuple[str, type, tuple[str, ...]]] = [
        (
            f.name,
            f.type if isinstance(f.type, type) else typing.get_type_hints(RunConfig)[f.name],
            (),
        )
        for f in dataclasses.fields(RunConfig)
        if f.name != "algorithm"
    ]
    sections.append(("model.lora", LoraConfig, ()))
    base = {f.name for f in dataclasses.fields(AlgorithmConfig)}
    for name in sorted(ALGORITHMS):
        sections.append(("algorithm", get_algorithm_class(name).config_class, (name,)))
    cases = []
    for prefix, cls, (algorithm, *_) in [(p, c, e or (None,)) for p, c, e in sections]:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if prefix == "algorithm" and (
                f.name == "name" or (algorithm != "grpo" and f.name in base)
            ):
                continue  # algorithm.name has cases of its own; the shared PPO settings once
            value = _outside(prefix, f.name, hints[f.name], f.metadata)
            if value is None:
                continue
            extra = (f"algorithm.name={algorithm}",) if algorithm else ()
            if prefix == "model.lora":
                extra = ("model.lora.rank=2",) if f.name != "rank" else ()
            key = f"{prefix}.{f.name}"
            label = f"setting-{algorithm + '.' if algorithm else ''}{key}"
            cases.append(BadInput(label, _train(*extra, f"{key}={value}"), key))
    for target in sorted(TARGETS):
        cls = get_target_class(target).config_class
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.name == "name":
                continue
            value = _outside(f"targets.{target}", f.name, hints[f.name], f.metadata)
            if value is None:
                continue
            entry = f"[{{name: {target}, {f.name}: {value}}}]"
            cases.append(
                BadInput(
                    f"setting-target-{target}.{f.name}",
                    _train("algorithm.name=composed", f"algorithm.targets={entry}"),
                    f"algorithm.targets[0].{f.name}",
                )
            )
    return cases


SETTING_CASES = _setting_cases()
BAD_INPUTS += SETTING_CASES
