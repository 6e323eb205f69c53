"""A throwaway PostgreSQL cluster for tests, or the server at ``DURABLE_TEST_PG_URL``.

``PgCluster.start()`` runs ``initdb`` into a fresh temporary directory and ``pg_ctl start`` on a
free port of 127.0.0.1 (fsync off, trust authentication, the Unix socket inside the temporary
directory); ``stop()`` runs ``pg_ctl stop -m immediate`` and removes the directory. PostgreSQL
refuses to run as root, so when the tests run as root both commands run as an unprivileged
account (``postgres`` when it exists, else ``nobody``) through ``subprocess``'s ``user=``.
``create_database()`` / ``drop_database()`` give each test its own database.

The session's cluster runs with ``synchronous_commit=off`` for speed: a commit is acknowledged
before its WAL is written, so a crash (``pg_ctl stop -m immediate``) forgets the last few hundred
milliseconds of acknowledged commits. A cluster that a test halts (``halt()``) must keep what it
acknowledged, as a real server does: it is started with ``crash_safe=True``
(``synchronous_commit=on``; ``fsync=off`` stays, since a halt kills processes, not the machine's
page cache), and ``halt()`` refuses any other.

Run as a script (stdlib only, no virtualenv needed): ``python3 tests/pg_cluster.py --bindir``
prints the folder holding ``initdb`` and ``pg_ctl``, or exits 1 when there is none; ``.ci/run``
uses it so that CI and the fixtures search the same places.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

if TYPE_CHECKING:  # psycopg is imported lazily: this module also runs without it (see main)
    import psycopg

URL_ENV = "DURABLE_TEST_PG_URL"
SUPERUSER = "durable"
HOST = "127.0.0.1"
UNPRIVILEGED_ACCOUNTS = ("postgres", "nobody")
DEBIAN_BIN_GLOB = "/usr/lib/postgresql/*/bin"
START_TIMEOUT_S = 60
STOP_TIMEOUT_S = 30
START_ATTEMPTS = 3
#: Longest Unix socket path the kernel accepts is 107 bytes; leave room for "/.s.PGSQL.NNNNN".
SOCKET_DIR_MAX = 90
FALLBACK_TMP = "/tmp"
SERVER_SETTINGS = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",
}
#: What ``crash_safe=True`` changes: an acknowledged commit survives a halt (see the module docstring).
CRASH_SAFE_SETTINGS = {"synchronous_commit": "on"}


class PgUnavailable(Exception):
    """No PostgreSQL to test against: the message says what is missing and how to get it."""


def _has_tools(folder: str | Path | None) -> bool:
    return bool(folder) and all(
        os.access(Path(folder) / tool, os.X_OK) for tool in ("initdb", "pg_ctl")
    )


def _version_key(folder: str) -> tuple[int, ...]:
    digits = Path(folder).parent.name
    return tuple(int(part) for part in digits.split(".") if part.isdigit()) or (0,)


def find_bindir() -> Path | None:
    """The folder holding ``initdb`` and ``pg_ctl``, or None when PostgreSQL is not installed.

    Searched in order: ``initdb`` on PATH, the folder ``pg_config --bindir`` prints, and the
    newest ``/usr/lib/postgresql/*/bin`` (Debian keeps the server binaries off PATH).
    """
    on_path = shutil.which("initdb")
    if on_path and _has_tools(Path(on_path).resolve().parent):
        return Path(on_path).resolve().parent
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            printed = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            printed = ""
        if _has_tools(printed):
            return Path(printed)
    for folder in sorted(glob.glob(DEBIAN_BIN_GLOB), key=_version_key, reverse=True):
        if _has_tools(folder):
            return Path(folder)
    return None


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nobody listened on a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def _server_account() -> pwd.struct_passwd | None:
    """The account to run PostgreSQL as: None for a non-root user (runs as itself)."""
    if os.geteuid() != 0:
        return None
    for name in UNPRIVILEGED_ACCOUNTS:
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise PgUnavailable(
        "tests run as root and no unprivileged account (%s) exists to run PostgreSQL as"
        % ", ".join(UNPRIVILEGED_ACCOUNTS)
    )


def _others_can_enter(folder: Path) -> bool:
    """True when every folder from / down to ``folder`` lets other users through (o+x)."""
    return all(part.stat().st_mode & stat.S_IXOTH for part in (folder, *folder.parents))


def _cluster_parent(account: pwd.struct_passwd | None) -> str:
    """Where to make the cluster's folder: the temp folder, unless the server could not use it.

    The server account must be able to reach its folder (a root-only TMPDIR would not do), and the
    socket path must stay short; otherwise ``/tmp``.
    """
    parent = Path(tempfile.gettempdir()).resolve()
    if len(str(parent)) > SOCKET_DIR_MAX - 20 or (account is not None and not _others_can_enter(parent)):
        return FALLBACK_TMP
    return str(parent)


def with_database(url: str, dbname: str) -> str:
    """``url`` with its database (the path) replaced by ``dbname``; query options are kept."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + dbname, parts.query, parts.fragment))


def _connect(url: str) -> "psycopg.Connection[Any]":
    """An autocommit connection to ``url``; PgUnavailable when psycopg is not installed."""
    try:
        import psycopg
    except ImportError as exc:
        raise PgUnavailable("psycopg is not installed (pip install -e '.[test]')") from exc
    return psycopg.connect(url, autocommit=True, connect_timeout=10)


@dataclass
class PgCluster:
    """A PostgreSQL server for one test session: started here, or given by URL.

    ``admin_url`` connects as a superuser to the ``postgres`` database (or to the database of
    ``DURABLE_TEST_PG_URL``); ``start_seconds`` is how long ``initdb`` + ``pg_ctl start`` took
    (0 for an external server).
    """

    admin_url: str = ""
    bindir: Path | None = None
    root: Path | None = None
    port: int = 0
    start_seconds: float = 0.0
    external: bool = False
    crash_safe: bool = False
    _account: pwd.struct_passwd | None = field(default=None, repr=False)

    @classmethod
    def from_environment(cls, *, crash_safe: bool = False) -> "PgCluster":
        """The server at ``DURABLE_TEST_PG_URL`` when set, else a cluster started here.

        ``crash_safe=True``: the cluster keeps every acknowledged commit through :meth:`halt`.

        Raises ``PgUnavailable`` when neither is possible (binaries or psycopg missing), and
        ``RuntimeError`` with the server log when an installed PostgreSQL fails to start.
        """
        url = os.environ.get(URL_ENV, "").strip()
        if url:
            cluster = cls(admin_url=url, external=True)
            _connect(url).close()
            return cluster
        bindir = find_bindir()
        if bindir is None:
            raise PgUnavailable(
                "PostgreSQL binaries (initdb, pg_ctl) not found on PATH, via pg_config or in "
                f"{DEBIAN_BIN_GLOB}; install postgresql or set {URL_ENV}"
            )
        try:  # psycopg is checked before paying for initdb
            import psycopg  # noqa: F401
        except ImportError as exc:
            raise PgUnavailable("psycopg is not installed (pip install -e '.[test]')") from exc
        cluster = cls(bindir=bindir, crash_safe=crash_safe, _account=_server_account())
        cluster.start()
        return cluster

    def _run(self, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
        account = self._account
        return subprocess.run(
            list(args),
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.root,
            stdin=subprocess.DEVNULL,
            user=account.pw_uid if account else None,
            group=account.pw_gid if account else None,
            extra_groups=[] if account else None,
            env={**os.environ, "LC_ALL": "C", "HOME": str(self.root)},
        )

    def _log_tail(self) -> str:
        log = self.root / "server.log" if self.root else None
        if log is None or not log.exists():
            return ""
        return "\n".join(log.read_text(errors="replace").splitlines()[-20:])

    def start(self) -> None:
        """``initdb`` + ``pg_ctl start -w`` on a free port; raises RuntimeError if it fails."""
        started = time.monotonic()
        self.root = Path(tempfile.mkdtemp(prefix="durable-pg-", dir=_cluster_parent(self._account)))
        if self._account is not None:
            os.chown(self.root, self._account.pw_uid, self._account.pw_gid)
        data = str(self.root / "data")
        initdb = self._run(
            str(self.bindir / "initdb"), "-D", data, "--auth=trust", f"--username={SUPERUSER}",
            "--encoding=UTF8", "--locale=C", "--no-sync", timeout=START_TIMEOUT_S,
        )
        if initdb.returncode != 0:
            self._discard()
            raise RuntimeError(f"initdb failed: {initdb.stderr.strip() or initdb.stdout.strip()}")
        for _ in range(START_ATTEMPTS):  # another process may take the port we picked
            self.port = free_port()
            if self._pg_ctl_start(data):
                break
        else:
            tail = self._log_tail()
            self._stop_server()  # a start that timed out may have left a server running
            self._discard()
            raise RuntimeError(f"pg_ctl start failed {START_ATTEMPTS} times:\n{tail}")
        self.admin_url = f"postgresql://{SUPERUSER}@{HOST}:{self.port}/postgres"
        self.start_seconds = time.monotonic() - started

    def _pg_ctl_start(self, data: str) -> bool:
        options = [f"-p {self.port}", f"-c listen_addresses={HOST}",
                   f"-c unix_socket_directories='{self.root}'"]
        settings = {**SERVER_SETTINGS, **(CRASH_SAFE_SETTINGS if self.crash_safe else {})}
        options += [f"-c {name}={value}" for name, value in settings.items()]
        result = self._run(
            str(self.bindir / "pg_ctl"), "start", "-w", "-t", str(START_TIMEOUT_S), "-D", data,
            "-l", str(self.root / "server.log"), "-o", " ".join(options),
            timeout=START_TIMEOUT_S + 10,
        )
        return result.returncode == 0

    def stop(self) -> None:
        """``pg_ctl stop -m immediate`` and remove the directory; nothing for an external server."""
        if self.external or self.root is None:
            return
        self._stop_server()
        self._discard()

    def halt(self) -> None:
        """Stop the server as a crash would (``pg_ctl stop -m immediate``), keeping its data and
        port: every connection drops, new ones are refused until :meth:`resume`."""
        if self.external or self.root is None:
            raise RuntimeError("only a cluster started here can be halted")
        if not self.crash_safe:  # it would forget commits it acknowledged: no real server does
            raise RuntimeError("only a cluster started with crash_safe=True can be halted")
        self._stop_server()

    def resume(self) -> None:
        """Start a halted server again on the same port and data; RuntimeError if it fails."""
        if self.root is None or not self._pg_ctl_start(str(self.root / "data")):
            raise RuntimeError(f"pg_ctl start failed after a halt:\n{self._log_tail()}")

    def _stop_server(self) -> None:
        if self.bindir is None or self.root is None or not (self.root / "data" / "postmaster.pid").exists():
            return
        self._run(
            str(self.bindir / "pg_ctl"), "stop", "-m", "immediate", "-w",
            "-t", str(STOP_TIMEOUT_S), "-D", str(self.root / "data"),
            timeout=STOP_TIMEOUT_S + 10,
        )

    def _discard(self) -> None:
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def create_database(self) -> str:
        """A new empty database (``TEMPLATE template0``); returns its URL."""
        name = f"dw_test_{uuid.uuid4().hex[:12]}"
        with _connect(self.admin_url) as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
        return with_database(self.admin_url, name)

    def drop_database(self, url: str) -> None:
        """Drop the database of ``url``, disconnecting whoever is still connected to it."""
        name = urlsplit(url).path.lstrip("/")
        with _connect(self.admin_url) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


def main(argv: list[str]) -> int:
    """``--bindir``: print the PostgreSQL binary folder, exit 1 when there is none."""
    if argv != ["--bindir"]:
        print("usage: pg_cluster.py --bindir", file=sys.stderr)
        return 2
    bindir = find_bindir()
    if bindir is None:
        return 1
    print(bindir)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
