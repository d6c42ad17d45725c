"""The aiohttp application: hooks, idempotency, health and metrics."""

from .app import create_app

__all__ = ["create_app"]
