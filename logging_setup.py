"""The one place that sets up logging, for the API, the worker and `make run`.

Every line goes through structlog's formatter: JSON objects, one a line, in production (or with
SWITCHBOARD_LOG_FORMAT=json), readable console lines in development. Standard-library loggers
(ours, uvicorn's, temporalio's) are formatted the same way, and whatever a request bound with
`structlog.contextvars` (its request id, the conversation id from its path) is on every line
it logs.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog
from structlog.tracebacks import ExceptionDictTransformer
from structlog.typing import EventDict, Processor

from settings import LogFormat, Settings

# Marks the handler we installed, so a second call replaces it and leaves the rest alone
# (a test runner's capture handlers, for example).
_OURS = "_switchboard_handler"


class _CurrentStderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stderr is when a line is logged (test runners swap it)."""

    @property  # type: ignore[override]
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        pass


def log_format(settings: Settings) -> LogFormat:
    """JSON in production unless told otherwise; console lines everywhere else."""
    if settings.log_format is not None:
        return settings.log_format
    return "json" if settings.env == "production" else "console"


def _drop_color_message(_logger: object, _method: str, event_dict: EventDict) -> EventDict:
    """uvicorn passes an ANSI-coloured copy of some messages as an extra: the plain one does."""
    event_dict.pop("color_message", None)
    return event_dict


def _shared_processors() -> list[Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.add_log_level,
        structlog.stdlib.ExtraAdder(),  # e.g. temporalio's workflow and activity details
        _drop_color_message,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]


def configure_logging(settings: Settings, *, stream: TextIO | None = None) -> None:
    """Route all logging through one handler with structlog's formatting. Safe to call again
    (the last call wins). `stream` defaults to the process's stderr."""
    fmt = log_format(settings)
    renderer: list[Processor]
    # Tracebacks without local variables, and plain ones on the console: rich's rendering of
    # one took 1-3 s of CPU on the logging thread (the event loop: a worker stalled for each
    # activity failing while the database was down), and locals carry customer text and tokens.
    if fmt == "json":
        tracebacks = structlog.processors.ExceptionRenderer(
            ExceptionDictTransformer(show_locals=False)
        )
        renderer = [tracebacks, structlog.processors.JSONRenderer()]
    else:
        renderer = [
            structlog.dev.ConsoleRenderer(
                colors=(stream or sys.stderr).isatty(),
                exception_formatter=structlog.dev.plain_traceback,
            )
        ]
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_shared_processors(),
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *renderer],
    )
    handler: logging.Handler = _CurrentStderr() if stream is None else logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    setattr(handler, _OURS, True)

    root = logging.getLogger()
    for existing in [h for h in root.handlers if getattr(h, _OURS, False)]:
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(settings.log_level)

    # uvicorn installs its own handlers before it imports the app: hand its lines to ours.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    # The API writes one structured line per request itself (with its request id).
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    # The webhook courier and the bot post with httpx, which logs each request's URL: an
    # endpoint's URL may carry its own credentials (the courier logs a failure without it).
    logging.getLogger("httpx").setLevel(logging.WARNING)

    structlog.configure(
        processors=[
            *_shared_processors(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
