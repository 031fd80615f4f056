"""The fault campaign: `kill -9` at random points of real `dcrl train` runs, then resume, and check
that nothing was lost; plus the bad-input corpus (tests/fault_inputs.py) as real processes.

For each algorithm family (GRPO, AEPO, DCPO) it trains the tiny recipe (dcrl/recipes/tiny-*.yaml, cut
to a few steps) once uninterrupted, then RUNS more times with two kills each:

1. during training, after its first checkpoint: at a random moment, or (every other run) the
   instant a checkpoint is being written (its temporary directory or `latest.tmp` exists);
2. during resume start-up: `dcrl train --resume` killed after a random delay, before it logs a
   step (model loading, restoring the checkpoint, rewriting config.yaml and metrics.jsonl);

then resumes to the end. Checked after every kill: the latest checkpoint is not older than before
and metrics.jsonl still holds a line for every checkpointed step ("lost logs", "lost
checkpoints"); at the end: the metrics (timings aside) and the final weights equal the
uninterrupted run's ("identical resumes"). A process that exits on its own with "Traceback" in
its stderr counts as a traceback; one that outlives its time limit as a hang.

Two more campaigns (GRPO):

- concurrent writers: two `dcrl train` into one run directory started together, a second one
  started while the first trains, and a `--resume` of a run still training (for these two the
  first is paused with SIGSTOP while the second starts and tries, then continued). Exactly one writer
  may run: every other process must end in exit 2 and one `error:` line, and the run that
  finishes must equal the uninterrupted one; both finishing, or a finished run that differs,
  counts as a lost run.
- disk full: `dcrl train` under a real file size limit (`ulimit -f`) that fails the run at start
  (config.yaml), at its first checkpoint's weights (safetensors) or at its optimizer state
  (torch.save). Each must end in exit 2 and one `error:` line naming a path of the run, leave no
  half-written checkpoint or policy folder, and finish without the limit (resumed, or started
  again when no checkpoint was written) equal to the uninterrupted run; otherwise a lost run.

- memory: `dcrl train` under a real address-space limit (RLIMIT_AS, what `ulimit -v` sets), put
  in place by the launcher of tests/test_memory_faults.py once the run has its first checkpoint:
  the process's measured size then plus half of what its first step needed above it, so that
  step 2, built like step 1, cannot fit. An update too big (train.micro_batch_size=128: GRPO,
  AEPO, DCPO) and a rollout too big (rollout.batch_size=8, GRPO). Each must end in exit 2 and
  one `error:` line naming the setting to lower and `--resume`, keep the checkpoint of step 1
  whole (nothing of step 2 written or logged), and, once the named setting is lowered in the
  run's config.yaml, finish with `--resume` (its first step unlimited as the first run's, its
  last under the same margin); otherwise a lost checkpoint or a lost run.

With `--vllm-python PYTHON` (an environment with vLLM: .venv-vllm/bin/python) the kill campaign
also runs on the vLLM engine: the exploration recipes (configs/explore-*.yaml) with
rollout.backend=vllm, kills in training (at random, or at a checkpoint write) and during resume
start-up (the engine starting), each then resumed and compared with the uninterrupted run as
above; after each kill, any process left in the killed run's session (an engine process
outliving its trainer) counts as a stray.

    python bench/faults.py                 # about 20 minutes on 2 CPU cores
    python bench/faults.py --runs 1 --skip-corpus  # a quick look
    python bench/faults.py --only memory vllm --vllm-python .venv-vllm/bin/python

Writes bench/results/faults.json and bench/results/faults.png, and the memory and vLLM tables of
bench/README.md (`--only` keeps the other campaigns' results in faults.json).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
# The processes run a snapshot of the committed tree (`git archive HEAD`), so edits made in the
# checkout while the campaign runs cannot make a resumed run differ from its reference.
SOURCE = REPO

from safetensors.torch import load_file  # noqa: E402

from dcrl.train.sinks import read_metrics_log  # noqa: E402
from tests.fault_inputs import BAD_INPUTS  # noqa: E402
from tests.test_memory_faults import (  # noqa: E402
    LIMIT_LINE,
    LIMITED_STEPS,
    MALLOC_ENV,
    ROLLOUT_TOO_BIG,
    SMALL,
    UPDATE_TOO_BIG,
)

FAMILIES = ("grpo", "aepo", "dcpo")
STEPS = 6
# The tiny recipe, cut down: 6 steps of 8 prompts x 4 responses, a checkpoint every 2 steps.
RUN_OPTIONS = (
    f"train.steps={STEPS}",
    "train.prompts_per_step=8",
    "train.mini_batch_prompts=4",
    "train.warmup_steps=2",
    "train.save_every=2",
    "train.keep_checkpoints=2",
    "train.threads=1",
    "rollout.n=4",
    "rollout.max_new_tokens=32",
    "log.console=false",
    "log.tensorboard=false",
)
TIME_LIMIT_S = 600  # a process running longer hangs
ENV = {
    **os.environ,
    "HF_HUB_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "OMP_NUM_THREADS": "1",
}


def dcrl(*args: str, python: str = sys.executable) -> subprocess.Popen:
    """Start `dcrl ARGS` as a real process (`python -m dcrl.cli`, so tests.* rewards import), in
    a session of its own (`left_in_session` finds what it leaves behind)."""
    return subprocess.Popen(
        [python, "-m", "dcrl.cli", *args],
        cwd=SOURCE,
        env={**ENV, "PYTHONPATH": str(SOURCE)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def left_in_session(session: int) -> list[int]:
    """Processes still alive in `session` (a session id is its leader's pid)."""
    alive = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone while listing
            continue
        if int(fields[3]) == session and fields[0] != "Z":
            alive.append(int(stat.parent.name))
    return alive


def snapshot(directory: Path) -> tuple[Path, str]:
    """Export the committed tree (HEAD) into `directory`; (its path, the commit)."""
    git = shutil.which("git") or "git"
    run = {"cwd": REPO, "capture_output": True, "check": True}
    commit = subprocess.run([git, "rev-parse", "HEAD"], text=True, **run).stdout.strip()
    archive = subprocess.run([git, "archive", "--format=tar", "HEAD"], **run).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tree:
        tree.extractall(directory, filter="data")
    return directory, commit


def train_args(family: str, run_dir: Path) -> list[str]:
    config = SOURCE / "dcrl" / "recipes" / f"tiny-{family}.yaml"
    return ["train", "--config", str(config), *RUN_OPTIONS, f"log.output_dir={run_dir}"]


# The exploration recipes on vLLM's CPU build (tests/vllm_tier/helpers.py: float32 as the trainer,
# eager, a 1 GiB KV cache), cut as the tiny runs are: 6 steps of 8 prompts x 4 responses.
VLLM_OPTIONS = (
    "rollout.backend=vllm",
    "rollout.backend_options={dtype: float32, enforce_eager: true, kv_cache_gib: 1}",
    "rollout.n=4",
    "rollout.max_new_tokens=48",
    f"train.steps={STEPS}",
    "train.prompts_per_step=8",
    "train.mini_batch_prompts=4",
    "train.micro_batch_size=32",
    "train.save_every=2",
    "train.keep_checkpoints=2",
    "train.threads=1",
    "log.console=false",
    "log.tensorboard=false",
)


def vllm_train_args(family: str, run_dir: Path) -> list[str]:
    config = SOURCE / "dcrl" / "recipes" / f"explore-{family}.yaml"
    return ["train", "--config", str(config), *VLLM_OPTIONS, f"log.output_dir={run_dir}"]


def finish(process: subprocess.Popen, tally: dict[str, int]) -> tuple[int, str]:
    """Wait for a process; count a hang (killed at TIME_LIMIT_S) or a traceback. Returns (exit
    code, -1 for a hang; its stderr, or its whole output when stderr went to stdout)."""
    try:
        stdout, stderr = process.communicate(timeout=TIME_LIMIT_S)
        code = process.returncode
    except subprocess.TimeoutExpired:
        process.kill()
        stdout, stderr = process.communicate()
        tally["hangs"] += 1
        code = -1
    said = stderr if stderr is not None else stdout
    if code != -1 and "Traceback" in said:
        tally["tracebacks"] += 1
    return code, said


def stop(
    process: subprocess.Popen, kind: str, tally: dict[str, int], started: float
) -> dict[str, Any]:
    """kill -9 the process, unless it already ended (then its exit is checked as any other's);
    a process it leaves behind in its session counts as a stray (and is ended)."""
    killed = process.poll() is None
    if killed:
        process.send_signal(signal.SIGKILL)
        process.communicate()
        time.sleep(0.5)
        stray = left_in_session(process.pid)
        for pid in stray:  # started by this campaign
            os.kill(pid, signal.SIGKILL)
        tally["strays"] += len(stray)
    else:
        code, said = finish(process, tally)
        if code != 0:
            print(f"  the process meant to be killed exited {code}:\n{said[-1500:]}", flush=True)
    return {"kind": kind, "killed": killed, "seconds": time.monotonic() - started}


def checkpoint_being_written(run_dir: Path) -> bool:
    root = run_dir / "checkpoints"
    if not root.is_dir():
        return False
    try:
        return any(p.name.startswith(".tmp-") or p.name.endswith(".tmp") for p in root.iterdir())
    except FileNotFoundError:  # a directory renamed while listing
        return False


def latest_step(run_dir: Path) -> int:
    pointer = run_dir / "checkpoints" / "latest"
    return int(pointer.read_text().strip().split("_")[1]) if pointer.is_file() else 0


def logged_steps(run_dir: Path) -> list[int]:
    path = run_dir / "metrics.jsonl"
    return [record["step"] for _, record in read_metrics_log(path)] if path.is_file() else []


def without_timings(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if not k.startswith(("time/", "perf/"))}


def read_records(run_dir: Path) -> list[dict[str, Any]]:
    return [record for _, record in read_metrics_log(run_dir / "metrics.jsonl")]


def same_final_weights(a: Path, b: Path) -> bool:
    name = f"checkpoints/step_{STEPS:06d}/model.safetensors"
    weights_a, weights_b = load_file(a / name), load_file(b / name)
    return weights_a.keys() == weights_b.keys() and all(
        weights_a[k].equal(weights_b[k]) for k in weights_a
    )


def check_after_kill(run_dir: Path, checkpoint_before: int, tally: dict[str, int]) -> int:
    """After a kill: no checkpoint lost, every checkpointed step still logged."""
    checkpoint = latest_step(run_dir)
    if checkpoint < checkpoint_before:
        tally["lost_checkpoints"] += 1
    if not set(range(1, checkpoint + 1)) <= set(logged_steps(run_dir)):
        tally["lost_logs"] += 1
    return checkpoint


def kill_during_training(
    args: list[str],
    run_dir: Path,
    at_checkpoint: bool,
    duration: float,
    rng: random.Random,
    tally: dict[str, int],
    python: str = sys.executable,
) -> dict[str, Any]:
    """Start the run (`dcrl ARGS`); once it has a checkpoint, kill it at a random moment, or the
    instant it writes its next checkpoint."""
    process = dcrl(*args, python=python)
    started = time.monotonic()
    while latest_step(run_dir) == 0 and process.poll() is None:
        time.sleep(0.005)
    kill_at = time.monotonic() + (duration if at_checkpoint else rng.uniform(0.0, 0.3) * duration)
    while time.monotonic() < kill_at and process.poll() is None:
        if at_checkpoint and checkpoint_being_written(run_dir):
            break
        time.sleep(0.001 if at_checkpoint else 0.01)
    kind = "checkpoint write" if at_checkpoint else "training"
    return stop(process, kind, tally, started)


def kill_during_resume_start_up(
    run_dir: Path,
    rng: random.Random,
    tally: dict[str, int],
    python: str = sys.executable,
    longest: float = 4.0,
) -> dict[str, Any]:
    """Start `--resume` and kill it after a random delay (up to `longest` s), while it starts up
    (loads the model, restores the checkpoint, rewrites config.yaml and metrics.jsonl, starts
    an engine): before it logs a step. A kill that comes after the first new step is logged
    counts as one during training."""
    steps_before = len(logged_steps(run_dir))
    process = dcrl("train", "--resume", str(run_dir), python=python)
    delay = rng.uniform(0.5, longest)
    started = time.monotonic()
    while time.monotonic() - started < delay and process.poll() is None:
        time.sleep(0.005)
    kind = "training" if len(logged_steps(run_dir)) > steps_before else "resume start-up"
    return stop(process, kind, tally, started)


def campaign(
    runs: int,
    work: Path,
    rng: random.Random,
    tally: dict[str, int],
    make_args: Any = None,
    python: str = sys.executable,
    name: str = "",
) -> tuple[list[dict], dict[str, float]]:
    """(one record per killed run, the uninterrupted run's seconds per family). make_args(family,
    run_dir) gives a run's `dcrl` arguments (train_args: the tiny recipes); `python` runs them."""
    make_args = make_args or train_args
    results, durations = [], {}
    for family in FAMILIES:
        reference = work / f"{name}{family}-reference"
        started = time.monotonic()
        process = dcrl(*make_args(family, reference), python=python)
        while not logged_steps(reference) and process.poll() is None:
            time.sleep(0.05)
        start_up = time.monotonic() - started  # until its first step is logged
        code, stderr = finish(process, tally)
        duration = durations[family] = time.monotonic() - started
        assert code == 0, f"the uninterrupted {name}{family} run failed:\n{stderr}"
        print(f"{name}{family}: uninterrupted run {duration:.0f} s", flush=True)
        for index in range(runs):
            run_dir = work / f"{name}{family}-{index}"
            kills = [
                kill_during_training(
                    make_args(family, run_dir),
                    run_dir,
                    index % 2 == 1,
                    duration - start_up,
                    rng,
                    tally,
                    python,
                )
            ]
            checkpoint = check_after_kill(run_dir, 0, tally)
            if (run_dir / "checkpoints" / "latest").is_file():
                longest = max(4.0, 0.8 * start_up)
                kills.append(kill_during_resume_start_up(run_dir, rng, tally, python, longest))
                checkpoint = check_after_kill(run_dir, checkpoint, tally)
                process = dcrl("train", "--resume", str(run_dir), python=python)
            else:  # killed before its first checkpoint: nothing to resume, start again
                process = dcrl(*make_args(family, run_dir), python=python)
            code, stderr = finish(process, tally)
            identical = (
                code == 0
                and [without_timings(r) for r in read_records(run_dir)]
                == [without_timings(r) for r in read_records(reference)]
                and same_final_weights(run_dir, reference)
            )
            if code == 0 and sorted(logged_steps(run_dir)) != list(range(1, STEPS + 1)):
                tally["lost_logs"] += 1
            if code == 0 and not identical:
                print(f"  {differences(run_dir, reference)}", flush=True)
            results.append({"family": family, "run": index, "kills": kills, "identical": identical})
            done = ", ".join(f"{k['kind']} {'killed' if k['killed'] else 'missed'}" for k in kills)
            print(f"  run {index}: {done}; identical resume: {identical}", flush=True)
            if code != 0:
                print(stderr[-2000:], flush=True)
            shutil.rmtree(run_dir, ignore_errors=True)
    return results, durations


def differences(run_dir: Path, reference: Path) -> str:
    """The metrics (timings aside) in which a run differs from its reference, by step."""
    ours, theirs = read_records(run_dir), read_records(reference)
    found = [
        f"step {b.get('step')}: {key} {a.get(key)} != {b[key]}"
        for a, b in zip(ours, theirs, strict=False)
        for key in without_timings(b)
        if a.get(key) != b[key]
    ]
    return "; ".join(found[:8]) or "the metrics agree (the final weights differ)"


def same_as_reference(run_dir: Path, reference: Path) -> bool:
    return [without_timings(r) for r in read_records(run_dir)] == [
        without_timings(r) for r in read_records(reference)
    ] and same_final_weights(run_dir, reference)


def one_error_line(code: int, said: str, names: str = "") -> bool:
    errors = [line for line in said.splitlines() if line.startswith("error")]
    return code == 2 and len(errors) == 1 and names in errors[0] and "Traceback" not in said


def concurrent_writers(
    work: Path, reference: Path, duration: float, rng: random.Random, tally: dict[str, int]
) -> list[dict[str, Any]]:
    """Two writers of one run directory; exactly one may run (see the module docstring)."""
    outcomes = []
    for kind in ("started together", "second during training", "resume during training"):
        run_dir = work / f"concurrent-{kind.replace(' ', '-')}"
        first = dcrl(*train_args("grpo", run_dir))
        second_args = (
            ["train", "--resume", str(run_dir)]
            if kind == "resume during training"
            else train_args("grpo", run_dir)
        )
        if kind == "started together":
            second = dcrl(*second_args)
            codes_said = [finish(first, tally), finish(second, tally)]
        else:
            while not (run_dir / "metrics.jsonl").is_file() and first.poll() is None:
                time.sleep(0.01)  # it has taken the lock and trains
            time.sleep(rng.uniform(0.0, 0.1) * duration)
            # Paused mid-run (SIGSTOP), so that the second starts up and tries while the first
            # surely still holds the directory, however slow the machine; then it goes on.
            first.send_signal(signal.SIGSTOP)
            second_said = finish(dcrl(*second_args), tally)
            first.send_signal(signal.SIGCONT)
            codes_said = [finish(first, tally), second_said]
        finished = [code == 0 for code, _ in codes_said]
        refused = [one_error_line(code, said) for code, said in codes_said]
        intact = sum(finished) == 1 and sum(refused) == 1 and same_as_reference(run_dir, reference)
        if not intact:
            tally["lost_runs"] += 1
            for code, said in codes_said:
                print(f"  concurrent ({kind}): exit {code}\n{said[-1500:]}", flush=True)
        refusal = next((said for (code, said), r in zip(codes_said, refused, strict=True) if r), "")
        outcomes.append(
            {
                "kind": kind,
                "exit_codes": [code for code, _ in codes_said],
                "one_finished_intact": intact,
                "refusal": [line for line in refusal.splitlines() if line.startswith("error")][:1],
            }
        )
        print(f"  concurrent writers, {kind}: one run, intact: {intact}", flush=True)
        shutil.rmtree(run_dir, ignore_errors=True)
    return outcomes


# (what fails, file size limit in KiB): the tiny model's weights are 3.3 MiB, its optimizer state
# 6.5 MiB, config.yaml about 2 KiB.
DISK_LIMITS = (("config.yaml at start", 1), ("checkpoint weights", 2048), ("optimizer state", 4096))


def disk_full(work: Path, reference: Path, tally: dict[str, int]) -> list[dict[str, Any]]:
    """Runs under a real `ulimit -f` (see the module docstring)."""
    outcomes = []
    for what, limit_kib in DISK_LIMITS:
        run_dir = work / f"disk-full-{limit_kib}"
        command = f"ulimit -f {limit_kib}; exec {sys.executable} -m dcrl.cli " + " ".join(
            f"'{arg}'" for arg in train_args("grpo", run_dir)
        )
        process = subprocess.Popen(
            ["/bin/bash", "-c", command],
            cwd=SOURCE,
            env={**ENV, "PYTHONPATH": str(SOURCE)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        code, said = finish(process, tally)
        handled = one_error_line(code, said, str(run_dir))
        root = run_dir / "checkpoints"
        torn = (root.is_dir() and any(p.name.startswith(".tmp-") for p in root.iterdir())) or (
            (run_dir / "policy").exists()
            and not (run_dir / "policy" / "model.safetensors").exists()
        )
        resumable = (root / "latest").is_file()
        again = dcrl("train", "--resume", str(run_dir)) if resumable else None
        if again is None:
            again = dcrl(*train_args("grpo", run_dir))
        again_code, again_said = finish(again, tally)
        intact = again_code == 0 and not torn and same_as_reference(run_dir, reference)
        if not intact:
            tally["lost_runs"] += 1
            print(f"  disk full ({what}): then exit {again_code}\n{again_said[-1500:]}", flush=True)
        if not handled:
            print(f"  disk full ({what}): exit {code}\n{said[-1500:]}", flush=True)
        errors = [line for line in said.splitlines() if line.startswith("error")]
        outcomes.append(
            {
                "fails": what,
                "ulimit_f_kib": limit_kib,
                "exit_code": code,
                "one_error_naming_the_run": handled,
                "no_torn_files": not torn,
                "finished_intact_after": intact,
                "error": errors[:1],
            }
        )
        print(f"  disk full, {what}: one error: {handled}; intact after: {intact}", flush=True)
        shutil.rmtree(run_dir, ignore_errors=True)
    return outcomes


# (what, family, settings, the setting the error must name, the fix: (section, key, value)).
# The runs: tests/test_memory_faults.py's SMALL (3 steps of 8 prompts x 16 responses, one
# mini-batch, a checkpoint every step, dcrl's decoding loop).
MEMORY_CASES = (
    *(
        (
            "update too big",
            family,
            UPDATE_TOO_BIG,
            "train.micro_batch_size",
            ("train", "micro_batch_size", 8),
        )
        for family in FAMILIES
    ),
    (
        "rollout too big",
        "grpo",
        ROLLOUT_TOO_BIG,
        "rollout.batch_size",
        ("rollout", "batch_size", 1),
    ),
)


def limited(margin: str, args: list[str]) -> subprocess.Popen:
    """`dcrl ARGS` under the address-space limit of tests/test_memory_faults.py's launcher."""
    return subprocess.Popen(
        [sys.executable, "-m", "tests.test_memory_faults", margin, *args],
        cwd=SOURCE,
        env={**ENV, **MALLOC_ENV, "PYTHONPATH": str(SOURCE)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def step_1_intact(run_dir: Path) -> bool:
    """The checkpoint of step 1 is the latest and reads back; nothing of step 2 was written."""
    root = run_dir / "checkpoints"
    try:
        state = json.loads((root / "step_000001" / "trainer_state.json").read_text())
        load_file(root / "step_000001" / "model.safetensors")
    except Exception:
        return False
    return (
        latest_step(run_dir) == 1
        and state["step"] == 1
        and sorted(p.name for p in root.iterdir()) == ["latest", "step_000001"]
        and logged_steps(run_dir) == [1]
    )


def memory_campaign(work: Path, tally: dict[str, int]) -> list[dict[str, Any]]:
    """Batches that do not fit under a real memory limit (see the module docstring)."""
    import yaml

    outcomes = []
    for what, family, settings, setting, (section, key, value) in MEMORY_CASES:
        run_dir = work / f"memory-{family}-{what.replace(' ', '-')}"
        config = SOURCE / "dcrl" / "recipes" / f"tiny-{family}.yaml"
        args = ["train", "--config", str(config), *SMALL, *settings, f"log.output_dir={run_dir}"]
        code, said = finish(limited("half", args), tally)
        limit = LIMIT_LINE.search(said)
        handled = one_error_line(code, said, setting) and f"--resume {run_dir}`" in said
        intact = step_1_intact(run_dir)
        if not intact:
            tally["lost_checkpoints"] += 1
        resumed = False
        if limit and (run_dir / "config.yaml").is_file():
            saved = yaml.safe_load((run_dir / "config.yaml").read_text())
            saved[section][key] = value
            (run_dir / "config.yaml").write_text(yaml.safe_dump(saved, sort_keys=False))
            again = limited(limit.group(3), ["train", "--resume", str(run_dir)])
            again_code, again_said = finish(again, tally)
            resumed = again_code == 0 and logged_steps(run_dir) == list(range(1, LIMITED_STEPS + 1))
            if not resumed:
                print(f"  memory ({what}, {family}): then exit {again_code}\n{again_said[-1500:]}")
        if not resumed:
            tally["lost_runs"] += 1
        if not handled:
            print(f"  memory ({what}, {family}): exit {code}\n{said[-1500:]}", flush=True)
        errors = [line for line in said.splitlines() if line.startswith("error")]
        outcomes.append(
            {
                "case": what,
                "family": family,
                "settings": list(settings),
                "limit_mib": int(limit.group(1)) if limit else None,
                "process_mib": int(limit.group(2)) if limit else None,
                "margin_mib": int(limit.group(3)) if limit else None,
                "exit_code": code,
                "one_error_naming_the_setting": handled,
                "checkpoint_intact": intact,
                "fix": f"{section}.{key}={value}",
                "resumed_under_the_limit": resumed,
                "error": errors[:1],
            }
        )
        print(
            f"  memory, {what} ({family}): one error naming {setting}: {handled}; checkpoint "
            f"intact: {intact}; resumed with {section}.{key}={value}: {resumed}",
            flush=True,
        )
        shutil.rmtree(run_dir, ignore_errors=True)
    return outcomes


def bad_input_corpus(work: Path, tally: dict[str, int]) -> list[dict[str, Any]]:
    """Every case of tests/fault_inputs.py as a real process: exit 2, one error line naming it."""
    outcomes = []
    for case in BAD_INPUTS:
        scratch = work / f"input-{case.name}"
        scratch.mkdir(parents=True)
        code, stderr = finish(dcrl(*case.args(scratch)), tally)
        errors = [line for line in stderr.splitlines() if line.startswith("error")]
        expected = case.names.replace("{scratch}", str(scratch))
        ok = code == 2 and len(errors) == 1 and expected in errors[0] and "Traceback" not in stderr
        outcomes.append({"input": case.name, "exit_code": code, "ok": ok, "error": errors[:1]})
        if not ok:
            print(f"  bad input {case.name}: exit {code}\n{stderr[-1500:]}", flush=True)
        shutil.rmtree(scratch, ignore_errors=True)
    return outcomes


def fault_tests(tally: dict[str, int]) -> dict[str, Any]:
    """The in-process fault suite (tests marked `faults`, incl. 1,000 fuzzed grader inputs)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-m", "faults", "-p", "no:cacheprovider"],
        cwd=SOURCE,
        env={**ENV, "PYTHONPATH": str(SOURCE)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    code, output = finish(process, tally)
    summary = output.strip().splitlines()[-1] if output.strip() else ""
    return {"exit_code": code, "summary": summary}


def draw(results: list[dict], durations: dict[str, float], path: Path) -> None:
    """Where each run was killed: seconds after its process started, one row per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {
        "training": "tab:blue",
        "checkpoint write": "tab:orange",
        "resume start-up": "tab:red",
    }
    fig, axes = plt.subplots(
        1, 2, figsize=(8, 0.25 * len(results) + 1.6), sharey=True, width_ratios=[2, 1]
    )
    for row, result in enumerate(results):
        for ax, item in zip(axes, result["kills"], strict=False):
            ax.scatter(
                item["seconds"],
                row,
                color=colors[item["kind"]],
                marker="x" if item["killed"] else "o",
                label=item["kind"],
            )
        axes[0].plot([0, durations[result["family"]]], [row, row], color="0.85", zorder=0)
    labels = {}
    for ax in axes:
        handles, names = ax.get_legend_handles_labels()
        labels.update(zip(names, handles, strict=True))
    axes[1].legend(labels.values(), labels.keys(), loc="upper left", bbox_to_anchor=(1.0, 1.0))
    marks = [f"{r['family']} #{r['run']} {'=' if r['identical'] else '≠'}" for r in results]
    axes[0].set_yticks(range(len(results)), marks)
    axes[0].invert_yaxis()
    axes[0].set_xlabel("s after start (grey: uninterrupted run)")
    axes[1].set_xlabel("s after --resume")
    axes[0].set_title("kill 1: training", fontsize=10)
    axes[1].set_title("kill 2: resume start-up", fontsize=10)
    fig.suptitle("kill -9, then resume ('=': metrics and weights identical to uninterrupted)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


GROUPS = ("main", "memory", "vllm")


def memory_markdown(outcomes: list[dict], summary: dict, commit: str) -> str:
    lines = [
        f"Run on commit {commit[:7]} (`python bench/faults.py --only memory`, "
        f"{summary['seconds']} s; `results/faults_memory.json`):",
        "",
        "| case | limit (process + margin) | one `error:` line naming the setting | checkpoint of "
        "step 1 intact | finished with the fix, same limit |",
        "|---|---|---|---|---|",
    ]
    for o in outcomes:
        limit = (
            f"{o['limit_mib']} MiB ({o['process_mib']} + {o['margin_mib']})"
            if o["limit_mib"]
            else "not set"
        )
        lines.append(
            f"| {o['case']} ({o['family'].upper()}, {', '.join(o['settings'])}) | {limit} | "
            f"{'yes' if o['one_error_naming_the_setting'] else '**no**'} | "
            f"{'yes' if o['checkpoint_intact'] else '**no**'} | "
            f"{'yes' if o['resumed_under_the_limit'] else '**no**'} ({o['fix']}) |"
        )
    lines += [
        "",
        f"Tracebacks **{summary['tracebacks']}**, hangs **{summary['hangs']}**, lost checkpoints "
        f"**{summary['lost_checkpoints']}**, lost runs **{summary['lost_runs']}**. The errors "
        "(GRPO):",
        "",
        "```",
        *((o["error"] or ["(none)"])[0] for o in outcomes if o["family"] == "grpo"),
        "```",
    ]
    return "\n".join(lines)


def vllm_markdown(results: list[dict], summary: dict, commit: str) -> str:
    kinds = summary["vllm_kills_by_kind"]
    return "\n".join(
        [
            f"Run on commit {commit[:7]} (`python bench/faults.py --only vllm --vllm-python "
            f".venv-vllm/bin/python --vllm-runs {summary['vllm_runs_per_family']}`, "
            f"{summary['seconds']} s; `results/faults_vllm.json`):",
            "",
            "| what | result | goal |",
            "|---|---|---|",
            f"| killed runs ({' / '.join(f.upper() for f in FAMILIES)}) | {len(results)} ("
            + " / ".join(str(sum(r["family"] == f for r in results)) for f in FAMILIES)
            + ") | |",
            f"| `kill -9`s: in training / during a checkpoint write / during resume start-up "
            f"(the engine starting) | {summary['vllm_kills']}: {kinds['training']} / "
            f"{kinds['checkpoint write']} / {kinds['resume start-up']} | |",
            f"| identical resumes (every metric but timings, and the final weights) | "
            f"**{summary['vllm_identical_resumes']} / {len(results)}** | all |",
            f"| lost logs / lost checkpoints | **{summary['lost_logs']} / "
            f"{summary['lost_checkpoints']}** | 0 |",
            f"| processes left behind by a killed run (an engine outliving its trainer) | "
            f"**{summary['strays']}** | 0 |",
            f"| tracebacks / hangs | **{summary['tracebacks']} / {summary['hangs']}** | 0 |",
        ]
    )


def write_readme_block(name: str, text: str) -> None:
    sys.path.insert(0, str(REPO / "bench"))
    from readme_blocks import write_block

    write_block(REPO / "bench" / "README.md", name, text)


def new_tally() -> dict[str, int]:
    return {
        "tracebacks": 0,
        "hangs": 0,
        "lost_logs": 0,
        "lost_checkpoints": 0,
        "lost_runs": 0,
        "strays": 0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="Killed runs per family.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the kill moments.")
    parser.add_argument(
        "--skip-corpus", action="store_true", help="No bad-input corpus and no fault tests."
    )
    parser.add_argument(
        "--only",
        nargs="+",
        choices=GROUPS,
        help="Run only these campaigns: main (kills, concurrent writers, disk full, the corpus: "
        "faults.json), memory (faults_memory.json), vllm (faults_vllm.json); the others' "
        "results are left as they are.",
    )
    parser.add_argument(
        "--vllm-python",
        type=Path,
        help="The python of an environment with vLLM (.venv-vllm/bin/python): adds the vLLM "
        "engine campaign.",
    )
    parser.add_argument("--vllm-runs", type=int, default=2, help="Killed vLLM runs per family.")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args()
    groups = set(args.only or ["main", "memory", *(["vllm"] if args.vllm_python else [])])
    if "vllm" in groups and args.vllm_python is None:
        parser.error("the vllm campaign needs --vllm-python (e.g. .venv-vllm/bin/python)")

    rng = random.Random(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    global SOURCE
    with tempfile.TemporaryDirectory(prefix="dcrl-faults-") as scratch:
        work = Path(scratch)
        SOURCE, commit = snapshot(work / "source")
        print(f"campaign on commit {commit[:10]} (a snapshot in {SOURCE})", flush=True)
        if "main" in groups:
            main_campaigns(args, work, rng, commit)
        if "memory" in groups:
            started, tally = time.monotonic(), new_tally()
            outcomes = memory_campaign(work, tally)
            summary = {
                "trials": len(outcomes),
                "one_error_naming_the_setting": sum(
                    o["one_error_naming_the_setting"] for o in outcomes
                ),
                "checkpoint_intact": sum(o["checkpoint_intact"] for o in outcomes),
                "resumed_under_the_limit": sum(o["resumed_under_the_limit"] for o in outcomes),
                **tally,
                "seconds": round(time.monotonic() - started),
            }
            record = {"summary": summary, "commit": commit, "cases": outcomes}
            (args.out / "faults_memory.json").write_text(json.dumps(record, indent=2) + "\n")
            text = memory_markdown(outcomes, summary, commit)
            (args.out / "faults_memory.md").write_text(text + "\n")
            write_readme_block("faults-memory", text)
            print(json.dumps(summary, indent=2))
        if "vllm" in groups:
            started, tally = time.monotonic(), new_tally()
            python = str(args.vllm_python.absolute())  # not resolve(): a venv's python is a link
            results, durations = campaign(
                args.vllm_runs, work, rng, tally, vllm_train_args, python, "vllm-"
            )
            kills = [k for r in results for k in r["kills"] if k["killed"]]
            summary = {
                "vllm_runs_per_family": args.vllm_runs,
                "vllm_runs": len(results),
                "vllm_kills": len(kills),
                "vllm_kills_by_kind": {
                    kind: sum(k["kind"] == kind for k in kills)
                    for kind in ("training", "checkpoint write", "resume start-up")
                },
                "vllm_identical_resumes": sum(r["identical"] for r in results),
                **tally,
                "seconds": round(time.monotonic() - started),
            }
            record = {
                "summary": summary,
                "settings": {
                    "commit": commit,
                    "families": FAMILIES,
                    "steps": STEPS,
                    "options": VLLM_OPTIONS,
                    "seed": args.seed,
                },
                "uninterrupted_seconds": durations,
                "runs": results,
            }
            (args.out / "faults_vllm.json").write_text(json.dumps(record, indent=2) + "\n")
            text = vllm_markdown(results, summary, commit)
            (args.out / "faults_vllm.md").write_text(text + "\n")
            write_readme_block("faults-vllm", text)
            print(json.dumps(summary, indent=2))


def main_campaigns(args: argparse.Namespace, work: Path, rng: random.Random, commit: str) -> None:
    """Kills, concurrent writers, disk full, the corpus and the fault tests: faults.json."""
    tally = new_tally()
    started = time.monotonic()
    results, durations = campaign(args.runs, work, rng, tally)
    reference = work / "grpo-reference"
    concurrent = concurrent_writers(work, reference, durations["grpo"], rng, tally)
    full = disk_full(work, reference, tally)
    corpus = [] if args.skip_corpus else bad_input_corpus(work, tally)
    tests = {} if args.skip_corpus else fault_tests(tally)
    kills = [k for r in results for k in r["kills"] if k["killed"]]
    summary = {
        "runs": len(results),
        "kills": len(kills),
        "kills_by_kind": {
            kind: sum(k["kind"] == kind for k in kills)
            for kind in ("training", "checkpoint write", "resume start-up")
        },
        "identical_resumes": sum(r["identical"] for r in results),
        "concurrent_trials": len(concurrent),
        "concurrent_one_intact_run": sum(o["one_finished_intact"] for o in concurrent),
        "disk_full_trials": len(full),
        "disk_full_one_error": sum(o["one_error_naming_the_run"] for o in full),
        "disk_full_intact_after": sum(o["finished_intact_after"] for o in full),
        "inputs_tried": len(corpus),
        "inputs_handled": sum(o["ok"] for o in corpus),
        **tally,
        "seconds": round(time.monotonic() - started),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    record = {
        "summary": summary,
        "settings": {
            "commit": commit,
            "families": FAMILIES,
            "steps": STEPS,
            "options": RUN_OPTIONS,
            "seed": args.seed,
        },
        "uninterrupted_seconds": durations,
        "runs": results,
        "concurrent_writers": concurrent,
        "disk_full": full,
        "bad_inputs": corpus,
        "fault_tests": tests,
    }
    (args.out / "faults.json").write_text(json.dumps(record, indent=2) + "\n")
    draw(results, durations, args.out / "faults.png")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
