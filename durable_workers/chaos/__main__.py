"""``python -m durable_workers.chaos lock|submit|run``: the experiment's helper processes."""

from .cli import helpers

helpers(prog_name="python -m durable_workers.chaos")
