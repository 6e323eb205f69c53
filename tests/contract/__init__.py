"""The store contract, run against every backend (``backend`` fixture in conftest.py)."""
