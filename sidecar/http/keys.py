"""Typed application state, all keys in one place."""

from __future__ import annotations

from aiohttp import web

from ..metrics import Metrics
from ..operations import Operations
from ..pollers import Pollers
from ..schedule_health import Schedules
from ..service import Policies, Sidecar, Stores
from ..settings import Settings

SETTINGS = web.AppKey("settings", Settings)
METRICS = web.AppKey("metrics", Metrics)
POLICIES = web.AppKey("policies", Policies)
STORES = web.AppKey("stores", Stores)
SIDECAR = web.AppKey("sidecar", Sidecar)
OPERATIONS = web.AppKey("operations", Operations)
POLLERS = web.AppKey("pollers", Pollers)
SCHEDULES = web.AppKey("schedules", Schedules)
