"""The sidecar's use cases, between the HTTP layer and the stores.

Each module loads what the pure core needs from the stores, calls the core, saves the
changes and reports figures to `sidecar.metrics`. `compose.py` is the one place where the
stores, requeue targets and these services are made from the settings.
"""
