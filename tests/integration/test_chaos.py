"""make chaos at a small size: the real processes under faults, a SIGKILL and an Azurite restart."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import PROJECT_ROOT

pytestmark = pytest.mark.integration


def test_nothing_is_lost_under_faults_kills_a_storage_restart_and_duplicates() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "local.chaos", "--batches", "20", "--large", "1", "--large-devices", "500",
         "--kills", "2", "--seed", "11", "--time-limit", "400"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=540,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    figures = dict(line.split(None, 1) for line in result.stdout.splitlines()
                   if line.startswith("  ") and len(line.split(None, 1)) == 2)
    assert figures["kills"] == "2" and figures["azurite_restarts"] == "1" and figures["lost"] == "0"
    assert figures["instances"] == "3"
    assert figures["batches"] == "21" and int(figures["failed_devices"]) > 0
