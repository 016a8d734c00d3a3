"""Prefect's ephemeral API server, started by the CLI together with a watcher that stops it if the CLI is killed.

Prefect starts that server as a child process and stops it at exit, but a CLI killed with SIGKILL (the OOM killer,
``kill -9``) runs no exit handler, and the server lives on, holding a port and memory, one more each night. The
watcher is a second, small child that waits on pidfds (Linux) for the CLI or the server to end; if the CLI ends first,
it stops the server. Pidfds, opened by the CLI and passed down, cannot point at a reused process id.

Run as ``python -m cli.ephemeral_server CLI_FD SERVER_FD`` by ``start_watched`` only.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys

STOP_SECONDS = 5.0  # what the server gets after SIGTERM before SIGKILL, as Prefect's own stop gives it


def start_watched() -> None:
    """Start the ephemeral server now, as Prefect would at a flow's first call, and its watcher. Nothing happens when a
    Prefect server is configured, ephemeral mode is off, or the platform has no pidfds."""
    from prefect.settings import get_current_settings

    settings = get_current_settings()
    if settings.api.url or not settings.server.ephemeral.enabled or not hasattr(os, "pidfd_open"):
        return
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()  # the instance Prefect's client uses when no API URL is set
    if server.running:
        return
    server.start()
    cli_fd, server_fd = os.pidfd_open(os.getpid()), os.pidfd_open(server.server_process.pid)
    try:
        subprocess.Popen([sys.executable, "-m", "cli.ephemeral_server", str(cli_fd), str(server_fd)],
                         pass_fds=(cli_fd, server_fd), stdin=subprocess.DEVNULL)
    finally:
        os.close(cli_fd)
        os.close(server_fd)


def watch(cli_fd: int, server_fd: int) -> None:
    """Wait until the CLI or the server ends; when the CLI ends first, stop the server (SIGTERM, then SIGKILL)."""
    ended, _, _ = select.select([cli_fd, server_fd], [], [])
    if server_fd in ended:
        return
    try:
        signal.pidfd_send_signal(server_fd, signal.SIGTERM)
        if not select.select([server_fd], [], [], STOP_SECONDS)[0]:
            signal.pidfd_send_signal(server_fd, signal.SIGKILL)
    except ProcessLookupError:  # it ended on its own in between
        pass


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole terminal group; the CLI handles it
    watch(int(sys.argv[1]), int(sys.argv[2]))
