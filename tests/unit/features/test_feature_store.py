"""The Redis client options and the circuit breaker of online reads."""

from __future__ import annotations

import pytest

from features.feature_store import (
    CircuitBreaker,
    OnlineStoreUnavailable,
    redis_connection_string,
)
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


def test_breaker_fails_fast_for_the_pause_after_a_failure_then_tries_again():
    now = [100.0]
    breaker = CircuitBreaker(pause=1.0, clock=lambda: now[0])
    calls = []

    def read(ok: bool) -> str:
        calls.append(ok)
        if not ok:
            raise TimeoutError("no answer")
        return "row"

    assert breaker.call(read, True) == "row"
    with pytest.raises(TimeoutError):
        breaker.call(read, False)
    now[0] += 0.5
    with pytest.raises(OnlineStoreUnavailable):  # the store is not even asked
        breaker.call(read, True)
    assert calls == [True, False]
    now[0] += 0.6
    assert breaker.call(read, True) == "row"
    assert breaker.call(read, True) == "row"
    assert calls == [True, False, True, True]
