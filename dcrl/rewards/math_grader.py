r"""Math answer grading: the last `\boxed{}` against the ground truth, with math-verify, under a
hard time limit.

The papers grade a response 1 if the content of its last `\boxed{}` is mathematically equivalent to
the reference answer and 0 otherwise (arXiv 2510.08141 / 2601.12730 / 2605.07316 via EasyR1's
`math_compute_score`; docs/papers.md §1.2, §6). dcrl grades with math-verify (sympy-based) rather
than mathruler, and makes the grader safe to call on arbitrary model output:

1. a cheap fast path in this process: equal after normalizing spacing and `\left`/`\dfrac`
   spellings, or two plain integers, decide without sympy (most math answers are integers);
2. an answer longer than `max_answer_chars` scores 0 without parsing;
3. everything else goes to a persistent worker *process* running math-verify with its own timeouts
   off. The caller waits at most `timeout_s`; past that the worker is killed and replaced, and the
   answer scores 0. A process is used from every thread, main or not: math-verify's own timeouts
   rely on `signal.alarm`, which works only in the main thread, replaces the host program's
   SIGALRM handler, and cannot interrupt work stuck inside C code (big-integer arithmetic).

The worker needs a POSIX system (`select` on pipes, `resource` limits). Measured on 2 shared CPU
cores: the fast path takes microseconds; a symbolic answer about 7.6 ms through the worker
against 6.6 ms for math-verify in-process (distinct answers, so no cache hits).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import math
import os
import queue
import re
import select
import subprocess
import sys
import threading
from pathlib import Path

from dcrl.rewards.extraction import extract_boxed

# Spellings that never change an answer's value; removed before the fast-path string comparison.
_NEUTRAL_LATEX = re.compile(r"\s+|\$|\\left|\\right|\\[,;:! ]")
_INTEGER = re.compile(r"-?\d+")


def _normalize(answer: str) -> str:
    answer = _NEUTRAL_LATEX.sub("", answer)
    answer = answer.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    return answer.rstrip(".")


def _canonical_integer(digits: str) -> str:
    """An integer's canonical spelling ("-007" -> "-7", "-0" -> "0"), compared as text: `int()`
    refuses strings over 4,300 digits (CVE-2020-10735), and a gold answer can be that long."""
    negative = digits.startswith("-")
    magnitude = digits.lstrip("-").lstrip("0") or "0"
    return "-" + magnitude if negative and magnitude != "0" else magnitude


class _WorkerProcess:
    """One `python -m dcrl.rewards._math_worker` child and its pipes (see that module)."""

    def __init__(self, cpu_seconds_per_answer: int) -> None:
        env = dict(os.environ)
        package_parent = str(Path(__file__).resolve().parents[2])  # the folder holding `dcrl/`
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_parent, env.get("PYTHONPATH")]))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "dcrl.rewards._math_worker", str(cpu_seconds_per_answer)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        self.ready = False

    def read_line(self, timeout_s: float) -> str | None:
        """The next reply line, or None if none came within `timeout_s` or the worker died."""
        readable, _, _ = select.select([self.process.stdout], [], [], max(timeout_s, 0.0))
        if not readable:
            return None
        line = self.process.stdout.readline()
        return line.decode().strip() if line else None

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()
        with contextlib.suppress(BrokenPipeError):  # an unsent request is dropped
            self.process.stdin.close()
        self.process.stdout.close()

    def close(self) -> None:
        with contextlib.suppress(BrokenPipeError):
            self.process.stdin.close()  # the worker exits at end of input
        try:
            self.process.wait(timeout=2.0)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process.stdout.close()


class MathGrader:
    r"""A math reward function (`fn(completion, answer, **meta) -> 0.0 | 1.0`) with a time limit.

    Thread-safe. Worker processes start on the first call that needs one (about a second to
    import math-verify; that start-up is not counted against `timeout_s`).

    Args:
        timeout_s: the most seconds one answer may take to grade; past it the answer scores 0 and
            the worker is replaced. math-verify's own default is 5 s; legitimate answers take
            milliseconds.
        max_answer_chars: extracted answers longer than this score 0 without being parsed (no
            reference answer is that long; a runaway generation can be).
        num_workers: worker processes, i.e. how many threads can grade at once.

    Attributes:
        timeouts: how many answers scored 0 because they hit `timeout_s` (or crashed the worker).

    >>> grader = MathGrader(timeout_s=5.0)
    >>> grader(r"... so the answer is \boxed{\dfrac{1}{2}}", "1/2")  # fast path, no worker
    1.0
    >>> grader.close()
    """

    def __init__(
        self, timeout_s: float = 5.0, max_answer_chars: int = 1000, num_workers: int = 1
    ) -> None:
        if timeout_s <= 0:
            raise ValueError(f"MathGrader: timeout_s={timeout_s} must be > 0 (seconds per answer).")
        if num_workers < 1:
            raise ValueError(f"MathGrader: num_workers={num_workers} must be >= 1.")
        self.timeout_s = timeout_s
        self.max_answer_chars = max_answer_chars
        self.num_workers = num_workers
        self.timeouts = 0
        # CPU time <= wall time, so the deadline acts first; the CPU limit stops orphans.
        self._cpu_seconds_per_answer = math.ceil(timeout_s) + 1
        self._idle_workers: queue.Queue[_WorkerProcess] | None = None
        self._start_lock = threading.Lock()
        self._owner_pid = os.getpid()

    def __call__(self, completion: str, answer: str, **meta: object) -> float:
        prediction = extract_boxed(completion)
        if prediction is None or len(prediction) > self.max_answer_chars:
            return 0.0
        boxed_gold = extract_boxed(answer)  # datasets sometimes store the answer boxed
        gold = boxed_gold if boxed_gold is not None else answer
        prediction_normalized, gold_normalized = _normalize(prediction), _normalize(gold)
        if prediction_normalized == gold_normalized:
            return 1.0
        if _INTEGER.fullmatch(prediction_normalized) and _INTEGER.fullmatch(gold_normalized):
            return float(
                _canonical_integer(prediction_normalized) == _canonical_integer(gold_normalized)
            )
        return self._verify_in_worker(gold, prediction)

    def _verify_in_worker(self, gold: str, prediction: str) -> float:
        idle_workers = self._workers()
        worker = idle_workers.get()
        try:
            for _ in range(2):  # a second try only if the worker died before this answer
                if not worker.ready:
                    if worker.read_line(timeout_s=120.0) != "ready":
                        raise RuntimeError(
                            "MathGrader: the math-verify worker process failed to start (its "
                            "error is printed above). Check that `python -c 'import "
                            f"math_verify'` works in {sys.executable}."
                        )
                    worker.ready = True
                try:
                    worker.process.stdin.write((json.dumps([gold, prediction]) + "\n").encode())
                    worker.process.stdin.flush()
                except BrokenPipeError:  # killed from outside while idle: not this answer's fault
                    worker.kill()
                    worker = _WorkerProcess(self._cpu_seconds_per_answer)
                    continue
                reply = worker.read_line(timeout_s=self.timeout_s)
                if reply is None:  # past the deadline, or the worker died on this input
                    self.timeouts += 1
                    worker.kill()
                    worker = _WorkerProcess(self._cpu_seconds_per_answer)  # starts importing now
                    return 0.0
                assert reply in ("0", "1"), f"unexpected math-verify worker reply {reply!r}"
                return float(reply == "1")
            raise RuntimeError("MathGrader: the math-verify worker process keeps dying at start.")
        finally:
            idle_workers.put(worker)

    def _workers(self) -> queue.Queue[_WorkerProcess]:
        with self._start_lock:
            if self._idle_workers is None or self._owner_pid != os.getpid():
                # Started lazily; after a fork the child starts its own (it must not share pipes).
                self._owner_pid = os.getpid()
                self._idle_workers = queue.Queue()
                for _ in range(self.num_workers):
                    self._idle_workers.put(_WorkerProcess(self._cpu_seconds_per_answer))
            return self._idle_workers

    def close(self) -> None:
        """Stop the worker processes (a later call starts new ones)."""
        with self._start_lock:
            if self._idle_workers is None or self._owner_pid != os.getpid():
                self._idle_workers = None
                return
            for _ in range(self.num_workers):
                self._idle_workers.get().close()  # waits for workers busy in other threads
            self._idle_workers = None


_default_grader = MathGrader()
atexit.register(_default_grader.close)


def math_reward(completion: str, answer: str, **meta: object) -> float:
    r"""1.0 if the last `\boxed{}` of `completion` is mathematically equivalent to `answer`, else 0.0.

    The papers' accuracy reward (docs/papers.md §1.2, §6), graded by math-verify under a 5-second
    limit per answer: no box, an over-long answer, a grading timeout or a crash all score 0, from
    any thread. For another limit, build a `MathGrader(timeout_s=...)`; it is a reward function too.

    Args:
        completion: the model's response text.
        answer: the reference answer, LaTeX or plain (`"\frac{1}{2}"`, `"0.5"`, `"2x+2"`); a boxed
            reference is unboxed first.
        **meta: the problem's metadata (unused).

    >>> math_reward(r"<think>...</think> The answer is \boxed{42}.", "42")
    1.0
    >>> math_reward(r"\boxed{41}", "42")
    0.0
    """
    return _default_grader(completion, answer)
