"""The DBOS side of the peer benchmark; runs only inside the peer's own virtualenv (``dbos`` installed there).

    python dbos_app.py worker URL EXECUTOR_ID   # a DBOS process serving the queue, one workflow at a time
    python dbos_app.py submit URL COUNT PREFIX  # enqueue COUNT workflows, wait for them, print seconds as JSON

The workflow is the onboarding shape of ``benchmarks.flows.bench_onboarding``:
four no-op steps returning the same 100-byte payload. DBOS runs a workflow's
steps in its own thread, so the two "parallel" steps run one after the other
here (no-op steps: the work is the checkpoints, four per workflow either way).
Nothing of durable_workers is imported here, and the engine never imports this.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time

from dbos import DBOS, DBOSClient, DBOSConfig

QUEUE = "bench"
#: Seconds between a DBOS worker's queue polls (its default is 1 s: at one workflow per poll and
#: worker, that alone would cap the peer at 4 workflows/s, so it polls as often as ours idles).
POLL_S = 0.01
PAYLOAD = {"ok": True, "data": "x" * 76}


@DBOS.step()
def noop_step() -> dict:
    """A no-op step (its output is checkpointed)."""
    return PAYLOAD


@DBOS.workflow()
def bench_onboarding(sleep_ms: float = 0) -> dict:
    """create_record -> provision_laptop, provision_access -> send_welcome_email, all no-ops."""
    record = noop_step()
    laptop, access = noop_step(), noop_step()
    noop_step()
    return {"ok": bool(record and laptop and access)}


def config(url: str, executor_id: str) -> DBOSConfig:
    return {"name": "durable-bench-peer", "system_database_url": url, "executor_id": executor_id,
            "application_version": "bench", "log_level": "WARNING"}  # fmt: skip


def worker(url: str, executor_id: str) -> None:
    """Serve the queue with ``worker_concurrency=1`` until SIGTERM."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    DBOS(config=config(url, executor_id))
    DBOS.launch()
    DBOS.register_queue(QUEUE, worker_concurrency=1, polling_interval_sec=POLL_S)
    print("ready", flush=True)
    stop.wait()
    DBOS.destroy()


def submit(url: str, count: int, prefix: str) -> None:
    """Enqueue ``count`` workflows; print the seconds from the first enqueue to the last completion."""
    client = DBOSClient(system_database_url=url)
    first = time.time()
    handles = [
        client.enqueue({"queue_name": QUEUE, "workflow_name": "bench_onboarding", "workflow_id": f"{prefix}{i:06d}",
                        "app_version": "bench"})  # fmt: skip
        for i in range(count)
    ]
    for handle in handles:
        handle.get_result()
    last = max(handle.get_status().updated_at or 0 for handle in handles) / 1000.0
    client.destroy()
    print(json.dumps({"seconds": last - first, "count": count}), flush=True)


if __name__ == "__main__":
    role, url, *rest = sys.argv[1:]
    if role == "worker":
        worker(url, rest[0])
    else:
        submit(url, int(rest[0]), rest[1])
