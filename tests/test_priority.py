"""Priority assignment: levels, SLA, aging, retries, urgency, safety."""

from __future__ import annotations

import pytest

from sidecar.policy.events import Context
from sidecar.policy.priority import assign, nearest_level

NOW = 1_800_000_000.0
H = 3600


def ctx(**kw) -> Context:
    return Context(**kw)


class TestAssign:
    """Each factor raises the score; the nearest level wins, ties upward."""

    @pytest.mark.parametrize(
        ("task", "context", "attempt", "failure_type", "level"),
        [
            # base levels by task glob
            ("process_payment", ctx(), 0, None, "HIGH"),
            ("reports.daily", ctx(), 0, None, "MEDIUM"),
            ("nightly_cleanup", ctx(), 0, None, "LOW"),
            ("archive_logs", ctx(), 0, None, "DEFERRED"),
            ("something_else", ctx(), 0, None, "MEDIUM"),
            # enterprise SLA is 15 min: HIGH 8 + 1 = 9, tie → CRITICAL
            (
                "process_payment",
                ctx(customer_tier="enterprise", age_seconds=16 * 60),
                0,
                None,
                "CRITICAL",
            ),
            (
                "process_payment",
                ctx(customer_tier="enterprise", age_seconds=14 * 60),
                0,
                None,
                "HIGH",
            ),
            # basic SLA is 8 h; the enqueue time gives the age
            ("reports.x", ctx(customer_tier="basic", enqueued_at=NOW - 9 * H), 0, None, "HIGH"),
            # an unknown tier has no SLA
            ("reports.x", ctx(customer_tier="gold", age_seconds=99 * H), 0, None, "HIGH"),
            # aging: +0.5 after 6h (6.5 → MEDIUM), +1 after 12h (7 → tie → HIGH), +2 after 24h
            ("reports.x", ctx(age_seconds=7 * H), 0, None, "MEDIUM"),
            ("reports.x", ctx(age_seconds=13 * H), 0, None, "HIGH"),
            ("nightly_cleanup", ctx(age_seconds=25 * H), 0, None, "MEDIUM"),
            # +1 after 5 retries
            ("reports.x", ctx(), 4, None, "MEDIUM"),
            ("reports.x", ctx(), 5, None, "HIGH"),
            # failure urgency: SYSTEM_* +2
            ("reports.x", ctx(), 0, "SYSTEM_OUT_OF_MEMORY", "HIGH"),
            ("reports.x", ctx(), 0, "PERMANENT_PERMISSION", "HIGH"),
            # safety-critical trumps everything
            ("archive_logs", ctx(safety_critical=True), 0, None, "CRITICAL"),
        ],
    )
    def test_level(self, policy, task, context, attempt, failure_type, level):
        ft = policy.failure_types.get(failure_type) if failure_type else None
        base = policy.priority.level(policy.base_level(task))
        assigned = assign(policy.priority, base, context, ft, attempt, NOW)
        assert assigned.level.name == level

    def test_factors_are_listed(self, policy):
        ft = policy.failure_types["SYSTEM_DISK_FULL"]
        context = ctx(customer_tier="premium", age_seconds=13 * H)
        assigned = assign(policy.priority, policy.priority.level("LOW"), context, ft, 6, NOW)
        assert assigned.factors == (
            "base LOW (4)",
            "SLA breach premium 13.0h > 30m (+1)",
            "aged 13.0h (+1)",
            "6 retries (+1)",
            "SYSTEM_DISK_FULL urgency (+2)",
            "→ CRITICAL",
        )
        assert assigned.score == 9
        assert assigned.sla_breach_tier == "premium"

    @pytest.mark.parametrize(
        ("score", "level"),
        [
            (0, "DEFERRED"),
            (3, "LOW"),
            (5, "MEDIUM"),
            (7, "HIGH"),
            (9, "CRITICAL"),
            (99, "CRITICAL"),
        ],
    )
    def test_nearest_level_ties_upward(self, policy, score, level):
        assert nearest_level(policy.priority, score).name == level
