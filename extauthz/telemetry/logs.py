"""Log lines as a person or a log pipeline reads them: ``text``, or one JSON object a line.

``log_format`` (``EXTAUTHZ_LOG_FORMAT``) chooses; unset, a terminal gets text and anything
else (a container's stderr, a pipe, a file) gets JSON. A JSON line carries ``time`` (UTC,
RFC 3339 with milliseconds), ``level``, ``logger``, ``message``, ``process`` and, for a line
written while a Check is decided, that decision's ``decision_id`` (the id in the audit record
and the ``x-extauthz-decision-id`` header), so a warning can be joined to its decision.

Nothing else reaches stderr as bare text in JSON mode: Python warnings and an uncaught
exception go through the logger, and gRPC core's own logger (C++, writing to stderr by
itself) is silenced with ``GRPC_VERBOSITY=NONE`` before grpc is imported; its errors reach
Python as exceptions, which are logged. Audit records are not log lines: they stay one JSON
object per decision on stdout (see ``extauthz.audit``).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from contextvars import ContextVar
from types import TracebackType
from typing import IO, Literal

from extauthz.clock import iso_utc

LogFormat = Literal["json", "text"]
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s"

# The decision being made in this task (each Check runs in its own asyncio task, so a log
# line written while deciding one names that one and no other).
DECISION_ID: ContextVar[str | None] = ContextVar("extauthz_decision_id", default=None)


def resolve_format(configured: str | None, stream: IO[str] | None = None) -> LogFormat:
    """The configured format; unset: text on a terminal, JSON anywhere else."""
    if configured == "json":
        return "json"
    if configured == "text":
        return "text"
    stream = sys.stderr if stream is None else stream
    try:
        return "text" if stream.isatty() else "json"
    except (AttributeError, ValueError):  # closed or not a real stream
        return "json"


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (newlines in a message are escaped)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": iso_utc(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
        }
        decision = getattr(record, "decision_id", None) or DECISION_ID.get()
        if decision:
            line["decision_id"] = decision
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, default=str)


def setup_logging(level: str, fmt: LogFormat, stream: IO[str] | None = None) -> None:
    """The root logger writes to stderr in ``fmt``; in JSON mode nothing else writes bare text."""
    handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.captureWarnings(True)  # warnings.warn(...) as a "py.warnings" record
    if fmt == "json":
        # gRPC core writes its own lines to stderr (absl), outside Python's logging; it reads
        # this when grpc is first imported, which serve does after this.
        os.environ["GRPC_VERBOSITY"] = "NONE"
        sys.excepthook = _log_uncaught


def _log_uncaught(kind: type[BaseException], error: BaseException,
                  trace: TracebackType | None) -> None:
    logging.getLogger("extauthz").critical("uncaught %s", kind.__name__,
                                           exc_info=(kind, error, trace))
