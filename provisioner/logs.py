"""JSON log lines with a timestamp, for every process of the provisioner (uvicorn's included)."""

from __future__ import annotations

import logging
import sys
from typing import Any

from pythonjsonlogger.json import JsonFormatter

FORMAT = "%(levelname)s %(name)s %(process)d %(message)s"


def formatter() -> JsonFormatter:
    # timestamp: ISO 8601 in UTC, under "time".
    return JsonFormatter(FORMAT, rename_fields={"levelname": "level"}, timestamp="time")


def setup() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter())
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    # huey logs every dequeue at INFO; its warnings and errors still show.
    logging.getLogger("huey").setLevel(logging.WARNING)


def uvicorn_config() -> dict[str, Any]:
    """uvicorn's logging through the same JSON formatter (its access log names client and status)."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "provisioner.logs.formatter"}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}},
        "loggers": {
            "uvicorn": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
            "uvicorn.access": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
        },
    }
