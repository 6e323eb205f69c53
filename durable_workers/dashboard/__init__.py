"""``durable dashboard``: a small server-rendered web view of one database, with a few actions.

:func:`create_app` builds the ASGI application (Starlette); ``durable
dashboard`` serves it with uvicorn on localhost. Every asset (templates, CSS,
the polling script) ships in this package; the charts are inline SVG.
"""

from __future__ import annotations

from .app import DashboardSettings, create_app

__all__ = ["DashboardSettings", "create_app"]
