"""The process's resident memory, from /proc/self (Linux), with a peak that can start again.

reset_peak() clears the kernel's high-water mark (VmHWM) through /proc/self/clear_refs, so that a peak
reached earlier, while modules were imported or a warm-up ran, does not count in a figure.
"""

from __future__ import annotations

from pathlib import Path


def reset_peak() -> int:
    """Start the peak again from here; the resident bytes now."""
    Path("/proc/self/clear_refs").write_text("5")
    return _status_bytes("VmRSS")


def peak_bytes() -> int:
    """The highest resident bytes since the last reset_peak()."""
    return _status_bytes("VmHWM")


def _status_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")
