"""``python -m durable_workers ...`` is the ``durable`` command."""

from .cli import main

main(prog_name="durable")
