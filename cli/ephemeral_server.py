"""Prefect's ephemeral API server, started by the CLI in a session of its own and with a watcher that stops it if the
CLI is killed.

Prefect starts that server as a child process and stops it at exit. In the CLI's process group it would also get
the SIGINT of a Ctrl-C in a terminal (or a ``kill -- -PGID``) and die under the CLI, which then spent minutes retrying
a dead API and printed tracebacks; in a session of its own, only the CLI gets the signal, stops at its next step,
and stops the server. A CLI killed with SIGKILL (the OOM killer, ``kill -9``) runs no exit handler, and the server
would live on, holding a port and memory, one more each night. The watcher is a second, small child that waits on
pidfds (Linux) for the CLI or the server to end; if the CLI ends first, it stops the server. Pidfds, opened by the CLI
and passed down, cannot point at a reused process id.

Run as ``python -I cli/ephemeral_server.py CLI_FD SERVER_FD``, in a session of its own, by ``start_watched`` only.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys

STOP_SECONDS = 5.0  # what the server gets after SIGTERM before SIGKILL, as Prefect's own stop gives it


def start_watched() -> None:
    """Start the ephemeral server now, as Prefect would at a flow's first call, in a session of its own, and its
    watcher. Nothing happens (Prefect starts it later, in the CLI's group, as it would) when a Prefect server is
    configured, ephemeral mode is off, or the platform has no pidfds to watch it by (a server out of the CLI's group
    must have a watcher: a group kill would leave it running)."""
    from prefect.settings import get_current_settings

    settings = get_current_settings()
    if settings.api.url or not settings.server.ephemeral.enabled or not _pidfds_work():
        return
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()  # the instance Prefect's client uses when no API URL is set
    if server.running:
        return
    prefect_server = sys.modules[SubprocessASGIServer.__module__]
    prefect_server.subprocess = _OwnSession()  # Prefect's start calls subprocess.Popen; Prefect has no option for this
    try:
        server.start()
    finally:
        prefect_server.subprocess = subprocess
    cli_fd, server_fd = os.pidfd_open(os.getpid()), os.pidfd_open(server.server_process.pid)
    try:  # by path, isolated: a `cli` package in the user's folder must not stand in for it
        subprocess.Popen([sys.executable, "-I", __file__, str(cli_fd), str(server_fd)], pass_fds=(cli_fd, server_fd),
                         stdin=subprocess.DEVNULL, start_new_session=True)  # out of reach of a kill of the CLI's group
    finally:
        os.close(cli_fd)
        os.close(server_fd)


def _pidfds_work() -> bool:
    """Whether this process can open pidfds: Python has the call on Linux, yet a kernel before 5.3 (ENOSYS) or a
    container's seccomp filter (EPERM) may refuse it."""
    try:
        os.close(os.pidfd_open(os.getpid()))
    except (AttributeError, OSError):
        return False
    return True


class _OwnSession:
    """``subprocess`` as Prefect's server module sees it while the server starts: its Popen starts a new session."""

    def __getattr__(self, name: str) -> object:
        return getattr(subprocess, name)

    @staticmethod
    def Popen(*args, **kwargs) -> subprocess.Popen:  # noqa: N802 (the name Prefect calls)
        return subprocess.Popen(*args, start_new_session=True, **kwargs)


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
    watch(int(sys.argv[1]), int(sys.argv[2]))
