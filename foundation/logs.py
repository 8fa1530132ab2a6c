"""Structured logs: every record can carry ``scene_id``, ``shot``, ``attempt`` and ``event_id``.

Pass them as ``extra={...}``; the JSON format emits them as fields, the console format appends
them as ``key=value``.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from datetime import UTC, datetime

CONTEXT_FIELDS = ("stage", "scene_id", "shot", "attempt", "event_id", "topic", "partition", "offset")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: getattr(record, k) for k in CONTEXT_FIELDS if hasattr(record, k)})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class ConsoleFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        context = " ".join(f"{k}={getattr(record, k)}" for k in CONTEXT_FIELDS if hasattr(record, k))
        return f"{line} [{context}]" if context else line


class RepeatFilter(logging.Filter):
    """Rate-limits repeated warnings and errors: per (logger, level, message template), the first
    ``burst`` records of each ``window_s`` pass; the rest are counted, and the first record after
    the window says how many were left out. An outage makes clients log the same line thousands
    of times a second; this keeps the first ones and the count, not megabytes of repeats."""

    def __init__(self, burst: int = 5, window_s: float = 10.0, clock=time.monotonic) -> None:  # noqa: ANN001
        super().__init__()
        self.burst, self.window_s, self.clock = burst, window_s, clock
        self._seen: dict[tuple[str, int, str], list[float | int]] = {}  # key -> [window start, passed, dropped]

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        now = self.clock()
        key = (record.name, record.levelno, str(record.msg))
        state = self._seen.get(key)
        if state is None or now - state[0] >= self.window_s:
            dropped = int(state[2]) if state else 0
            if len(self._seen) > 10_000:
                self._seen.clear()
            self._seen[key] = [now, 1, 0]
            if dropped:
                record.msg = f"{record.msg} [{dropped} more like this in the last {self.window_s:.0f}s, not shown]"
            return True
        if state[1] < self.burst:
            state[1] += 1
            return True
        state[2] += 1
        return False


def configure_logging(level: str = "INFO", fmt: str = "console") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else ConsoleFormatter())
    handler.addFilter(RepeatFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Faust, aiokafka and httpx (a line per request) are chatty at INFO; their warnings still come through.
    for noisy in ("faust", "mode", "aiokafka", "kafka", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
