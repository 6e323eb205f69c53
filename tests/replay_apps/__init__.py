"""Two versions of one app for the replay check (tests/integration/test_replay_cli.py).

Each is loaded alone (``--app tests/replay_apps/v1.py``): both register ``replay_order``.
"""
