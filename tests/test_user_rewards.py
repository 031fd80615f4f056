"""User reward functions are bounded and isolated: a time limit per call (dcrl/rewards/bounded.py),
`sys.exit` and any exception an error naming the function, and each call its own copy of the
sample's metadata (dcrl/rewards/registry.py `score_batch`)."""

from __future__ import annotations

import contextlib
import signal
import time
from typing import Any

import pytest

from dcrl.rewards import RewardError, score_batch
from dcrl.rewards.bounded import BoundedReward

pytestmark = pytest.mark.faults


def sleeps_forever(completion: str, answer: str, **meta: Any) -> float:
    while True:
        time.sleep(0.01)


def swallows_everything(completion: str, answer: str, **meta: Any) -> float:
    while True:
        # a careless user catches every error; the time limit still holds
        with contextlib.suppress(Exception):
            time.sleep(0.01)


def slow_on_x(completion: str, answer: str, **meta: Any) -> float:
    if completion == "x":
        sleeps_forever(completion, answer)
    return 1.0


def test_a_reward_that_never_returns_scores_0_then_stops_the_run(capsys):
    bounded = BoundedReward(sleeps_forever, timeout_s=0.05, max_timeouts=2)
    assert score_batch(bounded, ["a"], ["1"]) == [0.0]
    assert "sleeps_forever did not return within 0.05 s" in capsys.readouterr().err
    with pytest.raises(RewardError, match="sleeps_forever did not return within 0.05 s on 2 calls"):
        score_batch(bounded, ["b"], ["1"])
    assert bounded.timeouts == 2


def test_catching_every_exception_does_not_escape_the_time_limit():
    bounded = BoundedReward(swallows_everything, timeout_s=0.05, max_timeouts=1)
    with pytest.raises(RewardError, match="swallows_everything did not return"):
        score_batch(bounded, ["a"], ["1"])


def test_a_reward_slow_on_one_answer_scores_it_0_and_keeps_going():
    bounded = BoundedReward(slow_on_x, timeout_s=0.05, max_timeouts=2)
    for _ in range(3):  # a call that returns resets the count of timeouts in a row
        assert score_batch(bounded, ["x", "y"], ["1", "1"]) == [0.0, 1.0]
    assert bounded.timeouts == 3


def test_the_host_programs_alarm_handler_is_restored():
    def handler(signum, frame):
        pass

    previous = signal.signal(signal.SIGALRM, handler)
    try:
        score_batch(BoundedReward(slow_on_x, timeout_s=0.05), ["x", "y"], ["1", "1"])
        assert signal.getsignal(signal.SIGALRM) is handler
    finally:
        signal.signal(signal.SIGALRM, previous)


def calls_exit(completion: str, answer: str, **meta: Any) -> float:
    raise SystemExit(0)


@pytest.mark.parametrize("wrap", [False, True], ids=["plain", "bounded"])
def test_sys_exit_in_a_reward_is_an_error_naming_it(wrap):
    reward = BoundedReward(calls_exit) if wrap else calls_exit
    with pytest.raises(RewardError, match=r"reward function calls_exit called sys.exit\(0\)"):
        score_batch(reward, ["a"], ["1"])


def test_each_call_gets_its_own_copy_of_the_metadata():
    seen = []

    def mutating(completion: str, answer: str, *, tags: list[str], **meta: Any) -> float:
        seen.append(list(tags))
        tags.append("changed")
        meta["extra"] = 1
        return 0.0

    meta = {"tags": ["a"]}
    score_batch(mutating, ["1", "2", "3"], ["x"] * 3, [meta] * 3)
    assert seen == [["a"], ["a"], ["a"]]
    assert meta == {"tags": ["a"]}
