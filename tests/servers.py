"""Helpers shared by the tests that start a server and its processes (JupyterLab in test_browser.py, Voila in
test_classroom.py)."""

import os
import signal
import socket
from pathlib import Path


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kill_processes_with(marker: bytes) -> None:
    """SIGKILL what is left of the processes this test started (they carry `marker` in their environment), e.g. a
    kernel still training when the server was killed. Linux only; elsewhere it does nothing."""
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if int(proc.name) != os.getpid() and marker in (proc / "environ").read_bytes().split(b"\0"):
                os.kill(int(proc.name), signal.SIGKILL)
        except (OSError, ValueError):
            pass
