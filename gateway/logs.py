"""Logging: JSON lines for machines, text for people, and limits so a flood cannot fill the disk.

* ``configure(level, fmt)`` installs one stderr handler on the root logger: ``json`` writes one
  JSON object per line (python-json-logger: ``ts`` ISO 8601 UTC, ``level``, ``logger``, ``msg``
  and every ``extra=`` field, e.g. ``event``, ``session_id``, ``account``, ``peer``, ``reason``),
  ``text`` a readable line, ``auto`` text on a terminal and JSON otherwise (a container, a file,
  journald).  Calling it again (a SIGHUP reload) swaps level and format in place.
* Session events are logged with ``extra={"event": "session.<what>", ...}``, one line each.
  ``EventLimiter`` lets at most ``burst`` lines of one event kind through per window and counts
  the rest; ``Summaries`` (a task of the server) then logs one line with the suppressed counts
  and one with the rejects by reason of the window, so a reject or login flood costs two lines
  per window, not one per message.
"""
from __future__ import annotations

import asyncio
import datetime
import logging
import sys
import time
from collections.abc import Callable, Mapping
from typing import IO

from pythonjsonlogger.json import JsonFormatter

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
log = logging.getLogger("hftgw.log")


class EventLimiter(logging.Filter):
    """Lets through at most ``burst`` records per ``window_s`` for each event kind (the record's
    ``event`` attribute, else its logger and message template); drops and counts the rest.

    Thread-safe enough for its job: the side-port thread logs rarely, and a lost increment only
    makes a count one short.
    """

    def __init__(self, burst: int = 100, window_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.burst = burst
        self.window_s = window_s
        self._clock = clock
        self._window_start = clock()
        self._passed: dict[str, int] = {}
        self.suppressed: dict[str, int] = {}     # since the last take_suppressed()
        self.suppressed_total = 0                # since start (a metric)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == log.name:  # the summaries themselves: one line per window
            return True
        now = self._clock()
        if now - self._window_start >= self.window_s:
            self._window_start = now
            self._passed.clear()
        key = getattr(record, "event", None) or f"{record.name}:{record.msg}"
        n = self._passed.get(key, 0)
        if n < self.burst:
            self._passed[key] = n + 1
            return True
        self.suppressed[key] = self.suppressed.get(key, 0) + 1
        self.suppressed_total += 1
        return False

    def reset(self) -> None:
        """Start a fresh window with nothing counted (tests, and a changed burst or window)."""
        self._window_start = self._clock()
        self._passed.clear()
        self.suppressed.clear()

    def take_suppressed(self) -> dict[str, int]:
        out, self.suppressed = self.suppressed, {}
        return out


class _JsonLines(JsonFormatter):
    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        return datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(
            timespec="microseconds")


LIMITER = EventLimiter()
_handler: logging.Handler | None = None


def is_terminal(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def formatter(fmt: str, stream: IO[str]) -> logging.Formatter:
    """The formatter for ``fmt`` ("json", "text" or "auto": text when ``stream`` is a tty)."""
    if fmt == "text" or (fmt == "auto" and is_terminal(stream)):
        return logging.Formatter(TEXT_FORMAT)
    return _JsonLines("{asctime}{levelname}{name}{message}", style="{",
                      rename_fields={"asctime": "ts", "levelname": "level", "name": "logger",
                                     "message": "msg"})


def configure(level: str = "INFO", fmt: str = "auto", burst: int = 100, window_s: float = 10.0,
              stream: IO[str] | None = None) -> logging.Handler:
    """Install (or update) the root handler: level, format, and the event limiter's burst per
    window.  Returns the handler.  Raises ValueError for an unknown level."""
    global _handler
    root = logging.getLogger()
    if _handler is None or (stream is not None and getattr(_handler, "stream", None) is not stream):
        if _handler is not None:
            root.removeHandler(_handler)
        _handler = logging.StreamHandler(stream or sys.stderr)
        _handler.addFilter(LIMITER)
        root.addHandler(_handler)
    root.setLevel(level)
    _handler.setFormatter(formatter(fmt, getattr(_handler, "stream", sys.stderr)))
    if (LIMITER.burst, LIMITER.window_s) != (burst, window_s):
        LIMITER.burst = burst
        LIMITER.window_s = window_s
        LIMITER.reset()
    return _handler


class Summaries:
    """Every ``interval_s``: one line with the rejects by reason since the last line (only when
    there were any) and one with the log lines the limiter suppressed (likewise).

    rejects(): cumulative reject counts by reason name, read from the C counters.
    """

    def __init__(self, rejects: Callable[[], Mapping[str, int]], interval_s: float,
                 limiter: EventLimiter = LIMITER) -> None:
        self.rejects = rejects
        self.interval_s = interval_s
        self.limiter = limiter
        self._last = dict(rejects())

    def emit(self) -> None:
        now = dict(self.rejects())
        delta = {k: n - self._last.get(k, 0) for k, n in sorted(now.items()) if n != self._last.get(k, 0)}
        self._last = now
        if delta:
            log.warning("rejects in the last %.0f s: %s", self.interval_s,
                        ", ".join(f"{k} {n}" for k, n in delta.items()),
                        extra={"event": "rejects.summary", "interval_s": self.interval_s,
                               "total": sum(delta.values()), "by_reason": delta})
        dropped = self.limiter.take_suppressed()
        if dropped:
            log.warning("log lines suppressed in the last %.0f s: %s", self.interval_s,
                        ", ".join(f"{k} {n}" for k, n in sorted(dropped.items())),
                        extra={"event": "log.suppressed", "interval_s": self.interval_s,
                               "total": sum(dropped.values()), "by_event": dropped})

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            self.emit()
