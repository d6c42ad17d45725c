"""decide(): the seed's acceptance cases and each adjustment of the retry delay."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import msgspec
import pytest

from sidecar.policy import EMPTY, FailureEvent, Snapshot, decide, keys_for, parse_policy
from sidecar.policy.breaker import CLOSED, on_failure
from sidecar.policy.decide import on_success
from sidecar.policy.events import SuccessEvent
from sidecar.policy.window import Window

from .conftest import DEFAULT_POLICIES

# 2026-11-28 12:00 UTC: inside business hours, outside the default off-peak window.
NOON = datetime(2026, 11, 28, 12, 0, tzinfo=UTC).timestamp()


def event(
    task="app.tasks.sync",
    exc_type="DeadlockDetected",
    module="psycopg.errors",
    mro=("psycopg.errors.DeadlockDetected", "psycopg.errors.OperationalError"),
    message="deadlock detected",
    attempt=0,
    **context,
) -> FailureEvent:
    return msgspec.convert(
        {
            "task_id": "t-1",
            "task_name": task,
            "attempt": attempt,
            "exception": {"type": exc_type, "module": module, "mro": list(mro), "message": message},
            "context": context,
        },
        FailureEvent,
    )


def run(policy, ev, state=EMPTY, now=NOON, seed=1):
    return decide(ev, policy, state, now, random.Random(seed))


class TestSeedExamples:
    """The examples of the seed document are acceptance cases."""

    def test_value_error_is_permanent_validation_with_no_retry(self, policy):
        ev = event(
            exc_type="ValueError",
            module="builtins",
            mro=("builtins.ValueError",),
            message="Invalid data",
        )
        decision = run(policy, ev).decision
        assert decision.classification.failure_type == "PERMANENT_VALIDATION"
        assert policy.retry_policy("app.tasks.sync", "PERMANENT_VALIDATION").max_retries == 0
        assert decision.action == "dead_letter"
        assert decision.delay_seconds == 0

    def test_payment_for_an_enterprise_customer_is_high(self, routing_policy):
        ev = event(task="process_payment", customer_tier="enterprise")
        decision = run(routing_policy, ev).decision
        assert (decision.priority, decision.priority_value, decision.queue) == (
            "HIGH",
            8,
            "high_priority",
        )

    def test_sla_breach_escalates_to_critical_listing_each_factor(self, routing_policy):
        ev = event(task="process_payment", customer_tier="enterprise", age_seconds=7200, attempt=3)
        outcome = run(routing_policy, ev)
        decision = outcome.decision
        assert (decision.priority, decision.queue) == ("CRITICAL", "critical")
        assert "priority base HIGH (8), SLA breach enterprise 2.0h > 15m (+1), → CRITICAL" in (
            decision.rationale
        )
        assert outcome.effects.sla_breach_tier == "enterprise"


class TestRetryQueue:
    """A retry stays on the task's own queue unless the policy routes retries by priority."""

    @pytest.mark.parametrize(
        ("queue", "expected"),
        [
            ("payments", "payments"),  # the queue the worker said the task ran on
            (None, None),  # not said: the worker keeps the task's own queue
        ],
    )
    def test_the_default_keeps_the_tasks_queue(self, policy, queue, expected):
        ev = msgspec.structs.replace(event(task="process_payment"), queue=queue)
        decision = run(policy, ev).decision
        assert (decision.priority, decision.queue) == ("HIGH", expected)

    def test_route_retries_sends_it_to_the_levels_queue(self, routing_policy):
        ev = msgspec.structs.replace(event(task="process_payment"), queue="payments")
        assert run(routing_policy, ev).decision.queue == "high_priority"


class TestRetry:
    """A transient failure is retried with the policy's backoff until retries run out."""

    def test_design_example(self, policy):
        outcome = run(policy, event(task="billing.process_payment", attempt=2))
        d = outcome.decision
        assert d.action == "retry"
        assert 0 <= d.delay_seconds <= 120  # exponential 30s x2^2, full jitter
        assert d.classification.rule == "db-deadlock"
        assert d.breaker.key == "billing.process_payment:TRANSIENT_DATABASE"
        assert d.breaker.state == "closed"
        assert d.rationale.startswith(
            "TRANSIENT_DATABASE by rule db-deadlock (0.95) | retry 3/5 | "
            "exponential 30s x2^2 = 2m | full jitter"
        )

    @pytest.mark.parametrize(
        ("attempt", "action"), [(0, "retry"), (4, "retry"), (5, "dead_letter"), (50, "dead_letter")]
    )
    def test_max_retries(self, policy, attempt, action):
        assert run(policy, event(attempt=attempt)).decision.action == action

    def test_a_failure_the_worker_gave_up_on_is_not_retried(self, policy):
        """The client's fallback dead-lettered it while the sidecar was away (attempt 3:
        its default limit), then sent the report: retries remain by the policy, but no
        retry can follow, so the sidecar keeps it rather than answering `retry` to nobody."""
        ev = msgspec.structs.replace(event(attempt=3), worker_gave_up=True)
        d = run(policy, ev).decision
        assert (d.action, d.delay_seconds) == ("dead_letter", 0.0)
        assert "the worker gave up" in d.rationale
        assert run(policy, event(attempt=3)).decision.action == "retry"

    def test_same_seed_same_delay(self, policy):
        assert run(policy, event(), seed=3).decision == run(policy, event(), seed=3).decision

    def test_exhausted_can_discard(self):
        text = DEFAULT_POLICIES.read_text().replace(
            "  overrides: []\n",
            '  overrides:\n    - {task: "cache.*", failure_type: "*", when_exhausted: discard}\n',
        )
        policy = parse_policy(text)
        ev = event(
            task="cache.warm", exc_type="ValueError", mro=("builtins.ValueError",), message=""
        )
        assert run(policy, ev).decision.action == "discard"

    def test_retry_after_is_honoured(self, policy):
        decision = run(policy, event(retry_after_seconds=900)).decision
        assert decision.delay_seconds == 900
        assert "Retry-After 15m" in decision.rationale

    def test_retry_after_is_capped(self, policy):
        decision = run(policy, event(retry_after_seconds=10**9)).decision
        assert decision.delay_seconds == policy.retry_after_cap

    def test_load_lengthens_delays(self, policy):
        calm = run(policy, event(queue_depth=100)).decision
        busy_outcome = run(policy, event(queue_depth=101))
        assert busy_outcome.decision.delay_seconds == pytest.approx(
            calm.delay_seconds * 1.3, abs=0.002
        )
        assert busy_outcome.effects.deferrals == ("load",)


class TestAdaptive:
    """Past retry outcomes of (task, failure type) shorten or stretch delays."""

    def outcomes(self, successes, failures):
        window = Window()
        for i in range(successes + failures):
            window = window.add(NOON - 60 + i, 3600, success=i < successes)
        return Snapshot(outcomes=window)

    def test_high_success_rate_is_faster(self, policy):
        base = run(policy, event()).decision.delay_seconds
        outcome = run(policy, event(), self.outcomes(9, 1))
        assert outcome.decision.delay_seconds == pytest.approx(base * 0.7, abs=0.002)
        assert outcome.effects.adaptive == "faster"

    def test_low_success_rate_is_slower_with_one_retry_fewer(self, policy):
        base = run(policy, event()).decision.delay_seconds
        outcome = run(policy, event(), self.outcomes(2, 8))
        assert outcome.decision.delay_seconds == pytest.approx(base * 1.5, abs=0.002)
        assert outcome.effects.adaptive == "slower"
        assert run(policy, event(attempt=4), self.outcomes(2, 8)).decision.action == "dead_letter"

    def test_the_rationale_says_what_cut_the_retry_limit(self, policy):
        decision = run(policy, event(attempt=4), self.outcomes(2, 8)).decision
        assert "no retry: 4 of 4 retries made" in decision.rationale
        assert "limit 5 → 4 by adaptive learning (retries succeed 20% of 10" in decision.rationale

    def test_too_few_samples_change_nothing(self, policy):
        base = run(policy, event()).decision
        assert run(policy, event(), self.outcomes(1, 8)).decision == base

    def test_a_failed_retry_is_recorded(self, policy):
        assert run(policy, event(attempt=0)).effects.outcome is None
        change = run(policy, event(attempt=1)).effects.outcome
        assert (change.key, change.success) == ("app.tasks.sync:TRANSIENT_DATABASE", False)


class TestBreaker:
    """The failure that trips a breaker says so; while it is open retries wait for it."""

    def test_tenth_failure_opens_the_breaker(self, policy):
        ev = event()
        keys = keys_for(ev, policy)
        settings = policy.retry_policy(ev.task_name, "TRANSIENT_DATABASE").breaker
        state = CLOSED
        for i in range(9):
            state, _ = on_failure(state, settings, NOON - 9 + i)
        outcome = run(policy, ev, Snapshot(breaker=state))
        assert outcome.effects.breaker_moved == "open"
        assert outcome.decision.breaker.state == "open"
        assert outcome.decision.delay_seconds == 300  # waits for the half-open probe
        assert "breaker" in outcome.effects.deferrals
        assert keys.route.breaker_key == outcome.decision.breaker.key

    def test_success_closes_a_half_open_breaker(self, policy):
        settings = policy.retry_policy("app.tasks.sync", "TRANSIENT_DATABASE").breaker
        state = CLOSED
        for i in range(10):
            state, _ = on_failure(state, settings, NOON + i)
        success = SuccessEvent(task_id="t", task_name="app.tasks.sync")
        breakers = {"app.tasks.sync:TRANSIENT_DATABASE": state}
        [change], _ = on_success(success, policy, breakers, None, NOON + 400)
        assert change.apply(state) == (CLOSED, "closed")

    def test_a_successful_retry_is_recorded(self, policy):
        success = SuccessEvent(task_id="t", task_name="app.tasks.sync", attempt=2)
        _, change = on_success(success, policy, {}, "TRANSIENT_NETWORK", NOON)
        assert (change.key, change.success) == ("app.tasks.sync:TRANSIENT_NETWORK", True)
        _, change = on_success(success, policy, {}, None, NOON)
        assert change is None

    def test_permanent_failures_have_no_breaker(self, policy):
        ev = event(exc_type="ValueError", mro=("builtins.ValueError",), message="")
        assert run(policy, ev).decision.breaker is None


class TestOffPeak:
    """LOW and DEFERRED retries wait for the off-peak window (22:00–06:00 UTC)."""

    def test_low_priority_retry_waits_until_22h(self, policy):
        outcome = run(policy, event(task="nightly_cleanup"))
        assert outcome.decision.priority == "LOW"
        assert outcome.decision.delay_seconds == 10 * 3600
        assert outcome.effects.deferrals == ("off_peak",)

    def test_inside_the_window_no_deferral(self, policy):
        night = datetime(2026, 11, 28, 23, 0, tzinfo=UTC).timestamp()
        outcome = run(policy, event(task="nightly_cleanup"), now=night)
        assert outcome.effects.deferrals == ()
        assert outcome.decision.delay_seconds <= 30

    def test_high_priority_is_not_deferred(self, policy):
        assert run(policy, event(task="process_payment")).effects.deferrals == ()
