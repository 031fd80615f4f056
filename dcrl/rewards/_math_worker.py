"""The math-verify worker process behind `dcrl.rewards.math_grader.MathGrader`.

Run as `python -m dcrl.rewards._math_worker CPU_SECONDS`. It prints "ready" once math-verify is
imported, then answers each stdin line `[gold, prediction]` (JSON, both LaTeX answer strings
without a box) with one stdout line, "1" (equivalent) or "0". math-verify's own signal-based
timeouts are off: the parent enforces the wall-clock deadline by killing this process, which also
stops work stuck in C code that a signal handler cannot interrupt. Each answer may also use at
most CPU_SECONDS of CPU (RLIMIT_CPU; the kernel kills the process past it), so a worker whose
parent died mid-answer cannot compute forever.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import resource
import sys


def main() -> None:
    cpu_seconds_per_answer = int(sys.argv[1])
    # Stray prints from libraries must not corrupt the protocol: keep a private copy of stdout for
    # the replies and point file descriptor 1 at stderr.
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    logging.getLogger("math_verify").setLevel(logging.ERROR)  # the "timeout disabled" warning
    from math_verify import parse, verify

    @functools.lru_cache(maxsize=4096)  # a group of n responses shares one gold answer
    def parse_gold(gold: str) -> list:
        return parse("\\boxed{" + gold + "}", parsing_timeout=None)

    _, cpu_hard_limit = resource.getrlimit(resource.RLIMIT_CPU)
    replies.write("ready\n")
    for line in sys.stdin:
        gold, prediction = json.loads(line)
        usage = resource.getrusage(resource.RUSAGE_SELF)
        cpu_limit = int(usage.ru_utime + usage.ru_stime) + cpu_seconds_per_answer
        if cpu_hard_limit != resource.RLIM_INFINITY:
            cpu_limit = min(cpu_limit, cpu_hard_limit)
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_limit, cpu_hard_limit))
        try:
            parsed_prediction = parse("\\boxed{" + prediction + "}", parsing_timeout=None)
            equivalent = verify(parse_gold(gold), parsed_prediction, timeout_seconds=None)
        except Exception:
            equivalent = False
        replies.write("1\n" if equivalent else "0\n")


if __name__ == "__main__":
    main()
