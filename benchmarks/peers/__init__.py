"""Peers measured beside durable_workers on the same PostgreSQL server (each in its own virtualenv, never imported by the engine)."""
