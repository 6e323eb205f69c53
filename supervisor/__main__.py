"""``python -m supervisor`` is ``durable-supervisor``."""

from .cli import main

main(prog_name="durable-supervisor")
