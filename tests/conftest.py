"""Shared pytest fixtures: a real PostgreSQL server and a moto S3 server reached over HTTP.

PostgreSQL: 127.0.0.1:5432, user postgres, trust auth (override with
``PIXELWIZARD_TEST_PG_URL``). If it is down the session tries ``pg_ctlcluster ... start``
once; if it still cannot connect, tests needing it skip -- or fail when ``CI=true``.
Every test using ``pg_url`` gets a fresh database with a unique name, dropped afterwards.

S3: moto's ``ThreadedMotoServer`` on a free 127.0.0.1 port (not the in-process mock);
each test using ``s3_bucket`` gets its own bucket and dummy AWS credentials in its env.
"""

from __future__ import annotations

import logging
import os
import socket
import struct
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import OperationalError

# Prefect reads its settings at import: isolate its home (database, profiles) and keep it quiet
# before any test module imports it.
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="pixelwizard-test-prefect-")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

PG_ADMIN_URL = os.environ.get("PIXELWIZARD_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
PG_START_WAIT_S = 20


def skip_or_fail(reason: str) -> None:
    """Skip the test, except under CI=true where a missing service is a failure."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: not skipping)")
    pytest.skip(reason)


def _pg_error(engine: Engine) -> str | None:
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except OperationalError as err:
        return str(err.orig).strip().splitlines()[0]
    return None


def _start_postgres() -> tuple[bool, str]:
    """Start the local PostgreSQL cluster(s) once; whether one started, and what happened."""
    root = Path("/etc/postgresql")
    versions = sorted(p.name for p in root.iterdir()) if root.is_dir() else []
    if not versions:
        return False, f"no cluster under {root}"
    started, outcomes = False, []
    for version in versions:
        try:
            done = subprocess.run(
                ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start"],
                capture_output=True,
                text=True,
                timeout=60,
            )
        except (OSError, subprocess.TimeoutExpired) as err:
            outcomes.append(f"pg_ctlcluster {version}: {err}")
            continue
        started |= done.returncode == 0
        outcomes.append(
            f"pg_ctlcluster {version}: rc={done.returncode} {(done.stderr or done.stdout).strip()[:200]}".strip()
        )
    return started, "; ".join(outcomes)


@pytest.fixture
def umask() -> Iterator[Callable[[int], int]]:
    """``os.umask``, to set the process umask within the test; the original is restored afterwards."""
    original = os.umask(0o022)
    yield os.umask
    os.umask(original)


@pytest.fixture(scope="session")
def pg_admin_engine() -> Iterator[Engine]:
    """An AUTOCOMMIT engine on the test server's maintenance database (starts the server once)."""
    engine = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
    error = _pg_error(engine)
    if error is not None:
        started, outcome = _start_postgres()
        deadline = time.monotonic() + (PG_START_WAIT_S if started else 0)
        while (error := _pg_error(engine)) is not None and time.monotonic() < deadline:
            time.sleep(0.5)
        if error is not None:
            engine.dispose()
            skip_or_fail(f"PostgreSQL unavailable at {PG_ADMIN_URL}: {error}; start attempt: {outcome}")
    yield engine
    engine.dispose()


@pytest.fixture
def pg_url(pg_admin_engine: Engine) -> Iterator[str]:
    """URL of a brand-new, empty PostgreSQL database for this test."""
    name = f"pw_test_{uuid.uuid4().hex[:12]}"
    with pg_admin_engine.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    yield pg_admin_engine.url.set(database=name).render_as_string(hide_password=False)
    with pg_admin_engine.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """URL of a SQLite file (not yet created) in the test's temp directory."""
    return f"sqlite:///{tmp_path / 'pixelwizard.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest) -> str:
    """An empty database on each supported backend in turn."""
    return request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url")


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """``http://127.0.0.1:<port>`` of a moto S3 server running in a thread for the session."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@dataclass(frozen=True)
class S3Bucket:
    """A bucket on the moto server, with a plain boto3 client for checking what is really stored."""

    endpoint_url: str
    name: str
    client: Any

    def url(self, prefix: str = "") -> str:
        return f"s3://{self.name}/{prefix}" if prefix else f"s3://{self.name}"


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Dummy credentials and no profile/config files, so nothing can reach real AWS."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def s3_bucket(moto_endpoint: str, aws_env: None) -> S3Bucket:
    """A fresh, empty bucket on the moto server."""
    import boto3

    client = boto3.client("s3", endpoint_url=moto_endpoint)
    name = f"pw-test-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=name)
    return S3Bucket(moto_endpoint, name, client)


class CuttableProxy:
    """A TCP relay on a free 127.0.0.1 port to ``target``, which a test cuts off and restores, as a network failure
    or a database failover would: ``cut()`` resets every open connection (RST, as a dropped network path looks to
    the client) and resets each new one at once, counting them in ``refused``, until ``restore()``. With
    ``cut_after`` it cuts itself once that many request bytes have gone through. Real sockets both ways; only the
    outage is staged."""

    def __init__(self, target: tuple[str, int], cut_after: int | None = None):
        self.target, self.cut_after = target, cut_after
        self.refused = self.forwarded = 0
        self.is_cut = threading.Event()
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:  # closed
                return
            if self.is_cut.is_set():
                with self._lock:
                    self.refused += 1
                _reset(client)
                continue
            server = socket.create_connection(self.target)
            with self._lock:
                self._open |= {client, server}
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, is_request: bool) -> None:
        try:
            while data := source.recv(65536):
                if is_request and self.cut_after is not None:
                    with self._lock:
                        self.forwarded += len(data)
                    if self.forwarded > self.cut_after:
                        self.cut()
                        return
                sink.sendall(data)
        except OSError:
            pass
        for sock in (source, sink):
            with self._lock:
                self._open.discard(sock)
            _reset(sock)

    def cut(self) -> None:
        self.is_cut.set()
        with self._lock:
            sockets, self._open = list(self._open), set()
        for sock in sockets:
            _reset(sock)

    def restore(self) -> None:
        self.is_cut.clear()

    def close(self) -> None:
        self.cut()
        self._listener.close()


def _reset(sock: socket.socket) -> None:
    """Break the connection at once: shut it down (which also wakes a relay thread blocked reading it; a bare close
    from another thread would not take effect until that read returned), then close with an RST (SO_LINGER 0)."""
    for step in (lambda: sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)),
                 lambda: sock.shutdown(socket.SHUT_RDWR), sock.close):
        try:
            step()
        except OSError:
            pass


@pytest.fixture
def tcp_proxy() -> Iterator[Callable[..., CuttableProxy]]:
    """``tcp_proxy(url, cut_after=None)``: a ``CuttableProxy`` to the host and port of ``url``, closed afterwards."""
    from urllib.parse import urlsplit

    proxies: list[CuttableProxy] = []

    def make(url: str, cut_after: int | None = None) -> CuttableProxy:
        parts = urlsplit(url if "//" in url else f"//{url}")
        proxies.append(CuttableProxy((parts.hostname or "127.0.0.1", parts.port or 5432), cut_after))
        return proxies[-1]

    yield make
    for proxy in proxies:
        proxy.close()


@pytest.fixture
def pg_proxy(pg_url: str, tcp_proxy) -> tuple[CuttableProxy, str]:
    """A ``CuttableProxy`` to the test PostgreSQL server and ``pg_url`` routed through it."""
    from sqlalchemy.engine import make_url

    url = make_url(pg_url)
    proxy = tcp_proxy(f"//{url.host}:{url.port or 5432}")
    return proxy, url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)


@pytest.fixture
def locked_folder(tmp_path) -> Iterator[Path]:
    """A folder no file can be made in: read-only by its mode, and immutable (chattr +i) where the tests run as root,
    whom modes do not stop."""
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o555)
    as_root = os.geteuid() == 0
    if as_root:
        subprocess.run(["chattr", "+i", str(folder)], check=True)
    yield folder
    if as_root:
        subprocess.run(["chattr", "-i", str(folder)], check=True)
    folder.chmod(0o755)
