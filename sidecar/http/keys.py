"""Typed application state, all keys in one place."""

from __future__ import annotations

from aiohttp import web

from ..metrics import Metrics
from ..service.compose import Services
from ..settings import Settings

SETTINGS = web.AppKey("settings", Settings)
METRICS = web.AppKey("metrics", Metrics)
SERVICES = web.AppKey("services", Services)  # set at start-up, once the stores are open
