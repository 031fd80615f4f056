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

    python bench/faults.py                 # about 10-15 minutes on 2 CPU cores
    python bench/faults.py --runs 1 --skip-corpus  # a quick look

Writes bench/results/faults.json and bench/results/faults.png.
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


def dcrl(*args: str) -> subprocess.Popen:
    """Start `dcrl ARGS` as a real process (`python -m dcrl.cli`, so tests.* rewards import)."""
    return subprocess.Popen(
        [sys.executable, "-m", "dcrl.cli", *args],
        cwd=SOURCE,
        env={**ENV, "PYTHONPATH": str(SOURCE)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


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
    """kill -9 the process, unless it already ended (then its exit is checked as any other's)."""
    killed = process.poll() is None
    if killed:
        process.send_signal(signal.SIGKILL)
        process.communicate()
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
    family: str,
    run_dir: Path,
    at_checkpoint: bool,
    duration: float,
    rng: random.Random,
    tally: dict[str, int],
) -> dict[str, Any]:
    """Start the run; once it has a checkpoint, kill it at a random moment, or the instant it
    writes its next checkpoint."""
    process = dcrl(*train_args(family, run_dir))
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
    run_dir: Path, rng: random.Random, tally: dict[str, int]
) -> dict[str, Any]:
    """Start `--resume` and kill it after a random delay, while it starts up (loads the model,
    restores the checkpoint, rewrites config.yaml and metrics.jsonl): before it logs a step.
    A kill that comes after the first new step is logged counts as one during training."""
    steps_before = len(logged_steps(run_dir))
    process = dcrl("train", "--resume", str(run_dir))
    delay = rng.uniform(0.5, 4.0)
    started = time.monotonic()
    while time.monotonic() - started < delay and process.poll() is None:
        time.sleep(0.005)
    kind = "training" if len(logged_steps(run_dir)) > steps_before else "resume start-up"
    return stop(process, kind, tally, started)


def campaign(
    runs: int, work: Path, rng: random.Random, tally: dict[str, int]
) -> tuple[list[dict], dict[str, float]]:
    """(one record per killed run, the uninterrupted run's seconds per family)."""
    results, durations = [], {}
    for family in FAMILIES:
        reference = work / f"{family}-reference"
        started = time.monotonic()
        code, stderr = finish(dcrl(*train_args(family, reference)), tally)
        duration = durations[family] = time.monotonic() - started
        assert code == 0, f"the uninterrupted {family} run failed:\n{stderr}"
        print(f"{family}: uninterrupted run {duration:.0f} s", flush=True)
        for index in range(runs):
            run_dir = work / f"{family}-{index}"
            kills = [kill_during_training(family, run_dir, index % 2 == 1, duration, rng, tally)]
            checkpoint = check_after_kill(run_dir, 0, tally)
            if (run_dir / "checkpoints" / "latest").is_file():
                kills.append(kill_during_resume_start_up(run_dir, rng, tally))
                checkpoint = check_after_kill(run_dir, checkpoint, tally)
                process = dcrl("train", "--resume", str(run_dir))
            else:  # killed before its first checkpoint: nothing to resume, start again
                process = dcrl(*train_args(family, run_dir))
            code, stderr = finish(process, tally)
            identical = (
                code == 0
                and [without_timings(r) for r in read_records(run_dir)]
                == [without_timings(r) for r in read_records(reference)]
                and same_final_weights(run_dir, reference)
            )
            if code == 0 and sorted(logged_steps(run_dir)) != list(range(1, STEPS + 1)):
                tally["lost_logs"] += 1
            results.append({"family": family, "run": index, "kills": kills, "identical": identical})
            done = ", ".join(f"{k['kind']} {'killed' if k['killed'] else 'missed'}" for k in kills)
            print(f"  run {index}: {done}; identical resume: {identical}", flush=True)
            if code != 0:
                print(stderr[-2000:], flush=True)
            shutil.rmtree(run_dir, ignore_errors=True)
    return results, durations


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="Killed runs per family.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the kill moments.")
    parser.add_argument(
        "--skip-corpus", action="store_true", help="No bad-input corpus and no fault tests."
    )
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args()

    rng = random.Random(args.seed)
    tally = {"tracebacks": 0, "hangs": 0, "lost_logs": 0, "lost_checkpoints": 0, "lost_runs": 0}
    started = time.monotonic()
    global SOURCE
    with tempfile.TemporaryDirectory(prefix="dcrl-faults-") as scratch:
        work = Path(scratch)
        SOURCE, commit = snapshot(work / "source")
        print(f"campaign on commit {commit[:10]} (a snapshot in {SOURCE})", flush=True)
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
