"""What `dcrl eval` evaluates: the model (a directory, a run directory, "tiny", ...) and the data
(a synthetic task's held-out split, a JSONL/Parquet file, or CHAMP), with the prompt template and
the reward function that go with them.

Data specs (`--data`):
    "arith", "arith:level=3", "arith:level=[2,3],seed=1"   the synthetic task's "test" split
        (disjoint from "train"), `limit` problems (default 200); options as in `dcrl.tasks`.
    "path/to/file.jsonl" or ".parquet"   one problem per row; columns `problem` and `answer`
        (renamed with problem_key/answer_key), optional `id`; other columns go to Problem.meta.
    "champ" (or "champ:v0")   the 270 CHAMP competition problems (`pip install champ-dataset`).

Templates and rewards ("auto"): an explicit `template`/`reward` wins; else, for a run directory
evaluated without --data, the run's own `data.template`/`data.reward`; else the data's default
(synthetic: the task's template and verifier; files and CHAMP: "boxed" and "math"). A run's
explicit (non-auto) template is kept even with --data, since it is the prompt the policy learned.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from dcrl.rewards import RewardFn, get_reward_fn
from dcrl.tasks import TASKS, Problem, get_task, load_problems

DEFAULT_SYNTHETIC_PROBLEMS = 200
CHAMP_INSTALL_MESSAGE = (
    "--data champ needs the champ-dataset package (270 competition problems), which is not "
    "installed: `pip install champ-dataset`"
)


@dataclass
class EvalData:
    """Problems with the template and grader to evaluate them.

    problems: the problems (unique ids).
    reward_fn: the grader (the reward contract of `dcrl.rewards`).
    template: the prompt template (`dcrl.tasks.format_prompt`).
    label: a short name for the data, safe in a file name ("arith-level3", "math500").
    """

    problems: list[Problem]
    reward_fn: RewardFn
    template: str
    label: str


def read_run_config(model: str | Path) -> dict[str, Any] | None:
    """The resolved config.yaml of a training run directory, or None if `model` is not one."""
    config_path = Path(model) / "config.yaml"
    if not config_path.is_file():
        return None
    try:
        config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        first = (str(error).strip().splitlines() or ["?"])[0][:200]
        raise ValueError(
            f"{config_path} is not valid YAML ({first}): restore the config.yaml `dcrl train` "
            "wrote there"
        ) from None
    if not isinstance(config, dict):
        raise ValueError(f"{config_path} is not a mapping: is this a dcrl run directory?")
    return config


def run_label(run_config: dict[str, Any], fallback: str) -> str:
    """ "<algorithm>-seed<seed>" from a run config (the trainer's naming), or `fallback`."""
    algorithm = (run_config.get("algorithm") or {}).get("name")
    seed = (run_config.get("train") or {}).get("seed")
    if algorithm is None:
        return fallback
    return f"{algorithm}-seed{seed}" if seed is not None else str(algorithm)


def safe_name(text: str) -> str:
    """`text` with every run of characters other than letters, digits and ._= replaced by -."""
    return re.sub(r"[^A-Za-z0-9._=]+", "-", text).strip("-") or "data"


def parse_data_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """("arith", {"level": 3}) from "arith:level=3"; values are read as YAML (numbers, lists)."""
    name, _, option_text = spec.partition(":")
    options: dict[str, Any] = {}
    if option_text:
        for item in re.split(r",(?![^\[]*\])", option_text):  # commas outside [...]
            key, equals, value = item.partition("=")
            if not equals or not key.strip():
                raise ValueError(
                    f"--data {spec!r}: option {item!r} is not key=value; write e.g. "
                    "'arith:level=3,seed=1'"
                )
            options[key.strip()] = yaml.safe_load(value)
    return name.strip(), options


def load_champ(version: str = "v0", limit: int | None = None) -> list[Problem]:
    """The CHAMP problems (`champ_dataset.load(version)`), or a ValueError saying how to install."""
    try:
        import champ_dataset
    except ImportError as error:
        raise ValueError(CHAMP_INSTALL_MESSAGE) from error
    dataset = champ_dataset.load(version)
    problems = [
        Problem(
            prompt=problem.text,
            answer=str(problem.answer),
            id=f"champ-{problem_id}",
            meta={"category": getattr(problem, "category", None)},
        )
        for problem_id, problem in dataset.problems.items()
    ]
    return problems[:limit] if limit is not None else problems


def load_eval_data(
    spec: str | None,
    *,
    run_config: dict[str, Any] | None = None,
    limit: int | None = None,
    problem_key: str = "problem",
    answer_key: str = "answer",
    id_key: str | None = None,
    template: str = "auto",
    reward: str = "auto",
    reward_timeout_s: float = 5.0,
) -> EvalData:
    """Resolve `--data` (or a run's own task) into problems, template and grader (module doc).

    Args:
        spec: a data spec (module docstring), or None to use `run_config`'s task.
        run_config: the config.yaml of the run being evaluated, if the model is a run directory.
        limit: evaluate the first `limit` problems (synthetic tasks: how many to draw, default
            200).
        problem_key, answer_key, id_key: the columns of a JSONL/Parquet file.
        template, reward: "auto" or an explicit template / reward name (module docstring).
        reward_timeout_s: seconds one call of a user reward ('package.module:function') may
            take; past it the sample scores 0, and 3 such calls in a row stop the evaluation
            (dcrl/rewards/bounded.py).
    """
    if limit is not None and limit < 1:
        raise ValueError(f"--limit must be >= 1, got {limit}")
    run_data = (run_config or {}).get("data") or {}
    if spec is None:
        if run_config is None:
            raise ValueError(
                "no data to evaluate: pass --data (a task such as 'arith:level=3', a .jsonl or "
                ".parquet file, or 'champ')"
            )
        if run_data.get("task", "arith") == "file":
            raise ValueError(
                f"the run trained on a file ({run_data.get('path')}), and that file holds its "
                "training problems: pass --data with the held-out problems to evaluate on"
            )
        name, options = run_data.get("task", "arith"), dict(run_data.get("task_options") or {})
        if template == "auto":
            template = run_data.get("template", "auto")
        if reward == "auto":
            reward = run_data.get("reward", "auto")
    else:
        name, options = parse_data_spec(spec)
        if template == "auto":
            template = run_data.get("template", "auto")

    path = Path(spec) if spec is not None else None
    if path is not None and (path.suffix in (".jsonl", ".parquet") or path.exists()):
        problems = load_problems(
            path, problem_key=problem_key, answer_key=answer_key, id_key=id_key, limit=limit
        )
        if not problems:
            raise ValueError(f"{path} holds no problems: it is empty")
        label = path.stem if limit is None else f"{path.stem}-first{limit}"
        default_template, default_reward = "boxed", get_reward_fn("math")
    elif name == "champ":
        problems = load_champ(str(options.pop("version", "v0")), limit)
        label = "champ" if limit is None else f"champ-first{limit}"
        default_template, default_reward = "boxed", get_reward_fn("math")
    elif name in TASKS and name != "file":
        task = get_task(name, **options)
        size = limit or DEFAULT_SYNTHETIC_PROBLEMS
        problems = task.problems("test", size)
        label = "-".join([name, *(f"{key}{value}" for key, value in sorted(options.items()))])
        label = f"{label}-test{size}"
        default_template = task.prompt_template
        default_reward = task.verify
    else:
        synthetic = ", ".join(repr(task) for task in TASKS if task != "file")
        raise ValueError(
            f"--data {spec!r} is neither a synthetic task ({synthetic}), 'champ', nor a .jsonl or "
            ".parquet file"
        )
    return EvalData(
        problems=problems,
        reward_fn=default_reward if reward == "auto" else _bounded(reward, reward_timeout_s),
        template=default_template if template == "auto" else template,
        label=safe_name(label),
    )


def _bounded(reward: str, timeout_s: float) -> RewardFn:
    """The reward named `reward`; a user's ('package.module:function') under a time limit."""
    from dcrl.rewards.bounded import BoundedReward

    reward_fn = get_reward_fn(reward)
    if ":" not in reward:
        return reward_fn
    return BoundedReward(reward_fn, timeout_s, setting="--reward-timeout")
