"""The per-sample records file of an evaluation (`samples.jsonl`) and resuming from it.

One JSON object per line and per graded sample:

    {"problem_id": "arith-test-0", "kind": "sample", "sample": 3, "reward": 1.0, "correct": true,
     "length": 17, "truncated": false, "response": "12+5=17#17"}

`kind` is "sample" (the n sampled answers, `sample` = 0 … n − 1) or "greedy" (the temperature-0
answer, `sample` = 0). `length` counts response tokens, EOS included; `response` is omitted when
responses are not saved. The evaluator appends the records of one generate call in a single write
and flushes, so an interruption leaves complete calls plus at most one cut-off last line.

Resuming works per *unit*: the samples of one problem drawn in one call (kind, problem, chunk of
`samples_per_call` samples). `repair_records` drops a cut-off last line and any unit with
missing samples and returns the complete units, so the evaluator generates exactly the others.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

UnitKey = tuple[str, str, int]  # (kind, problem_id, chunk index)


def unit_of(record: dict[str, Any], samples_per_call: int) -> UnitKey:
    """The unit a record belongs to: its kind, problem and chunk of `samples_per_call` samples."""
    return (record["kind"], record["problem_id"], record["sample"] // samples_per_call)


def unit_size(kind: str, chunk: int, num_samples: int, samples_per_call: int) -> int:
    """How many samples a complete unit holds: 1 for "greedy", else the chunk's share of n."""
    if kind == "greedy":
        return 1
    return min(samples_per_call, num_samples - chunk * samples_per_call)


def iter_records(path: Path) -> Iterator[dict[str, Any]]:
    """The records of a records file, in order (none if it does not exist; a ValueError naming
    the line if one is damaged)."""
    if not path.exists():
        return
    with path.open(encoding="utf-8") as lines:
        for line_number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(
                    f"{path}:{line_number}: not a JSON record ({error.msg}); the records file is "
                    "damaged: delete the evaluation directory and run again"
                ) from error


def repair_records(path: Path, num_samples: int, samples_per_call: int) -> set[UnitKey]:
    """Leave only complete units in the records file `path`; return those units.

    A cut-off last line (no trailing newline) is removed. If some unit has fewer (or more) records
    than it should, the file is rewritten with only the complete units' records, so new records
    can be appended and every record in the file belongs to a complete unit. Memory: one counter
    per unit, not per sample.

    Args:
        path: the records file (missing: nothing is yielded).
        num_samples: n, the samples per problem of this evaluation.
        samples_per_call: the samples of one problem drawn per generate call.
    """
    if not path.exists():
        return set()
    with path.open("rb+") as handle:  # drop a half-written last line
        data = handle.read()
        if data and not data.endswith(b"\n"):
            handle.truncate(data.rfind(b"\n") + 1)

    unit_counts: Counter[UnitKey] = Counter()
    for record in iter_records(path):
        unit_counts[unit_of(record, samples_per_call)] += 1
    complete = {
        unit
        for unit, count in unit_counts.items()
        if count == unit_size(unit[0], unit[2], num_samples, samples_per_call)
    }
    if len(complete) != len(unit_counts):
        temporary = path.with_name(path.name + ".tmp")
        with temporary.open("w", encoding="utf-8") as kept:
            for record in iter_records(path):
                if unit_of(record, samples_per_call) in complete:
                    kept.write(json.dumps(record) + "\n")
        temporary.replace(path)
    return complete
