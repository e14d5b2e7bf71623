"""The Redis client options and the circuit breaker of online reads."""

from __future__ import annotations

import threading
import time

import pybreaker
import pytest

from features.feature_store import breaker, redis_connection_string
from features.settings import Settings


def test_redis_connection_gets_timeouts_and_no_retry_unless_given():
    settings = Settings(redis_connection="redis:6379", redis_timeout_seconds=0.5)
    assert redis_connection_string(settings) == (
        "redis:6379,socket_timeout=0.5,socket_connect_timeout=0.5,retry=null"
    )
    given = Settings(redis_connection="redis:6379,ssl=true,socket_timeout=2")
    assert redis_connection_string(given) == (
        "redis:6379,ssl=true,socket_timeout=2,socket_connect_timeout=0.25,retry=null"
    )


# Short enough for a test, long enough that the calls meant to fall inside it do on a busy machine.
PAUSE = 0.3


def test_breaker_fails_fast_for_the_pause_after_a_failure_then_tries_once_half_open():
    circuit = breaker(pause=PAUSE)
    calls = []

    def store(ok: bool) -> str:
        calls.append(ok)
        if not ok:
            raise TimeoutError("no answer")
        return "row"

    def read(ok: bool) -> str:  # as the online store reads: the breaker around the block
        with circuit.calling():
            return store(ok)

    assert read(True) == "row"
    with pytest.raises(TimeoutError):  # the failing call raises its own error
        read(False)
    with pytest.raises(pybreaker.CircuitBreakerError):  # the store is not even asked
        read(True)
    assert calls == [True, False]
    time.sleep(PAUSE * 1.2)
    assert read(True) == "row"  # half-open: tried, and closed again
    assert read(True) == "row"
    assert calls == [True, False, True, True]
    with pytest.raises(TimeoutError):
        read(False)
    time.sleep(PAUSE * 1.2)
    with pytest.raises(TimeoutError):  # the half-open trial fails: open again at once
        read(False)
    with pytest.raises(pybreaker.CircuitBreakerError):
        read(True)
    assert calls == [True, False, True, True, False, False]


def test_reads_through_one_breaker_run_side_by_side():
    """Request threads share the store's breaker: one slow read must not queue the others
    (pybreaker's `call` would hold its lock for the whole read; here both threads must be
    inside the breaker at the same time to pass the barrier)."""
    circuit = breaker(pause=PAUSE)
    both_inside = threading.Barrier(2, timeout=5)
    outcomes = []

    def read() -> None:
        with circuit.calling():
            both_inside.wait()
        outcomes.append("read")

    threads = [threading.Thread(target=read) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes == ["read", "read"]
