"""The server's and its workers' log lines: uvicorn's text, or with ``--log-format json`` one JSON
object per line (``time``, ``level``, ``logger``, ``message``, and ``prediction_id`` on every line
about a prediction) for a log collector to index.

The prediction a thread is working on travels in a context variable (``about``), so that any line
logged meanwhile, by Overture or by a library the model calls, carries its id without the message
having to name it; ``extra={"prediction_id": ...}`` names one explicitly.
"""

from __future__ import annotations

import copy
import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Literal, get_args

from uvicorn.logging import DefaultFormatter

LogFormat = Literal["text", "json"]
LOG_FORMATS: tuple[str, ...] = get_args(LogFormat)

_current_prediction: ContextVar[str | None] = ContextVar("prediction_id", default=None)

#: Attributes every ``LogRecord`` has; any other is an ``extra`` the JSON line carries.
_RECORD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}
#: uvicorn's own extras: the message again, with terminal colours.
_DROPPED_EXTRAS = frozenset({"color_message"})


@contextmanager
def about(prediction_id: str | None) -> Iterator[None]:
    """Lines logged in this block, on this thread, are about ``prediction_id`` (None: no one's)."""
    token = _current_prediction.set(prediction_id)
    try:
        yield
    finally:
        _current_prediction.reset(token)


def prediction_of(record: logging.LogRecord) -> str | None:
    """The prediction a line is about: named in ``extra``, else the one its thread works on."""
    return getattr(record, "prediction_id", None) or _current_prediction.get()


class JsonFormatter(logging.Formatter):
    """One JSON object per line. uvicorn's access lines get their request's parts as fields."""

    def __init__(self, worker: str | None = None):
        super().__init__()
        #: The pool a worker process serves, on each of its lines.
        self.worker = worker

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        prediction_id = prediction_of(record)
        if prediction_id:
            entry["prediction_id"] = prediction_id
        if self.worker is not None:
            entry["worker"] = self.worker
        for key, value in vars(record).items():
            if key not in _RECORD_FIELDS and key not in _DROPPED_EXTRAS and key not in entry:
                entry[key] = value
        if record.name == "uvicorn.access" and isinstance(record.args, tuple) and len(record.args) == 5:
            client, method, path, http_version, status = record.args
            entry.update(client=client, method=method, path=path, http_version=http_version, status=status)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str)


def _tagged(line: str, record: logging.LogRecord) -> str:
    """A text line with the prediction it is about at its end."""
    prediction_id = prediction_of(record)
    return f"{line} [prediction {prediction_id}]" if prediction_id else line


class TextFormatter(DefaultFormatter):
    """uvicorn's text lines, with the prediction a line is about at their end."""

    def format(self, record: logging.LogRecord) -> str:
        return _tagged(super().format(record), record)


class _WorkerTextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return _tagged(super().format(record), record)


def server_config(log_format: LogFormat, access_log: bool) -> dict[str, Any]:
    """uvicorn's ``log_config``: its loggers (warnings and errors; each request at INFO with
    ``access_log``) and Overture's own (workers started and lost, models unloaded, predictions
    finished) at INFO; in JSON, every other library's warnings too."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    if log_format == "json":
        json_formatter = {"()": "overture.logs.JsonFormatter"}
        config["formatters"] = {"default": json_formatter, "access": json_formatter}
        config["root"] = {"handlers": ["default"], "level": "WARNING"}
    else:
        config["formatters"]["default"]["()"] = "overture.logs.TextFormatter"
    config["loggers"]["uvicorn.error"] = {"level": "WARNING"}
    config["loggers"]["uvicorn.access"]["level"] = "INFO" if access_log else "WARNING"
    config["loggers"]["overture"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    return config


def configure_server(log_format: LogFormat) -> None:
    """What uvicorn's config cannot say: in JSON, ``warnings.warn`` lines go through logging too,
    rather than to stderr as free text."""
    logging.captureWarnings(log_format == "json")


def configure_worker(pool: str, log_format: LogFormat) -> None:
    """A worker process's logging: its lines reach the server's stderr in the server's format."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter(worker=pool))
        logging.captureWarnings(True)
    else:
        handler.setFormatter(_WorkerTextFormatter(f"%(asctime)s worker {pool}: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
