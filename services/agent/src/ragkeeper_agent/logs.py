"""JSON log lines carrying the request id of whatever request is being served.

The request id lives in a context variable set by the HTTP middleware, so every
log record emitted while serving a request (agent, tools, database) carries it
without being passed around. Containers get one JSON object per line on stderr;
``LOG_FORMAT=text`` keeps local runs readable. The audit log (``ragkeeper.audit``,
``audit.py``) has its own handler and is JSON either way.
"""

from __future__ import annotations

import logging
import sys
from contextvars import ContextVar

from pythonjsonlogger.json import JsonFormatter

request_id_var: ContextVar[str] = ContextVar("request_id", default="-")
_HANDLER_MARK = "_ragkeeper_agent_handler"
AUDIT_LOGGER = "ragkeeper.audit"


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` to every record passing through the handler."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


def json_formatter() -> logging.Formatter:
    """The JSON line format: time, level, logger, message, request id and any ``extra``."""
    return JsonFormatter(
        "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s",
        rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
    )


def _stderr_handler(formatter: logging.Formatter) -> logging.Handler:
    handler = logging.StreamHandler(sys.stderr)
    setattr(handler, _HANDLER_MARK, True)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(formatter)
    return handler


def configure_logging(level: str = "INFO", fmt: str = "json") -> None:
    """Install one stderr handler on the root logger (idempotent)."""
    root = logging.getLogger()
    audit = logging.getLogger(AUDIT_LOGGER)
    for logger in (root, audit):
        for handler in list(logger.handlers):
            if getattr(handler, _HANDLER_MARK, False):
                logger.removeHandler(handler)
    text = logging.Formatter("%(asctime)s %(levelname)s [%(request_id)s] %(name)s: %(message)s")
    root.addHandler(_stderr_handler(json_formatter() if fmt == "json" else text))
    root.setLevel(level.upper())
    # The audit log: JSON whatever LOG_FORMAT says, not repeated by the root handler.
    audit.addHandler(_stderr_handler(json_formatter()))
    audit.setLevel(logging.INFO)
    audit.propagate = False
    # uvicorn's access log duplicates the middleware's; keep its error log.
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").disabled = True
