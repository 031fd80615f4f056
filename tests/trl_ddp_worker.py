"""Worker of tests/test_integration_trl.py::test_data_parallel_ranks_agree (not a test module).

Run as `torchrun --standalone --nproc_per_node 2 tests/trl_ddp_worker.py OUT_DIR aepo dcpo dcpo+icr`: each rank
trains the tiny model for two steps per algorithm (PI controller) with DCRLGRPOTrainer (accelerate MULTI_CPU over
gloo) and writes OUT_DIR/<algorithm>-rank<r>.json: a digest of its weights, the temperatures its
controller decided, its controller state, and the entropy window of its own rows before the
all-reduce (which differs between ranks: they trained on different completions).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

torch.set_num_threads(1)

from dcrl.algorithms.composed import ComposedConfig  # noqa: E402
from dcrl.targets.aepo import AEPOConfig  # noqa: E402
from dcrl.targets.dcpo import DCPOConfig  # noqa: E402
from dcrl.train.step import targets_of  # noqa: E402
from tests.test_integration_trl import GROUP_SIZE, make_trainer  # noqa: E402

# The PI controller with a target near tiny-arith's entropy (~0.1 nats) sets T inside (0.8, 1.2)
# at step 2, where T moves with the entropy it was given.
CONFIGS = {
    "aepo": AEPOConfig(controller="pi", target_entropy=0.15),
    "dcpo": DCPOConfig(controller="pi", target_entropy=0.15),
    # DCPO + ICR composed: the controller is the dcpo target's.
    "dcpo+icr": ComposedConfig(
        name="composed",
        targets=[{"name": "dcpo", "controller": "pi", "target_entropy": 0.15}, "icr"],
    ),
}


def train_and_record(algorithm: str, out_dir: Path) -> dict[str, Any]:
    """Train two steps; what this rank's weights and controller ended as, and what it saw."""
    trainer = make_trainer(
        CONFIGS[algorithm], out_dir / algorithm, per_device_train_batch_size=GROUP_SIZE
    )
    temperatures: list[float] = []
    local_windows: list[list[float]] = []
    (controlled,) = [t for t in targets_of(trainer.algorithm) if t.controls_entropy]
    controller = controlled.controller
    decide, update = controller.decide, trainer._update_controller

    def recording_decide():
        decision = decide()
        temperatures.append(decision.temperature)
        return decision

    def recording_update():
        local_windows.append(trainer._entropy_window.tolist())  # this rank's rows only
        update()

    controller.decide = recording_decide
    trainer._update_controller = recording_update
    trainer.train()
    digest = hashlib.sha256()
    for parameter in trainer.model.parameters():
        digest.update(parameter.detach().cpu().numpy().tobytes())
    return {
        "backend": str(trainer.accelerator.state.backend),
        "distributed_type": str(trainer.accelerator.distributed_type),
        "num_processes": trainer.accelerator.num_processes,
        "weights_sha256": digest.hexdigest(),
        "temperatures": temperatures,
        "controller": controlled.state_dict()["controller"],
        "local_entropy_windows": local_windows,
    }


def main(out_dir: Path, algorithms: list[str]) -> None:
    rank = int(os.environ["RANK"])
    for algorithm in algorithms:
        result = train_and_record(algorithm, out_dir)
        (out_dir / f"{algorithm}-rank{rank}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2:])
