"""The decision core: pure functions and frozen values, no I/O and no asyncio."""

from .decide import EMPTY, Keys, Outcome, Snapshot, decide, keys_for, on_success, task_breakers
from .events import Decision, FailureEvent, StartEvent, SuccessEvent
from .loader import PolicyError, load_policy, parse_policy
from .model import Policy

__all__ = [
    "EMPTY",
    "Decision",
    "FailureEvent",
    "Keys",
    "Outcome",
    "Policy",
    "PolicyError",
    "Snapshot",
    "StartEvent",
    "SuccessEvent",
    "decide",
    "keys_for",
    "load_policy",
    "on_success",
    "parse_policy",
    "task_breakers",
]
