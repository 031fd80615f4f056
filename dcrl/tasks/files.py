"""Problems from local JSONL or Parquet files (for example DAPO-Math-17k's `problem`/`answer`
columns, docs/papers.md §1.2)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from dcrl.rewards import RewardFn, get_reward_fn
from dcrl.tasks.problem import Problem


class WrittenNumber(float):
    """A JSON number that remembers how the file wrote it (`written`): an answer `3.0` or `1e20`
    becomes the text "3" or "100000000000000000000", not Python's "3.0" or "1e+20"."""

    written: str

    def __new__(cls, written: str | float) -> WrittenNumber:
        written = written if isinstance(written, str) else repr(float(written))
        number = super().__new__(cls, math.nan if written == "NaN" else float(written))
        number.written = written
        return number

    def __getnewargs__(self) -> tuple[str]:  # copy and pickle keep the written form
        return (self.written,)


def _number_text(value: float, location: str, key: str, role: str) -> str:
    """An answer/problem/id number as text: integral values as integers, others as written.

    Raises:
        ValueError: NaN or ±Infinity (no answer is graded against them).
    """
    written = getattr(value, "written", None) or repr(value)
    try:
        exact = Decimal(written)
    except InvalidOperation:
        exact = Decimal(repr(value))
    if not exact.is_finite():
        raise ValueError(
            f"{location}: field {key!r} ({role}) is {written}, which is not a number an answer "
            "can equal; write the value as text (in quotes) if it is meant literally, or fix the row."
        )
    if exact == exact.to_integral_value() and abs(exact.adjusted()) <= 4000:
        return str(int(exact))
    return written


# A row's values may nest lists and mappings this many levels deep. Deeper ones (a corrupt or
# hostile file) would overflow Python's stack wherever a row is copied, pickled for a reward
# process or compared, so they are refused where the row is read, naming its line.
MAX_NESTING = 100


def _too_deep(location: str) -> str:
    return (
        f"{location}: the row nests lists or objects more than {MAX_NESTING} levels deep; each "
        "line must be one JSON object of problem, answer and plain metadata fields: fix or "
        "remove that line."
    )


def _check_depth(location: str, row: dict[str, Any]) -> None:
    """Raise a ValueError naming `location` if `row` nests deeper than MAX_NESTING (no
    recursion: the check itself must survive any depth)."""
    stack: list[tuple[Any, int]] = [(row, 0)]  # the row's own fields are level 1
    while stack:
        value, depth = stack.pop()
        if depth > MAX_NESTING:
            raise ValueError(_too_deep(location))
        children = value.values() if isinstance(value, dict) else value
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))


def _jsonl_rows(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """(location "file:line", row) for each non-blank line; numbers keep their written form
    (`WrittenNumber`)."""
    with path.open("rb") as lines:
        for line_number, raw in enumerate(lines, start=1):
            location = f"{path}:{line_number}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise ValueError(
                    f"{location}: not UTF-8 text (byte {error.start + 1} of the line); save the "
                    "file as UTF-8."
                ) from None
            if not line.strip():
                continue
            try:
                row = json.loads(line, parse_float=WrittenNumber, parse_constant=WrittenNumber)
            except json.JSONDecodeError as error:
                raise ValueError(
                    f"{location}: invalid JSON ({error.msg} at column {error.colno}); each line "
                    "must be one JSON object."
                ) from error
            except RecursionError:  # [[[[...]]]] deeper than Python's stack
                raise ValueError(_too_deep(location)) from None
            if not isinstance(row, dict):
                raise ValueError(
                    f"{location}: expected a JSON object per line, got {type(row).__name__}."
                )
            _check_depth(location, row)
            yield location, row


def _parquet_rows(path: Path, columns: list[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(location "file:row N", row) for each row (N counts from 1)."""
    import pyarrow.parquet as pq

    try:
        parquet_file = pq.ParquetFile(path)
    except Exception as error:  # pyarrow's ArrowInvalid, OSError: not a Parquet file
        raise ValueError(
            f"{path}: not a readable Parquet file ({str(error).strip()[:200]}); give a .parquet "
            "file, or a .jsonl file of one JSON object per line."
        ) from None
    missing = [column for column in columns if column not in parquet_file.schema_arrow.names]
    if missing:
        raise ValueError(
            f"{path}: missing column {missing[0]!r} (columns are set by problem_key/answer_key/"
            f"id_key/solution_key); the file has columns {parquet_file.schema_arrow.names}."
        )
    row_number = 0
    for batch in parquet_file.iter_batches(batch_size=4096):
        for row in batch.to_pylist():
            row_number += 1
            _check_depth(f"{path}:row {row_number}", row)
            yield f"{path}:row {row_number}", row


def load_problems(
    path: str | Path,
    *,
    problem_key: str = "problem",
    answer_key: str = "answer",
    id_key: str | None = None,
    solution_key: str | None = None,
    limit: int | None = None,
) -> list[Problem]:
    """Problems from a `.jsonl` file (one JSON object per line) or a `.parquet` file.

    Columns other than the problem, answer, id and solution go to `Problem.meta`. A number in
    the problem, answer or id is turned into text as written, an integral one as an integer
    (`3.0` → "3", `1e20` → "100000000000000000000"); NaN and ±Infinity are refused.

    Args:
        path: the file.
        problem_key: the column holding the problem text.
        answer_key: the column holding the reference answer.
        id_key: the column holding a unique id; None numbers the problems "<file stem>-<index>".
        solution_key: the column holding a worked solution, if any.
        limit: read at most this many problems.

    Raises:
        FileNotFoundError: no such file, or a directory (the message says which).
        ValueError: unsupported extension, invalid JSON, a missing or ill-typed field, or a
            repeated id; the message names the file and line (or row) and the field.
    """
    path = Path(path)
    if path.is_dir():
        raise FileNotFoundError(
            f"problem file {path} is a directory, not a file: name the .jsonl or .parquet file "
            "inside it"
        )
    if not path.is_file():
        raise FileNotFoundError(f"problem file not found: {path}")
    if limit is not None and limit < 0:
        raise ValueError(f"load_problems: limit={limit} must be >= 0 (or None for all).")
    key_columns = [
        key for key in (problem_key, answer_key, id_key, solution_key) if key is not None
    ]
    if path.suffix == ".jsonl":
        rows = _jsonl_rows(path)
    elif path.suffix == ".parquet":
        rows = _parquet_rows(path, key_columns)
    else:
        raise ValueError(
            f"{path}: unsupported file type {path.suffix!r}; use .jsonl (one JSON object per "
            "line) or .parquet."
        )

    problems: list[Problem] = []
    location_of_id: dict[str, str] = {}
    for location, row in rows:
        if limit is not None and len(problems) >= limit:
            break
        fields = {}
        for role, key in (("problem", problem_key), ("answer", answer_key), ("id", id_key)):
            if key is None:
                continue
            if key not in row:
                raise ValueError(
                    f"{location}: missing field {key!r} (columns are set by problem_key/"
                    f"answer_key/id_key); the row has fields {sorted(row)}."
                )
            value = row[key]
            # Text, or a number that reads the same as text; bool is excluded (True is not "1").
            if isinstance(value, bool) or not isinstance(value, str | int | float):
                raise ValueError(
                    f"{location}: field {key!r} ({role}) is {type(value).__name__} {value!r}; "
                    "expected text or a number."
                )
            fields[role] = (
                _number_text(value, location, key, role) if isinstance(value, float) else str(value)
            )
        if not fields["problem"].strip():
            raise ValueError(f"{location}: field {problem_key!r} (problem) is empty.")
        solution = row.get(solution_key) if solution_key is not None else None
        if solution is not None and not isinstance(solution, str):
            raise ValueError(
                f"{location}: field {solution_key!r} (solution) is {type(solution).__name__}; "
                "expected text."
            )
        problem_id = fields.get("id", f"{path.stem}-{len(problems)}")
        if problem_id in location_of_id:
            raise ValueError(
                f"{location}: id {problem_id!r} (field {id_key!r}) repeats the one at "
                f"{location_of_id[problem_id]}; ids must be unique."
            )
        location_of_id[problem_id] = location
        meta = {key: value for key, value in row.items() if key not in key_columns}
        problems.append(
            Problem(
                prompt=fields["problem"],
                answer=fields["answer"],
                id=problem_id,
                meta=meta,
                solution=solution,
            )
        )
    return problems


class FileTask:
    """A task whose problems come from local files, graded by a reward function.

    Args:
        train_path: the training problems (.jsonl or .parquet), or None.
        test_path: the held-out problems, or None.
        problem_key, answer_key, id_key, solution_key: column names, as in `load_problems`.
        reward: a reward function or its name/import path (`dcrl.rewards.get_reward_fn`).
        prompt_template: the template the trainer formats prompts with (`format_prompt`).
    """

    def __init__(
        self,
        train_path: str | Path | None = None,
        test_path: str | Path | None = None,
        *,
        problem_key: str = "problem",
        answer_key: str = "answer",
        id_key: str | None = None,
        solution_key: str | None = None,
        reward: str | RewardFn = "math",
        prompt_template: str = "chat",
    ) -> None:
        if train_path is None and test_path is None:
            raise ValueError("FileTask: give train_path, test_path or both (.jsonl or .parquet).")
        self.paths = {"train": train_path, "test": test_path}
        self.columns = {
            "problem_key": problem_key,
            "answer_key": answer_key,
            "id_key": id_key,
            "solution_key": solution_key,
        }
        self.reward_fn = get_reward_fn(reward)
        self.prompt_template = prompt_template

    def problems(self, split: str = "train", size: int | None = None) -> list[Problem]:
        """The first `size` problems of the split's file (all of them if None)."""
        if split not in self.paths:
            raise ValueError(f"FileTask: unknown split {split!r}; use 'train' or 'test'.")
        path = self.paths[split]
        if path is None:
            raise ValueError(f"FileTask: no file for split {split!r}; pass {split}_path.")
        return load_problems(path, limit=size, **self.columns)

    def verify(self, completion: str, answer: str, **meta: Any) -> float:
        """The reward of `completion` (the reward contract of `dcrl.rewards`)."""
        return self.reward_fn(completion, answer, **meta)
