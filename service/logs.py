"""Logging for every service process: one JSON object per line when stderr is not a terminal (containers, log
shippers), readable text when it is. Fields passed as ``extra={"fields": {...}}`` become JSON keys.

Secrets never reach a log line: request logs name the route template and the API key's prefix, never headers.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from typing import Any

__all__ = ["JsonFormatter", "configure_logging"]

_NOISY = ("onnxscript", "onnx_ir", "uvicorn.access")  # the exporter logs every pass; we log requests ourselves


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            out.update(fields)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line += " " + " ".join(f"{k}={v}" for k, v in fields.items())
        return line


def configure_logging(*, json_logs: bool | None = None, level: int | str = logging.INFO) -> None:
    """Root logging for a service process; ``json_logs=None`` chooses JSON unless stderr is a terminal.
    ``level`` is a logging level or its name (``KF_LOG_LEVEL``: debug, info, warning, error)."""
    if isinstance(level, str):
        level = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    use_json = (not sys.stderr.isatty()) if json_logs is None else json_logs
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter() if use_json else _TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in _NOISY:
        logging.getLogger(name).setLevel(logging.WARNING)
    for name in ("uvicorn", "uvicorn.error"):  # uvicorn's own handlers would print a second, unstructured copy
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
