"""A run's training data: the problems, prompt template and reward function its `data` section
names, checked before the model loads (`load_data`); the prompts checked against the model
(`check_prompts`); and their deterministic, resumable order, one seeded permutation per epoch
(`ProblemSampler`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Generic, NamedTuple, TypeVar

import torch

from dcrl.config import ConfigError
from dcrl.errors import UserError, one_line

if TYPE_CHECKING:
    from dcrl.train.config import RunConfig

P = TypeVar("P")


class TrainingData(NamedTuple):
    """What a run's `data` section names: its problems, the prompt template and the reward
    function that grades their responses."""

    problems: list[Any]
    template: str
    reward_fn: Callable


def load_data(config: RunConfig) -> TrainingData:
    """The problems, prompt template and reward function of `config.data`, checked.

    Raises:
        UserError: a missing data.path, an unknown task or task option, or a reward function
            that cannot be found or called as the contract says.
    """
    from dcrl.rewards import check_reward_fn
    from dcrl.rewards.bounded import reward_fn_for_run
    from dcrl.tasks import TASKS, get_task, load_problems

    dc = config.data

    def user_or_builtin(name: str) -> Callable:
        return reward_fn_for_run(name, dc.reward_timeout_s, dc.reward_max_timeouts)

    if dc.task == "file":
        if dc.path is None:
            raise ValueError("data.task is 'file' but data.path is not set: give the JSONL/Parquet")
        try:
            problems = load_problems(dc.path, problem_key=dc.problem_key, answer_key=dc.answer_key)
        except FileNotFoundError as error:
            raise ConfigError(f"data.path: {one_line(error)}; check the path") from None
        reward = user_or_builtin("math" if dc.reward == "auto" else dc.reward)
        template = "boxed" if dc.template == "auto" else dc.template
    else:
        if dc.task not in TASKS:
            raise ConfigError(f"data.task: unknown task {dc.task!r}; use one of {sorted(TASKS)}")
        options = inspect.signature(TASKS[dc.task]).parameters
        takes_any = any(o.kind is inspect.Parameter.VAR_KEYWORD for o in options.values())
        unknown = sorted(set(dc.task_options) - set(options))
        if unknown and not takes_any:
            raise ConfigError(
                f"unknown config key data.task_options.{unknown[0]}: the task {dc.task!r} takes "
                f"{', '.join(options)}"
            )
        try:
            task = get_task(dc.task, **dc.task_options)
        except (TypeError, ValueError) as error:
            raise ConfigError(f"data.task_options: {one_line(error)}") from None
        problems = task.problems("train", dc.train_size)
        reward = task.verify if dc.reward == "auto" else user_or_builtin(dc.reward)
        template = task.prompt_template if dc.template == "auto" else dc.template
    if problems:
        check_reward_fn(reward, problems[0].meta)
    return TrainingData(problems, template, reward)


def prompt_formatter(template: str, tokenizer: Any) -> Callable[[Any], str]:
    """The function that turns a problem into the policy's prompt (`dcrl.tasks.format_prompt`
    with this template and tokenizer)."""
    from dcrl.tasks import format_prompt

    def format_problem(problem: Any) -> str:
        return format_prompt(problem.prompt, tokenizer, template=template)

    return format_problem


def check_prompts(
    problems: Sequence[Any],
    template: str,
    tokenizer: Any,
    context: int | None,
) -> None:
    """Format every problem's prompt and check that it leaves the model room to answer.

    Raises:
        ConfigError: the template cannot format a problem (named as data.template).
        UserError: a prompt fills the model's context (`check_prompt_lengths`).
    """
    format_problem = prompt_formatter(template, tokenizer)
    try:
        prompts = [format_problem(p) for p in problems]
    except ValueError as error:
        raise ConfigError(f"data.template={template!r}: {one_line(error)}") from None
    check_prompt_lengths(prompts, problems, tokenizer, context)


def check_prompt_lengths(
    prompts: Sequence[str], problems: Sequence[Any], tokenizer: Any, context: int | None
) -> None:
    """Raise a UserError naming the first problem whose prompt fills the model's context.

    Args:
        prompts: the formatted prompts, one per problem.
        problems: the problems (their ids name the offending row).
        tokenizer: the policy's tokenizer.
        context: the model's context length in tokens (max_position_embeddings); None skips.
    """
    if context is None or not prompts:
        return
    lengths = [len(ids) for ids in tokenizer(list(prompts), add_special_tokens=True)["input_ids"]]
    for row, (length, problem) in enumerate(zip(lengths, problems, strict=True)):
        if length >= context:
            raise UserError(
                f"problem {problem.id!r} (row {row + 1} of the training data) is a prompt of "
                f"{length} tokens, but the model's context holds {context}, with no room to "
                "answer: shorten or drop that problem (or use a model with a longer context)"
            )


class ProblemSampler(Generic[P]):
    """Yields batches of problems, reshuffled each epoch from (seed, epoch).

    Its state (epoch, position) is part of a checkpoint, so a resumed run sees the same problems
    in the same order as an uninterrupted one.
    """

    def __init__(self, problems: Sequence[P], batch_size: int, seed: int) -> None:
        if len(problems) < batch_size:
            raise ValueError(
                f"the data has {len(problems)} problems but a step needs {batch_size} "
                "(train.prompts_per_step): use more data or fewer prompts per step"
            )
        self.problems = problems
        self.batch_size = batch_size
        self.seed = seed
        self.epoch = 0
        self.position = 0

    def _order(self) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return torch.randperm(len(self.problems), generator=generator).tolist()

    def next_batch(self) -> list[P]:
        """The next `batch_size` problems; a batch never straddles two epochs."""
        if self.position + self.batch_size > len(self.problems):
            self.epoch += 1
            self.position = 0
        order = self._order()
        batch = [self.problems[i] for i in order[self.position : self.position + self.batch_size]]
        self.position += self.batch_size
        return batch

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
