"""User reward functions under a time limit, like the math grader's.

`BoundedReward(fn, timeout_s, max_timeouts)` is itself a reward function; `reward_fn_for_run`
gives a run's reward function by name, a user one wrapped. Each call of `fn` may
take at most `timeout_s` seconds; past that it is interrupted, the sample scores 0, and a warning
naming the function and the sample goes to stderr. A reward that times out on `max_timeouts`
calls in a row is broken (it hangs on every input), so that call raises a `RewardError` naming
the function and the limit, and the run stops with one error line — its last checkpoint intact.
A call that returns resets the count: a reward that is slow only on the odd adversarial answer
scores those answers 0 and keeps going.

How: the limit is a `SIGALRM` timer (`signal.setitimer`) armed around each call in the main
thread, which interrupts Python code, `time.sleep` and blocking I/O. It cannot interrupt a call
stuck inside a C extension that never returns to the interpreter, and off the main thread (no
signals there) calls run without a limit. dcrl's own graders (math, exact, numeric, the tasks'
verifiers) are not wrapped: the math grader bounds itself in a worker process.

Metadata isolation and errors (`SystemExit` included) are `score_batch`'s business: every call
gets its own deep copy of the sample's metadata.
"""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any

from dcrl.rewards.registry import RewardError, RewardFn, get_reward_fn

DEFAULT_TIMEOUT_S = 5.0
DEFAULT_MAX_TIMEOUTS = 3


class _Timeout(BaseException):  # noqa: N818 - BaseException: an `except Exception` in user code does not swallow it
    """Raised inside a user reward when its time is up."""


def _on_alarm(signum: int, frame: Any) -> None:
    raise _Timeout


class BoundedReward:
    """`fn` under a time limit of `timeout_s` seconds per call (see the module doc).

    Attributes:
        timeouts: calls that hit the limit so far (each scored 0).
    """

    def __init__(
        self,
        fn: RewardFn,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        max_timeouts: int = DEFAULT_MAX_TIMEOUTS,
        setting: str = "data.reward_timeout_s",
    ) -> None:
        if not timeout_s > 0:
            raise ValueError(f"BoundedReward: timeout_s={timeout_s} must be > 0 (seconds per call)")
        if max_timeouts < 1:
            raise ValueError(f"BoundedReward: max_timeouts={max_timeouts} must be ≥ 1")
        self.fn = fn
        self.timeout_s = float(timeout_s)
        self.max_timeouts = int(max_timeouts)
        self.setting = setting
        self.timeouts = 0
        self.timeouts_in_a_row = 0
        self.__wrapped__ = fn  # inspect.signature (check_reward_fn) sees fn's parameters
        self.__name__ = getattr(fn, "__name__", repr(fn))
        self.__qualname__ = getattr(fn, "__qualname__", self.__name__)

    def __call__(self, completion: str, answer: str, **meta: Any) -> Any:
        if threading.current_thread() is not threading.main_thread():
            return self.fn(completion, answer, **meta)
        previous = signal.signal(signal.SIGALRM, _on_alarm)
        returned = False
        try:
            try:
                signal.setitimer(signal.ITIMER_REAL, self.timeout_s)
                reward = self.fn(completion, answer, **meta)
                returned = True
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
        except _Timeout:
            if not returned:  # (the alarm may also land just after the call returned)
                return self._timed_out(answer)
        finally:
            signal.signal(signal.SIGALRM, previous)
        self.timeouts_in_a_row = 0
        return reward

    def _timed_out(self, answer: str) -> float:
        self.timeouts += 1
        self.timeouts_in_a_row += 1
        if self.timeouts_in_a_row >= self.max_timeouts:
            raise RewardError(
                f"reward function {self.__qualname__} did not return within {self.timeout_s:g} s "
                f"on {self.timeouts_in_a_row} calls in a row (answer {answer!r}): it hangs. Fix "
                f"the function, or raise {self.setting} if it really needs longer per sample"
            )
        print(
            f"warning: reward function {self.__qualname__} did not return within "
            f"{self.timeout_s:g} s (answer {answer!r}); the sample scores 0 "
            f"({self.timeouts_in_a_row} of {self.max_timeouts} timeouts in a row stop the run)",
            file=sys.stderr,
        )
        return 0.0


def reward_fn_for_run(
    name: str,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    max_timeouts: int = DEFAULT_MAX_TIMEOUTS,
) -> RewardFn:
    """The reward function `name` as a training run calls it (`get_reward_fn`): a user function
    ("package.module:function") under `BoundedReward`'s time limit (data.reward_timeout_s,
    data.reward_max_timeouts), a built-in one as it is.

    Raises:
        RewardError: an unknown name or a user function that cannot be imported.
    """
    reward = get_reward_fn(name)
    if ":" not in name:
        return reward
    return BoundedReward(reward, timeout_s, max_timeouts)
