"""Checks of examples/verl/gpu_smoke.sh and cpu_smoke.sh on verl's console log (`step:N -
key:value - ...` lines and dcrl's own `dcrl:` lines). Messages start with $SMOKE_NAME (default
gpu_smoke).

    python examples/verl/smoke_check.py run LOG ALGORITHM STEPS     # the first run
    python examples/verl/smoke_check.py resume LOG ALGORITHM STEP   # the resumed run
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from pathlib import Path

# What each algorithm's own terms log, under dcrl's names ("dcpo+icr": the two composed).
ACTING = {
    "aepo": ("control/num_reinforce",),
    "dcpo": ("control/alpha",),
    "icr": ("icr/num_selected",),
    "dcpo+icr": ("control/alpha", "icr/num_selected"),
}
CONTROLLED = ("aepo", "dcpo", "dcpo+icr")
# How dcrl's trainer names the run: `algorithm.dcrl.name`, "composed" for a composition.
ANNOUNCED = {"dcpo+icr": "composed (targets: dcpo, icr)"}
NAME = os.environ.get("SMOKE_NAME", "gpu_smoke")
# dcrl's trainer class that must announce itself (DcrlPPOTrainer on verl's V1 trainer).
TRAINER_CLASS = os.environ.get("SMOKE_TRAINER_CLASS", "DcrlRayPPOTrainer")


def steps(log: str) -> dict[int, dict[str, float]]:
    records: dict[int, dict[str, float]] = {}
    for line in log.splitlines():
        match = re.search(r"step:(\d+) - (.*)$", line)
        if not match:
            continue
        record = {}
        for item in match.group(2).split(" - "):
            key, _, value = item.rpartition(":")
            # verl prints numpy scalars as numpy 2 writes them: np.float64(0.25), np.int32(2)
            value = re.sub(r"^np\.\w+\((.*)\)$", r"\1", value.strip())
            with contextlib.suppress(ValueError):  # keep the numeric entries
                record[key] = float(value)
        records[int(match.group(1))] = record
    return records


def fail(message: str) -> None:
    raise SystemExit(f"{NAME}: FAILED: {message}")


def check_run(log: str, algorithm: str, num_steps: int) -> None:
    if f"dcrl: {TRAINER_CLASS} runs {ANNOUNCED.get(algorithm, algorithm)}" not in log:
        fail(f"{algorithm}: dcrl's trainer did not announce itself; verl ran its own trainer")
    records = steps(log)
    for key in ACTING[algorithm]:
        trained = [step for step, record in records.items() if key in record]
        if sorted(trained) != list(range(1, num_steps + 1)):
            fail(f"{algorithm}: steps with {key}: {sorted(trained)}")
    if algorithm in CONTROLLED:
        first = records[1]["control/previous_entropy"]
        second = records[2]["control/previous_entropy"]
        measured = records[1]["entropy/sampled_nll"]
        if second == first or abs(second - measured) > 1e-6 * max(1.0, abs(measured)):
            fail(
                f"{algorithm}: the controller did not move ({first} -> {second}, "
                f"measured {measured})"
            )
    print(f"{NAME}: {algorithm}: dcrl's trainer ran {num_steps} steps")


def check_resume(log: str, algorithm: str, step: int) -> None:
    if "dcrl: controller state restored from" not in log and algorithm in CONTROLLED:
        fail(f"{algorithm}: the controller state was not restored on resume")
    records = steps(log)
    if step not in records or any(key not in records[step] for key in ACTING[algorithm]):
        fail(f"{algorithm}: the resumed run did not train step {step}")
    if min(records) < step - 1:
        fail(f"{algorithm}: the resumed run started over (steps {sorted(records)})")
    print(f"{NAME}: {algorithm}: resumed from its checkpoint and trained step {step}")


if __name__ == "__main__":
    mode, path, algorithm, number = sys.argv[1:5]
    text = Path(path).read_text(errors="replace")
    (check_run if mode == "run" else check_resume)(text, algorithm, int(number))
