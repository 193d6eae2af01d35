"""The boot-time wait (citadel_runtime.waits): backoff, one journal line per wait, transient vs permanent, deadline."""

from __future__ import annotations

import os
import signal

import pytest

from citadel_runtime.waits import NotYet, Terminated, WaitExpired, raise_on_sigterm, wait_for, wait_seconds_option

pytestmark = pytest.mark.unit


class FakeTime:
    """A clock that moves only when the code under test sleeps."""

    def __init__(self):
        self.now, self.pauses = 100.0, []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.pauses.append(seconds)
        self.now += seconds


def failing(times: int, error: BaseException, result: str = "ready"):
    """An attempt that raises `error` `times` times, then returns `result`; counts its calls."""
    calls = []

    def attempt():
        calls.append(1)
        if len(calls) <= times:
            raise error
        return result

    attempt.calls = calls
    return attempt


def run(attempt, **options):
    fake, lines = FakeTime(), []
    result = wait_for("Vault at https://10.80.0.1:8200 (transit decrypt)", attempt, transient=(NotYet,),
                      log=lines.append, sleep=fake.sleep, clock=fake.clock, **options)
    return result, fake.pauses, lines


def test_the_pauses_double_from_2_s_up_to_30_s_with_one_line_per_wait():
    result, pauses, lines = run(failing(7, NotYet("connection refused")))
    assert result == "ready"
    assert pauses == [2, 4, 8, 16, 30, 30, 30]
    assert len(lines) == 7
    assert lines[0] == ("waiting for Vault at https://10.80.0.1:8200 (transit decrypt): connection refused; "
                        "0 s so far, next try in 2 s")
    assert lines[4].endswith("; 30 s so far, next try in 30 s")  # 2+4+8+16 waited
    assert lines[6].endswith("; 90 s so far, next try in 30 s")


def test_first_and_cap_set_the_sequence():
    _, pauses, _ = run(failing(5, NotYet("HTTP 503: Vault is sealed")), first=1.0, cap=5.0)
    assert pauses == [1, 2, 4, 5, 5]


def test_success_at_once_sleeps_and_logs_nothing():
    assert run(failing(0, NotYet("never"))) == ("ready", [], [])


@pytest.mark.parametrize("error", [PermissionError(13, "Permission denied"), ValueError("bad signature"),
                                   FileNotFoundError(2, "No such file or directory")])
def test_a_permanent_error_propagates_at_once(error):
    attempt = failing(3, error)
    fake, lines = FakeTime(), []
    with pytest.raises(type(error)):
        wait_for("x", attempt, transient=(NotYet,), log=lines.append, sleep=fake.sleep, clock=fake.clock)
    assert len(attempt.calls) == 1 and fake.pauses == [] and lines == []


def test_a_permanent_error_after_transient_ones_stops_the_wait():
    answers = iter([NotYet("connection refused"), NotYet("HTTP 503"), PermissionError("HTTP 403")])

    def attempt():
        raise next(answers)

    with pytest.raises(PermissionError):
        run(attempt)


def test_the_deadline_ends_the_wait_with_the_last_reason_and_trims_the_last_pause():
    fake, lines = FakeTime(), []
    with pytest.raises(WaitExpired) as expired:
        wait_for("Vault at https://v:8200", failing(100, NotYet("connection refused")), transient=(NotYet,),
                 deadline=20, log=lines.append, sleep=fake.sleep, clock=fake.clock)
    assert fake.pauses == [2, 4, 8, 6]  # 14 s, then only the 6 s left
    assert len(lines) == 4 and lines[-1].endswith("14 s so far, next try in 6 s")
    assert str(expired.value) == "gave up waiting for Vault at https://v:8200 after 20 s: connection refused"


def test_deadline_zero_is_one_try_and_no_line():
    fake, lines = FakeTime(), []
    with pytest.raises(WaitExpired, match="after 0 s: no file yet"):
        wait_for("the token", failing(1, NotYet("no file yet")), transient=(NotYet,), deadline=0,
                 log=lines.append, sleep=fake.sleep, clock=fake.clock)
    assert fake.pauses == [] and lines == []


def test_a_reason_may_name_what_it_waits_for_and_is_kept_on_one_line():
    answers = iter([NotYet("no file yet", what="citadel-agent@gpu's token in /run/citadel-agent/gpu/token"),
                    NotYet("1 error occurred:\n\t* Vault is sealed\n\n")])

    def attempt():
        answer = next(answers, None)
        if answer:
            raise answer
        return "key"

    _, _, lines = run(attempt)
    assert lines == [
        "waiting for citadel-agent@gpu's token in /run/citadel-agent/gpu/token: no file yet; 0 s so far, next try in 2 s",
        "waiting for Vault at https://10.80.0.1:8200 (transit decrypt): 1 error occurred: * Vault is sealed; "
        "2 s so far, next try in 4 s",
    ]


def test_other_exception_types_can_be_transient():
    fake, lines = FakeTime(), []
    assert wait_for("x", failing(2, TimeoutError("timed out")), transient=(TimeoutError,), log=lines.append,
                    sleep=fake.sleep, clock=fake.clock) == "ready"
    assert fake.pauses == [2, 4] and lines[1] == "waiting for x: timed out; 2 s so far, next try in 4 s"


def test_the_wait_seconds_option():
    assert wait_seconds_option(["m"]) == (["m"], None)
    assert wait_seconds_option(["--wait-seconds", "60", "m"]) == (["m"], 60.0)
    assert wait_seconds_option(["m", "--wait-seconds", "0"]) == (["m"], 0.0)
    for bad in (["--wait-seconds"], ["--wait-seconds", "-1", "m"], ["--wait-seconds", "soon", "m"],
                ["--wait-seconds", "nan", "m"]):
        with pytest.raises(ValueError, match="number of seconds"):
            wait_seconds_option(bad)


def test_sigterm_during_a_wait_unwinds_through_finally():
    previous = signal.getsignal(signal.SIGTERM)
    cleaned = []
    try:
        raise_on_sigterm()

        def sleep(seconds):
            os.kill(os.getpid(), signal.SIGTERM)  # systemd stopping the unit mid-wait

        with pytest.raises(Terminated, match="stopped by SIGTERM"):
            try:
                wait_for("x", failing(5, NotYet("connection refused")), transient=(NotYet,), log=[].append,
                         sleep=sleep)
            finally:
                cleaned.append("unmounted")
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert cleaned == ["unmounted"]
