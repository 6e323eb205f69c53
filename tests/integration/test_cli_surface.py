"""The command-line surface as a user meets it: real CLI subprocesses on real SQLite files.

* Every numeric option is range-checked on every command (one ``Error:`` line, exit 2, the
  database untouched); ``--log-level`` is a case-insensitive choice; ``--version`` everywhere.
* ``durable run NAME ID`` without ``--input`` resumes an existing workflow with its recorded
  input; a different ``--input`` says how to resume.
* Read commands work for a user who may only read the database and its folder, and never
  create a database; no command leaves a database behind when the app, name or input is bad.
* ``--input-file PATH|-`` carries inputs too large for argv; ``durable status ID`` previews them.

Resuming with the recorded input and the large inputs run on both backends (``any_db``); the
rest is about SQLite files (the folder, the file's mode, no file created) or fails before any
database is opened. PostgreSQL's bad targets: tests/integration/test_cli_pg_errors.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

from durable_workers import __version__
from durable_workers.config import PREVIEW_CHARS
from tests.conftest import APPS, ROOT, cli_env, run_cli
from tests.integration.fleet_support import DbTarget, Fleet, any_db, query, submit  # noqa: F401  (any_db: fixture)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

EXAMPLES_APP = ROOT / "examples" / "__init__.py"
TEST_APP = APPS / "__init__.py"
#: How each program is started: the console scripts' own entry points, with this interpreter.
PROGRAMS = {
    "durable": [sys.executable, "-m", "durable_workers"],
    "durable-supervisor": [sys.executable, "-m", "supervisor"],
    "durable-submit": [
        sys.executable, "-c", "from durable_workers.cli import submit_main; submit_main(prog_name='durable-submit')"
    ],
}  # fmt: skip
#: Bound on each command: a command that should fail at once but starts running instead fails the test.
COMMAND_TIMEOUT = 20


def run_program(
    program: str,
    *args: str,
    cwd: Path,
    stdin: str | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``program ARGS`` in ``cwd``; a command still running after COMMAND_TIMEOUT fails the test."""
    try:
        return subprocess.run(
            [*PROGRAMS[program], *args], capture_output=True, text=True, cwd=cwd, input=stdin,
            env=cli_env(env), timeout=COMMAND_TIMEOUT,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        pytest.fail(f"{program} {' '.join(args)} was still running after {COMMAND_TIMEOUT} s (it should have refused)")


def snapshot(folder: Path) -> dict[str, str]:
    """File name -> sha256 of every file in ``folder`` (the database, its -wal/-shm, anything else)."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def assert_one_line_error(result: subprocess.CompletedProcess[str], code: int, *needles: str) -> None:
    """Exit ``code``, exactly one ``Error:`` line on stderr (no traceback, no usage block)."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture
def made_db(tmp_path: Path) -> Path:
    """A database with one COMPLETED workflow ``g-1`` (core_greet), all its processes gone."""
    db = tmp_path / "durable.db"
    done = run_cli("run", "core_greet", "g-1", "--input", '{"name": "ann"}', db=db, app=TEST_APP)
    assert done.returncode == 0, done.stderr
    return db


# --------------------------------------------------------------------------- 21. option ranges

BAD_OPTIONS = [
    ("durable", "worker", "--ttl", "0"),
    ("durable", "worker", "--ttl", "-5"),
    ("durable", "worker", "--ttl", "nan"),
    ("durable", "worker", "--concurrency", "0"),
    ("durable", "worker", "--max-claims", "0"),
    ("durable", "worker", "--log-level", "bogus"),
    ("durable-supervisor", "--workers", "0"),
    ("durable-supervisor", "--ttl", "0"),
    ("durable-supervisor", "--ttl", "-1"),
    ("durable-supervisor", "--concurrency", "0"),
    ("durable-supervisor", "--shutdown-timeout", "-1"),
    ("durable-supervisor", "--log-level", "bogus"),
    ("durable-supervisor", "--host-id", ""),
    ("durable-supervisor", "--host-id", "host a"),
    ("durable-supervisor", "--host-id", "h" * 129),
    ("durable", "worker", "--host-id", "tab\there"),
    ("durable", "status", "--limit", "0"),
    ("durable", "status", "--limit", "-3"),
    ("durable", "chaos", "--workers", "0"),
    ("durable", "chaos", "--hosts", "0"),
    ("durable", "chaos", "--ttl", "0"),
    ("durable", "chaos", "--concurrency", "0"),
    ("durable", "chaos", "--workflows", "0"),
    ("durable", "chaos", "--fault-interval", "0"),
    ("durable", "chaos", "--log-level", "bogus"),
]


@pytest.mark.parametrize("command", BAD_OPTIONS, ids=" ".join)
def test_bad_numbers_and_levels_are_one_line_exit_2_and_touch_nothing(command: tuple[str, ...], made_db: Path) -> None:
    program, *args = command
    before = snapshot(made_db.parent)
    config = ["--db", str(made_db), "--app", str(TEST_APP)]
    argv = [*config, *args] if program == "durable" else [*args, *config]
    result = run_program(program, *argv, cwd=made_db.parent)
    assert_one_line_error(result, 2, f"'{args[-2]}'")
    assert "Traceback" not in result.stderr
    assert snapshot(made_db.parent) == before


@pytest.mark.parametrize("program", ["durable-supervisor", "durable"])
def test_log_level_is_case_insensitive(program: str, tmp_path: Path) -> None:
    """``--log-level debug`` passes option parsing: the command gets as far as importing its app."""
    args = ["worker"] if program == "durable" else []
    result = run_program(program, *args, "--log-level", "debug", "--app", "no_such_app_x", "--db", "d.db", cwd=tmp_path)
    assert_one_line_error(result, 1, "no_such_app_x")
    assert list(tmp_path.iterdir()) == []


def test_bare_durable_still_prints_its_help(tmp_path: Path) -> None:
    result = run_program("durable", cwd=tmp_path)
    assert "Commands:" in result.stdout + result.stderr and "Traceback" not in result.stderr


# --------------------------------------------------------------------------- 26. --version

VERSION_COMMANDS = [
    ("durable",), ("durable-submit",), ("durable-supervisor",),
    *(("durable", name) for name in ("run", "submit", "status", "steps", "workers", "cancel", "retry", "worker", "chaos", "migrate")),
]  # fmt: skip


@pytest.mark.parametrize("command", VERSION_COMMANDS, ids=" ".join)
def test_version_on_every_command(command: tuple[str, ...], tmp_path: Path) -> None:
    program, *args = command
    result = run_program(program, *args, "--version", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert __version__ in result.stdout
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- 20. resume with the recorded input


def test_run_without_input_resumes_with_the_recorded_input(tmp_path: Path, any_db: DbTarget) -> None:  # noqa: F811
    db = any_db
    crashed = run_cli(
        "run", "onboarding", "w-1", "--input", '{"employee_id": "emp-9"}', "--crash-at", "provision_access:before",
        db=db, app=EXAMPLES_APP, cwd=tmp_path,
    )  # fmt: skip
    assert crashed.returncode < 0, crashed.stderr  # SIGKILLed itself mid-run
    resumed = run_cli("run", "onboarding", "w-1", db=db, app=EXAMPLES_APP, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "w-1 COMPLETED" in resumed.stdout and '"employee": "emp-9"' in resumed.stdout
    attached = run_program("durable-submit", "onboarding", "w-1", "--db", str(db), "--app", str(EXAMPLES_APP), cwd=tmp_path)
    assert attached.returncode == 0 and "(COMPLETED)" in attached.stdout, attached.stderr


def test_run_with_a_different_input_says_how_to_resume(made_db: Path) -> None:
    before = snapshot(made_db.parent)
    result = run_cli("run", "core_greet", "g-1", "--input", '{"name": "bob"}', db=made_db, app=TEST_APP)
    assert_one_line_error(result, 1, "omit --input", "choose another id", '{"name": "ann"}')
    assert snapshot(made_db.parent) == before


# --------------------------------------------------------------------------- 22. read-only users


#: Runs ``durable ARGS`` as user UID:GID. The interpreter and the modules (codecs too) are
#: loaded while still root (they may live under root's home); the database is opened only
#: as that user.
AS_READER = """
import os, sys
import encodings.ascii, encodings.latin_1, encodings.utf_8
import durable_workers.cli as cli
uid, gid = int(sys.argv[1]), int(sys.argv[2])
if os.geteuid() != uid:
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
cli.main(args=sys.argv[3:], prog_name="durable")
"""


def reader_ids() -> tuple[int, int, str]:
    """(uid, gid, name) of a user that is not root: ourselves if we are not root, else ``nobody``."""
    if os.geteuid() != 0:
        return os.geteuid(), os.getegid(), f"uid {os.geteuid()}"
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("running as root and there is no 'nobody' user to read the database as")
    return nobody.pw_uid, nobody.pw_gid, "nobody"


def run_as_reader(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``durable ARGS`` in ``cwd`` as the non-root user of :func:`reader_ids`."""
    uid, gid, _ = reader_ids()
    command = [sys.executable, "-c", AS_READER, str(uid), str(gid), *args]
    env = cli_env({"HOME": str(cwd), "PYTHONDONTWRITEBYTECODE": "1"})
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd, env=env, timeout=COMMAND_TIMEOUT)


@pytest.fixture
def shared_folder() -> Iterator[Path]:
    """A folder outside pytest's root-only tmp tree, so another user can reach it."""
    folder = Path(tempfile.mkdtemp(prefix="durable-ro-"))
    folder.chmod(0o755)
    yield folder
    folder.chmod(0o755)
    shutil.rmtree(folder)


@pytest.mark.parametrize("folder_mode", [0o555, 0o777], ids=["read-only-folder", "writable-folder"])
def test_read_commands_work_for_a_user_who_can_only_read(folder_mode: int, shared_folder: Path) -> None:
    db = shared_folder / "durable.db"
    done = run_cli("run", "core_greet", "g-1", "--input", '{"name": "ann"}', db=db, app=TEST_APP, cwd=shared_folder)
    assert done.returncode == 0, done.stderr
    db.chmod(0o444)
    shared_folder.chmod(folder_mode)
    before = snapshot(shared_folder)
    reads = [("status",), ("status", "g-1"), ("steps", "g-1"), ("workers", "--all"), ("status", "--json")]
    for args in reads:
        result = run_as_reader("--db", str(db), "--app", str(TEST_APP), *args, cwd=shared_folder)
        assert result.returncode == 0, (reader_ids()[2], args, result.stderr)
        assert "Traceback" not in result.stderr
        if args[0] in ("status", "steps"):
            assert "COMPLETED" in result.stdout, result.stdout
    empty = hashlib.sha256(b"").hexdigest()
    after = {
        name: digest for name, digest in snapshot(shared_folder).items()
        if not (name.endswith("-shm") or (name.endswith("-wal") and digest == empty))
    }  # fmt: skip
    assert after == before  # nothing written; at most an empty WAL and its index where the folder allows them


def test_read_commands_work_for_a_reader_while_a_fleet_writes(shared_folder: Path, tmp_path: Path) -> None:
    """The fleet (root) keeps its -wal and -shm open; the reader cannot write them or the folder."""
    db = shared_folder / "durable.db"
    fleet = Fleet(tmp_path, db)
    try:
        fleet.start(workers=1)
        done = submit(db, "core_greet", "g-1", {"name": "ann"}, "--wait")
        assert done.returncode == 0, done.stderr
        assert (shared_folder / "durable.db-wal").exists()
        names = {p.name for p in shared_folder.iterdir()}
        for args in (("status",), ("status", "g-1"), ("steps", "g-1"), ("workers",)):
            result = run_as_reader("--db", str(db), "--app", str(TEST_APP), *args, cwd=shared_folder)
            assert result.returncode == 0, (args, result.stderr)
            assert "Traceback" not in result.stderr
        workers = run_as_reader("--db", str(db), "--app", str(TEST_APP), "workers", "--json", cwd=shared_folder)
        assert [w["alive"] for w in json.loads(workers.stdout)] == [True]
        assert {p.name for p in shared_folder.iterdir()} == names
    finally:
        fleet.cleanup()


def test_reads_never_create_a_database(tmp_path: Path) -> None:
    for args in (("status",), ("steps", "x"), ("workers",), ("status", "x", "--json")):
        result = run_cli(*args, db=tmp_path / "durable.db", app=TEST_APP)
        assert_one_line_error(result, 1, "no database")
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- 23. no database left behind


@pytest.mark.parametrize(
    "args",
    [
        ("--app", "no_such_app_x", "onboarding", "e-1"),
        ("--app", str(TEST_APP), "no_such_workflow", "e-1"),
        ("--app", str(TEST_APP), "core_greet", "e-1", "--input", '{"nom": 1}'),
        ("--app", str(TEST_APP), "core_greet", "e-1", "--crash-at", "nowhere"),
    ],
    ids=["unimportable-app", "unknown-name", "input-does-not-fit", "bad-crash-at"],
)
@pytest.mark.parametrize("program", ["durable-submit", "durable run", "durable submit"])
def test_rejected_submit_or_run_leaves_no_database(program: str, args: tuple[str, ...], tmp_path: Path) -> None:
    name, *sub = program.split()
    result = run_program(name, *sub, *args, cwd=tmp_path)  # the default ./durable.db of this folder
    assert_one_line_error(result, 1)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- 24. large inputs


def stored_input(db: DbTarget, workflow_id: str) -> dict:
    (row,) = query(db, "SELECT input FROM workflows WHERE id = ?", (workflow_id,))
    return json.loads(row["input"])


def test_input_file_and_stdin_carry_an_input_too_large_for_argv(tmp_path: Path, any_db: DbTarget) -> None:  # noqa: F811
    db = any_db
    big = {"name": "x" * 3_000_000}  # over Linux's 128 KiB limit on one argv string
    path = tmp_path / "input.json"
    path.write_text(json.dumps(big), encoding="utf-8")
    common = ("--db", str(db), "--app", str(TEST_APP))
    ran = run_program("durable", *common, "run", "core_greet", "big-1", "--input-file", str(path), cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert stored_input(db, "big-1") == big
    piped = run_program("durable-submit", *common, "core_greet", "big-2", "--input-file", "-", cwd=tmp_path, stdin=json.dumps(big))
    assert piped.returncode == 0, piped.stderr
    assert stored_input(db, "big-2") == big

    shown = run_program("durable", *common, "status", "big-1", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    for label in ("input", "result"):
        (line,) = [x for x in shown.stdout.splitlines() if x.startswith(f"{label}: ")]
        assert len(line) < PREVIEW_CHARS + 100 and "--full" in line, line[:200]
    full = run_program("durable", *common, "status", "big-1", "--full", cwd=tmp_path)
    assert f"input: {json.dumps(big)}" in full.stdout.splitlines()
    as_json = json.loads(run_program("durable", *common, "status", "big-1", "--json", cwd=tmp_path).stdout)
    assert as_json["input"] == big and as_json["result"] == "hello " + big["name"]


@pytest.mark.parametrize("program", ["durable run", "durable-submit"])
def test_input_and_input_file_together_is_one_line_exit_2(program: str, made_db: Path) -> None:
    (made_db.parent / "in.json").write_text('{"name": "ann"}', encoding="utf-8")
    before = snapshot(made_db.parent)
    name, *sub = program.split()
    result = run_program(
        name, *sub, "--db", str(made_db), "--app", str(TEST_APP), "core_greet", "g-2",
        "--input", '{"name": "ann"}', "--input-file", "in.json", cwd=made_db.parent,
    )  # fmt: skip
    assert_one_line_error(result, 2, "--input-file")
    missing = run_program(
        name, *sub, "--db", str(made_db), "--app", str(TEST_APP), "core_greet", "g-3", "--input-file", "nope.json",
        cwd=made_db.parent,
    )  # fmt: skip
    assert_one_line_error(missing, 2, "nope.json")
    assert snapshot(made_db.parent) == before
