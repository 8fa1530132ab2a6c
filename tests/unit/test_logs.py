"""Repeated warnings are rate-limited, with a count of what was left out."""

from __future__ import annotations

import logging

from foundation.logs import RepeatFilter


def record(msg: str, *args: object, level: int = logging.ERROR, name: str = "aiokafka") -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, args, None)


def test_a_flood_of_one_message_passes_its_burst_then_a_count():
    now = [0.0]
    limit = RepeatFilter(burst=3, window_s=10, clock=lambda: now[0])
    passed = [limit.filter(record("Unable connect to %s", f"host{i}")) for i in range(1000)]
    assert sum(passed) == 3
    assert limit.filter(record("another message"))  # other messages are not held back
    assert limit.filter(record("debug noise", level=logging.INFO))
    now[0] = 11.0
    later = record("Unable connect to %s", "host")
    assert limit.filter(later)
    assert later.getMessage() == "Unable connect to host [997 more like this in the last 10s, not shown]"
