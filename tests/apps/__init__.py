"""Workflows used by the test suite (``--app tests/apps/__init__.py`` loads them all)."""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
