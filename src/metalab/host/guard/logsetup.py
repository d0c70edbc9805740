"""Logging: syslog/journal (/dev/log) when available, else the configured log file, else stderr."""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
from typing import Optional

DEFAULT_LOG_FILE = "/var/log/metalab-guard.log"


def setup(log_file: Optional[str], verbose: bool = False) -> None:
    logger = logging.getLogger("metalab.guard")
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    logger.propagate = False
    for old in list(logger.handlers):
        logger.removeHandler(old)
        old.close()
    handler: logging.Handler
    if log_file:
        handler = logging.FileHandler(log_file)
        handler.setFormatter(logging.Formatter("%(asctime)s metalab-guard[%(process)d] %(levelname)s %(message)s"))
    elif os.path.exists("/dev/log"):
        handler = logging.handlers.SysLogHandler(address="/dev/log", facility=logging.handlers.SysLogHandler.LOG_DAEMON)
        handler.setFormatter(logging.Formatter("metalab-guard[%(process)d]: %(levelname)s %(message)s"))
    else:
        try:
            handler = logging.FileHandler(DEFAULT_LOG_FILE)
        except OSError:
            handler = logging.StreamHandler(sys.stderr)
            handler.setLevel(logging.WARNING)
        handler.setFormatter(logging.Formatter("%(asctime)s metalab-guard[%(process)d] %(levelname)s %(message)s"))
    logger.addHandler(handler)
