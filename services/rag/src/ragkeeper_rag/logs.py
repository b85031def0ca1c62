"""JSON log lines on stderr (stdout is reserved for the final stats line)."""

from __future__ import annotations

import logging
import sys

from pythonjsonlogger.json import JsonFormatter


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Parser libraries (openpyxl, bs4) warn about odd files; log those as JSON lines too.
    logging.captureWarnings(True)
    # Client libraries log request URLs at INFO; keep them out unless debugging.
    for noisy in ("httpx", "googleapiclient.discovery_cache", "google_auth_httplib2"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
