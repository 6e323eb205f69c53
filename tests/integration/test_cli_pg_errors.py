"""Every command line entry point, given a PostgreSQL target it cannot use, says so in one line.

For each kind of bad target (a URL of an unsupported scheme, a malformed URL, a port nobody
listens on, a database or a role the server does not have) every command (``durable run``,
``durable-supervisor``, ``durable-submit``, ``status``, ``steps``, ``workers``, ``cancel``,
``retry``, ``chaos``) exits non-zero with exactly one ``Error:`` line on stderr and no
traceback. The commands of one kind run side by side (they share nothing). The test cluster
uses trust authentication, so a wrong password cannot be produced here: it is not tested.
"""

from __future__ import annotations

import json
import subprocess
from typing import Callable

import pytest

from tests.conftest import cli_env
from tests.integration.fleet_support import APP, BIN, cli_cwd
from tests.pg_cluster import PgCluster, free_port, with_database

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

INPUT = json.dumps({"ledger": "/nonexistent", "n": 1})
#: Arguments after ``--db URL --app APP`` of each program, by the name shown on failure.
COMMANDS: dict[str, tuple[str, ...]] = {
    "durable run": ("durable", "run", "fleet_steps", "wf", "--input", INPUT),
    "durable-supervisor": ("durable-supervisor", "--workers", "1"),
    "durable-submit": ("durable-submit", "fleet_steps", "wf", "--input", INPUT),
    "durable status": ("durable", "status"),
    "durable steps": ("durable", "steps", "wf"),
    "durable workers": ("durable", "workers"),
    "durable cancel": ("durable", "cancel", "wf"),
    "durable retry": ("durable", "retry", "wf"),
    "durable chaos": ("durable", "chaos", "--workflows", "1", "--timeout", "30"),
}


def _with_user(url: str, user: str) -> str:
    return url.replace("://durable@", f"://{user}@", 1)


#: Each bad target: how to make its URL from the test server, and what its error line says.
TARGETS: dict[str, tuple[Callable[[PgCluster], str], str]] = {
    "bad-scheme": (lambda pg: "mysql://durable@127.0.0.1/durable", "unsupported database URL mysql://"),
    "malformed": (lambda pg: "postgresql://durable@127.0.0.1:notaport/durable", "bad port"),
    "refused": (lambda pg: f"postgresql://durable@127.0.0.1:{free_port()}/durable", "Connection refused"),
    "missing-database": (lambda pg: with_database(pg.admin_url, "no_such_db"), 'database "no_such_db" does not exist'),
    "missing-role": (lambda pg: _with_user(pg.admin_url, "no_such_role"), 'role "no_such_role" does not exist'),
}


def _start(program: str, args: tuple[str, ...], url: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(BIN / program), "--db", url, "--app", str(APP), *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cli_cwd(url),
        env=cli_env(),
    )


@pytest.mark.parametrize("target", TARGETS)
def test_every_command_reports_an_unusable_postgresql_target_in_one_line(target: str, pg_server: PgCluster) -> None:
    make_url, expected = TARGETS[target]
    url = make_url(pg_server)
    running = {name: _start(program, args, url) for name, (program, *args) in COMMANDS.items()}
    wrong = []
    for name, proc in running.items():
        try:
            out, err = proc.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            wrong.append(f"{name}: still running after 90 s\n{out}{err}")
            continue
        lines = err.strip().splitlines()
        one_line = len(lines) == 1 and lines[0].startswith("Error: ") and expected in lines[0]
        if proc.returncode == 0 or not one_line or "Traceback" in out + err:
            wrong.append(f"{name}: exit {proc.returncode}\nstdout: {out}\nstderr: {err}")
    assert not wrong, f"{url}:\n" + "\n".join(wrong)


def test_a_url_that_cannot_be_parsed_is_one_line() -> None:
    """urllib refuses an unbalanced IPv6 bracket; the command still says so in one line."""
    proc = _start("durable", ("status",), "postgresql://durable@[::1/durable")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode != 0 and "Traceback" not in out + err
    assert err.strip().startswith("Error: malformed database URL") and len(err.strip().splitlines()) == 1, err
