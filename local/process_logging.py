"""Logging for the local host's processes (host and worker alike), as the Functions host shows it on a console."""

from __future__ import annotations

import logging
import os
import sys

INSTANCE_VARIABLE = "BATCHWATCH_INSTANCE"  # set by local/fleet.py: which of several hosts this process belongs to


def configure_logging(level: int = logging.INFO) -> None:
    instance = os.environ.get(INSTANCE_VARIABLE)
    where = f" [instance {instance}]" if instance else ""
    logging.basicConfig(level=level, format=f"%(asctime)s %(levelname)-7s{where} %(name)s: %(message)s",
                        stream=sys.stderr)
    for noisy in ("azure", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
