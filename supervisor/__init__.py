"""The durable_workers supervisor: keeps a fleet of worker processes alive."""

from .supervisor import Supervisor, SupervisorOptions

__all__ = ["Supervisor", "SupervisorOptions"]
