"""deploy/: the Kubernetes manifest and the systemd unit name only what the code has (issue 12, item 3).

Each file is parsed (PyYAML; the unit as an INI file); the supervisor command line it runs
is parsed by the real ``durable-supervisor`` click command, so an option that does not
exist or a bad value fails here. The probe paths and port it names are served by a real
metrics server of a real (not running) supervisor; the stop signal it names stops one; the
grace period it gives covers ``--shutdown-timeout``.
"""

from __future__ import annotations

import configparser
import os
import shlex
import signal
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from durable_workers.config import Config
from durable_workers.metrics_http import HEALTH_PATH, READY_PATH, MetricsServer
from supervisor.cli import main as supervisor_command
from supervisor.supervisor import Supervisor
from tests.integration.fleet_support import DbTarget, any_db, wait_for  # noqa: F401  (any_db: a fixture)

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMMAND = "durable-supervisor"
#: Seconds the orchestrator's grace period may exceed --shutdown-timeout (room to record and exit).
MAX_MARGIN_S = 30


def supervisor_params(argv: list[str]) -> dict[str, Any]:
    """The options the real command parses from ``argv`` (its arguments, without the program)."""
    with supervisor_command.make_context(COMMAND, list(argv)) as ctx:
        return dict(ctx.params)


def deployment() -> dict[str, Any]:
    documents = list(yaml.safe_load_all((DEPLOY / "kubernetes.yaml").read_text()))
    found = [d for d in documents if d and d.get("kind") == "Deployment"]
    assert len(found) == 1, [d.get("kind") for d in documents if d]
    return found[0]


def unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # systemd keys are case-sensitive
    parser.read_string((DEPLOY / "durable-supervisor.service").read_text())
    return parser


@pytest.fixture
def idle_supervisor(any_db: DbTarget) -> Iterator[Supervisor]:  # noqa: F811
    """A real supervisor on a fresh database of each backend, never run (no worker is started)."""
    supervisor = Supervisor(Config(db=str(any_db), app="examples"))
    try:
        yield supervisor
    finally:
        supervisor.store.close()


def http_status(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_the_deployment_runs_the_supervisor_with_options_it_has() -> None:
    spec = deployment()["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    assert container["command"] == [COMMAND]
    params = supervisor_params(container["args"])
    assert params["metrics_port"] is not None and params["metrics_host"] == "0.0.0.0"  # the kubelet must reach it
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe, path in (("livenessProbe", HEALTH_PATH), ("readinessProbe", READY_PATH)):
        get = container[probe]["httpGet"]
        assert get["path"] == path, probe
        assert ports[get["port"]] == params["metrics_port"], probe
    grace = spec["terminationGracePeriodSeconds"]
    assert params["shutdown_timeout"] < grace <= params["shutdown_timeout"] + MAX_MARGIN_S
    assert "lifecycle" not in container  # the kubelet's SIGTERM reaches the supervisor as it is


def test_the_service_and_scrape_annotations_name_the_metrics_port() -> None:
    documents = [d for d in yaml.safe_load_all((DEPLOY / "kubernetes.yaml").read_text()) if d]
    (service,) = [d for d in documents if d["kind"] == "Service"]
    (container,) = deployment()["spec"]["template"]["spec"]["containers"]
    port = supervisor_params(container["args"])["metrics_port"]
    assert {p["targetPort"] for p in service["spec"]["ports"]} == {"metrics"}
    annotations = deployment()["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(port) and annotations["prometheus.io/path"] == "/metrics"


def test_the_systemd_unit_runs_the_supervisor_and_stops_it_with_a_signal_it_handles() -> None:
    service = unit()["Service"]
    argv = shlex.split(service["ExecStart"])
    assert Path(argv[0]).name == COMMAND
    params = supervisor_params(argv[1:])
    assert params["metrics_port"] is not None
    assert service["Restart"] == "always"
    assert service["KillMode"] == "mixed"  # the supervisor alone gets the signal; it stops its workers
    timeout = float(service["TimeoutStopSec"])
    assert params["shutdown_timeout"] < timeout <= params["shutdown_timeout"] + MAX_MARGIN_S
    assert service["KillSignal"] == signal.SIGTERM.name


def test_the_command_the_files_run_is_the_installed_entry_point() -> None:
    setup = configparser.ConfigParser(interpolation=None)
    setup.read(ROOT / "setup.cfg")
    lines = setup["options.entry_points"]["console_scripts"].strip().splitlines()
    scripts = {name.strip(): target.strip() for name, target in (line.split("=", 1) for line in lines)}
    assert scripts[COMMAND] == "supervisor.cli:main"


def test_the_probe_paths_are_served(idle_supervisor: Supervisor) -> None:
    server = MetricsServer(idle_supervisor, "127.0.0.1", 0, None).start()
    try:
        port = server.address[1]
        assert http_status(port, HEALTH_PATH) == 200
        assert http_status(port, READY_PATH) == 503  # no worker registered: never run
        assert http_status(port, "/metrics") == 200
    finally:
        server.stop()


def test_the_stop_signal_the_unit_names_stops_the_supervisor(idle_supervisor: Supervisor) -> None:
    named = signal.Signals[unit()["Service"]["KillSignal"]]
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD)}
    try:
        idle_supervisor.install_signal_handlers()
        os.kill(os.getpid(), named)
        wait_for(lambda: idle_supervisor.stop_requests == 1, 10, f"{named.name} to request a stop")
    finally:
        signal.set_wakeup_fd(-1)
        for signum, handler in saved.items():
            signal.signal(signum, handler)
