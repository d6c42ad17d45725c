"""Policy backtest (issue 16): reading histories, the outage model, the figures, and the
replay — which must reproduce, decision for decision, a history the real service recorded."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from sidecar.backtest import (
    HistoryError,
    Observer,
    OutageModel,
    parse,
    report,
    simulate,
    summarize,
    table,
)
from sidecar.backtest import synthetic as syn
from sidecar.backtest.metrics import TaskResult, percentile
from sidecar.backtest.replica import breaker_ttl
from sidecar.policy import Policy, parse_policy

ROOT = Path(__file__).resolve().parent.parent
POLICIES = (ROOT / "policies.yaml").read_text()
T0 = 1_767_258_000.0

DB_DOWN = syn.DATABASE_DOWN.info()
BAD = syn.BAD_INPUT.info()


# --- building histories by hand ---------------------------------------------------------------


def failure(at, task_id, attempt=0, action="retry", delay=60.0, exc=DB_DOWN, task="billing.x"):
    event = {
        "task_id": task_id,
        "task_name": task,
        "attempt": attempt,
        "exception": json.loads(json.dumps(_builtins(exc))),
    }
    decision = {"action": action, "delay_seconds": delay}
    return {"at": T0 + at, "kind": "failure", "event": event, "decision": decision}


def success(at, task_id, attempt=0, task="billing.x", **extra):
    event = {"task_id": task_id, "task_name": task, "attempt": attempt, **extra}
    return {"at": T0 + at, "kind": "success", "event": event}


def start(at, task_id, attempt=0, task="billing.x"):
    event = {"task_id": task_id, "task_name": task, "attempt": attempt}
    return {"at": T0 + at, "kind": "start", "event": event}


def _builtins(exc):
    import msgspec

    return msgspec.to_builtins(exc)


def lines(*docs) -> list[tuple[int, bytes]]:
    return [
        (n, json.dumps(d).encode() if not isinstance(d, bytes) else d)
        for n, d in enumerate(docs, 1)
    ]


def history(*docs):
    return parse(lines(*docs))


@pytest.fixture(scope="module")
def default_policy() -> Policy:
    return parse_policy(POLICIES, "policies.yaml")


# --- reading ----------------------------------------------------------------------------------


class TestHistory:
    """Lines become task chains; every unusable line is an error naming it."""

    def test_runs_group_starts_reports_and_decisions(self):
        h = history(
            start(0, "t1"),
            failure(1, "t1", delay=30),
            start(35, "t1", attempt=1),
            success(36, "t1", attempt=1),
            success(50, "t2"),
        )
        t1, t2 = h.tasks
        assert [len(r.starts) for r in t1.runs] == [1, 1]
        assert t1.runs[0].decision.delay_seconds == 30
        assert t1.runs[1].success is not None
        assert t1.uses_start
        assert t1.pickup == [0.0, pytest.approx(4.0)]  # 35 - (1 + 30)
        assert t1.work == [pytest.approx(1.0), pytest.approx(1.0)]
        assert not t2.uses_start
        assert t2.work == [0.0]
        assert (h.lines, h.starts, h.ignored) == (5, 2, 0)
        assert h.first_at == T0
        assert h.last_at == T0 + 50

    def test_chain_ends_at_its_first_end_and_later_events_are_counted_ignored(self):
        h = history(
            failure(0, "t1", action="dead_letter", delay=0),
            success(10, "t1"),  # a stray success after the dead letter
            start(20, "t3"),  # a run that never reported
        )
        assert len(h.tasks) == 1
        assert len(h.tasks[0].runs) == 1
        assert h.ignored == 2

    def test_a_start_that_arrives_after_its_report_belongs_to_that_run(self):
        """Workers batch the start hooks they need no answer to; the batch can reach the
        sidecar after the run's own failure report (a real Celery worker does this,
        tests/test_backtest_e2e.py). The start carries the run's attempt."""
        h = history(
            failure(1, "t1", delay=30),
            start(1.05, "t1"),  # attempt 0: the run that already failed
            success(32, "t1", attempt=1),
            start(32.05, "t1", attempt=1),  # after the chain's end: still its run's
        )
        (task,) = h.tasks
        assert [len(run.starts) for run in task.runs] == [1, 1]
        for run in task.runs:  # placed just before the report, which the replay meets last
            assert run.at - 1e-6 < run.starts[0][0] < run.at
        assert task.uses_start
        assert task.pickup == [0.0, pytest.approx(1.0)]  # 32 - (1 + 30)
        assert task.work == [pytest.approx(0.0, abs=1e-6)] * 2
        assert h.ignored == 0

    def test_a_redelivery_of_the_same_attempt_is_a_new_run(self):
        lost = failure(1, "t1", delay=5)
        lost["event"]["exception"] = {"type": "WorkerLostError", "module": "billiard.exceptions"}
        redelivery = start(7, "t1")
        redelivery["event"]["redelivered"] = True
        h = history(lost, redelivery, success(8, "t1"))
        (task,) = h.tasks
        assert [len(run.starts) for run in task.runs] == [0, 1]

    def test_late_starts_replay_on_script(self, default_policy):
        docs = []
        for n in range(5):  # fewer failures than open the database breaker
            t = 10.0 * n
            docs += [
                failure(t, f"t{n}", delay=30, task="billing.y"),
                start(t + 0.05, f"t{n}", task="billing.y"),  # batched, late
                start(t + 30.5, f"t{n}", attempt=1, task="billing.y"),  # asked, on time
                success(t + 31, f"t{n}", attempt=1, task="billing.y"),
            ]
        h = history(*sorted(docs, key=lambda d: d["at"]))
        doc = report(simulate(h, default_policy, default_policy))
        assert doc["baseline"]["succeeded"] == doc["recorded"]["succeeded"] == 5
        assert doc["uncertainty"]["attempts_inferred"]["baseline"] == 0

    def test_cut_history_in_flight_and_started_before(self):
        h = history(failure(0, "t1", attempt=2, delay=600))
        (task,) = h.tasks
        assert task.first_attempt == 2
        assert task.in_flight

    def test_dlq_reruns_are_outside_the_chains(self):
        h = history(failure(0, "t1", action="dead_letter", delay=0), success(99, "t1", dlq_id="d1"))
        assert len(h.tasks[0].runs) == 1
        assert [e.kind for e in h.exogenous] == ["success"]

    def test_what_the_replay_never_reads_is_dropped_and_equal_exceptions_shared(self):
        with_traceback = failure(0, "t1")
        with_traceback["event"]["exception"]["traceback"] = "Traceback ..." * 100
        with_traceback["event"]["args"] = [1, 2, 3]
        h = history(with_traceback, failure(5, "t2"))
        one, two = (t.runs[0].failure for t in h.tasks)
        assert one.exception.traceback is None
        assert one.args == ()
        assert one.exception is two.exception

    def test_blank_lines_are_skipped_but_counted_for_line_numbers(self):
        h = parse([(1, b"\n"), (2, json.dumps(success(0, "t")).encode()), (3, b"  ")])
        assert h.lines == 1

    @pytest.mark.parametrize(
        ("line", "message"),
        [
            # not JSON at all
            (b"{nope", "line 2: invalid JSON: "),
            # the envelope: each field checked and named
            (b'{"kind": "success", "event": {}}', "line 2: at: required field is missing"),
            (
                b'{"at": -1, "kind": "success", "event": {"task_id": "a", "task_name": "b"}}',
                "line 2: at: Expected `float` >= 0.0",
            ),
            (
                b'{"at": 1, "kind": "retry", "event": {}}',
                'line 2: kind: expected one of "failure", "success", "start", got \'retry\'',
            ),
            # the event: the hook body's own validation, path under `event`
            (
                b'{"at": 1, "kind": "failure", "event": {"task_id": "a", "task_name": "b"},'
                b' "decision": {"action": "retry", "delay_seconds": 1}}',
                "line 2: event.exception: required field is missing",
            ),
            (
                b'{"at": 1, "kind": "failure", "event": {"task_id": "a", "task_name": "b",'
                b' "exception": {"module": "m"}}, "decision": {"action": "retry",'
                b' "delay_seconds": 1}}',
                "line 2: event.exception.type: required field is missing",
            ),
            (
                b'{"at": 1, "kind": "success", "event": {"task_id": "a", "task_name": "b",'
                b' "attempt": "two"}}',
                "line 2: event.attempt: Expected `int`, got `str`",
            ),
            # the decision: required on failures, its action one of three
            (
                b'{"at": 1, "kind": "failure", "event": {"task_id": "a", "task_name": "b",'
                b' "exception": {"type": "E"}}}',
                "line 2: decision: required on failure lines",
            ),
            (
                b'{"at": 1, "kind": "failure", "event": {"task_id": "a", "task_name": "b",'
                b' "exception": {"type": "E"}}, "decision": {"action": "later",'
                b' "delay_seconds": 1}}',
                "line 2: decision.action: Invalid enum value 'later'",
            ),
        ],
    )
    def test_an_unusable_line_is_named(self, line, message):
        good = json.dumps(success(0, "t")).encode()
        with pytest.raises(HistoryError) as raised:
            parse([(1, good), (2, line), (3, good)])
        assert str(raised.value).startswith(message), str(raised.value)
        assert raised.value.line == 2


def outage_docs() -> list[dict]:
    """billing.x's database: up until 90, down from 100 to 200 (every run failing), up
    from 210; and one task with bad input."""
    docs = [success(t, f"ok{t}") for t in range(0, 100, 10)]
    docs += [failure(t, f"f{t}", delay=600) for t in range(100, 201, 10)]
    docs += [success(t, f"ok{t}") for t in range(210, 300, 10)]
    docs += [failure(50, "bad", action="dead_letter", delay=0, exc=BAD)]
    return docs


# --- the outage model -------------------------------------------------------------------------


class TestOutageModel:
    """A run at t fails iff its dependency was down at t: the nearest observation holds."""

    @pytest.fixture
    def outage(self, default_policy):
        h = history(*outage_docs())
        return h, OutageModel(h, Observer(default_policy))

    def task(self, h, task_id):
        return next(t for t in h.tasks if t.task_id == task_id)

    @pytest.mark.parametrize(
        ("at", "fails", "outside"),
        [
            (50, False, False),  # up: successes all around
            (150, True, False),  # inside the outage
            (204, True, False),  # nearer the last failure (200) than the first success (210)
            (206, False, False),  # nearer the first success: the state changed half-way
            (96, True, False),  # nearer the first failure (100) than the last success (90)
            (-100, False, True),  # before the first observation: the first state holds
            (5000, False, True),  # after the last: the last state holds, and says so
        ],
    )
    def test_runs_meet_the_dependency_as_it_was(self, outage, at, fails, outside):
        h, model = outage
        got, out = model.outcome(self.task(h, "f150"), 1, T0 + at)
        assert (got is not None, out) == (fails, outside)
        if fails:
            assert got.exception.type == "OperationalError"

    def test_permanent_failures_fail_whenever_they_run(self, outage):
        h, model = outage
        for at in (0, 5000):
            got, _ = model.outcome(self.task(h, "bad"), 1, T0 + at)
            assert got is not None
            assert got.exception.type == "ValueError"
        # While the database is down, a run fails on it before it reaches the bad input.
        got, _ = model.outcome(self.task(h, "bad"), 1, T0 + 150)
        assert got.exception.type == "OperationalError"

    def test_a_task_that_only_succeeded_meets_the_outage_too(self, outage):
        h, model = outage
        got, _ = model.outcome(self.task(h, "ok50"), 0, T0 + 150)
        assert got is not None
        assert got.task_id.startswith("f")

    def test_other_task_names_have_their_own_dependency(self, default_policy):
        h = history(*outage_docs(), success(20, "r", task="reports.y"))
        model = OutageModel(h, Observer(default_policy))
        got, outside = model.outcome(self.task(h, "r"), 1, T0 + 150)
        assert got is None  # billing's outage is not reports.y's
        assert outside  # reports.y was only seen at 20: its last state holds, and it says so

    def test_tasks_sharing_a_dependency_share_its_outage(self):
        shared = POLICIES.replace(
            "  dependencies: []", '  dependencies:\n    - {task: "billing.*", name: db}'
        )
        policy = parse_policy(shared)
        h = history(
            failure(100, "a", task="billing.a", delay=600),
            success(150, "b", task="billing.b"),  # b's own run, recorded
            success(10, "b0", task="billing.b"),
        )
        model = OutageModel(h, Observer(policy))
        b = next(t for t in h.tasks if t.task_id == "b0")
        got, _ = model.outcome(b, 1, T0 + 100)
        assert got is not None  # billing.a's failure says the shared db was down

    def test_hidden_bad_input_as_often_as_the_kind_shows_it(self, default_policy):
        # Half the tasks that showed what they are made of had bad input: about half the
        # tasks seen only in the outage carry it too, whatever the time.
        docs = [success(t, f"ok{t}") for t in range(0, 100, 2)]
        docs += [
            failure(t + 1, f"bad{t}", action="dead_letter", delay=0, exc=BAD)
            for t in range(0, 100, 2)
        ]
        docs += [failure(200 + t, f"o{t}", action="dead_letter", delay=0) for t in range(400)]
        docs += [success(1000, "late")]
        h = history(*docs)
        model = OutageModel(h, Observer(default_policy))
        hidden = sum(
            model.outcome(t, 1, T0 + 2000)[0] is not None for t in h.tasks if t.task_id[0] == "o"
        )
        assert 150 < hidden < 250


# --- the figures ------------------------------------------------------------------------------


class TestMetrics:
    """M is counted per task and summed; percentiles are nearest-rank."""

    @pytest.mark.parametrize(
        ("values", "share", "expected"),
        [
            ([], 0.5, None),
            ([7.0], 0.95, 7.0),
            ([1.0, 2.0, 3.0, 4.0], 0.5, 2.0),  # the 2nd of 4: half at or below it
            ([4.0, 1.0, 3.0, 2.0], 0.95, 4.0),  # order does not matter
            ([float(i) for i in range(1, 101)], 0.95, 95.0),
        ],
    )
    def test_percentile(self, values, share, expected):
        assert percentile(values, share) == expected

    def test_summarize(self):
        results = [
            TaskResult("a", "x", "T", 0.0, "succeeded", 100.0, 2, [60.0, 150.0], 1),
            TaskResult("b", "x", "T", 10.0, "dead_lettered", 50.0, 1, [70.0], 0),
            TaskResult("c", "x", "P", 20.0, "discarded", 20.0, 0, [], 0),
            TaskResult("d", "x", "T", 30.0, None, None, 1, [], 0),  # unfinished
            TaskResult("e", "x"),  # never failed: not a task of M
        ]
        assert summarize(results) == {
            "tasks": 4,
            "succeeded": 1,
            "dead_lettered": 1,
            "discarded": 1,
            "retries": 4,
            "time_to_success_p50_seconds": 100.0,
            "time_to_success_p95_seconds": 100.0,
            "breaker_openings": 1,
            "peak_retries_per_minute": 2,  # 60 and 70 in minute 1
        }

    def test_unknown_openings_stay_unknown(self):
        results = [TaskResult("a", "x", "T", 0.0, openings=None), TaskResult("b", "x", "T", 1.0)]
        assert summarize(results)["breaker_openings"] is None


class TestReplica:
    """The replica keeps state as the service does."""

    @pytest.mark.parametrize(("window", "open_for"), [(300.0, 600.0), (3600.0, 60.0)])
    def test_breaker_ttl_is_the_services(self, window, open_for):
        from sidecar.policy.model import BreakerSettings
        from sidecar.service.breakers import breaker_ttl as _breaker_ttl

        settings = BreakerSettings(failures=3, open_for=open_for, window=window)
        assert breaker_ttl(settings) == _breaker_ttl(settings)


# --- the replay against histories the real service recorded ---------------------------------

RATES_503 = syn.Failure(
    syn.API_UNAVAILABLE.type,
    syn.API_UNAVAILABLE.module,
    syn.API_UNAVAILABLE.classes,
    syn.API_UNAVAILABLE.message,
    http_status=503,
    retry_after_seconds=120.0,  # the stand-in API says when to come back
)
FAST_DATABASE = {
    "max_retries": 3,
    "initial_delay": "30s",
    "backoff": "exponential",
    "multiplier": 2.0,
    "max_delay": "5m",
    "jitter": "full",
}


def busy_world(seed: int = 3) -> syn.World:
    """Everything that shapes a decision live: a database outage (breakers, adaptive
    learning), a 503 with Retry-After, noise, a LOW task deferred to the off-peak window
    (the world runs from 16:00 to 23:00 UTC), start hooks refused while a breaker is open."""
    return syn.World(
        start=T0 + 7 * 3600,
        hours=7.0,
        kinds=(
            syn.TaskKind("billing.sync_invoice", 12.0, bad_input=0.02, tier="enterprise"),
            syn.TaskKind("reports.fetch_rates", 15.0),
            syn.TaskKind("notify.send_email", 20.0, noise=0.05, tier="basic"),
            syn.TaskKind("maintenance.cleanup_tmp", 60.0, noise=0.2),
        ),
        outages=(
            syn.Outage("billing.*", 3600, 5400, syn.DATABASE_DOWN),
            syn.Outage("reports.*", 2 * 3600, 3 * 3600, RATES_503, rate=0.7),
        ),
        seed=seed,
    )


def record(tmp_path: Path, policy_text: str, world: syn.World, start_hooks: bool = True):
    path = tmp_path / "policies.yaml"
    path.write_text(policy_text)

    async def run() -> syn.Recording:
        hooks = await syn.ServiceHooks.open(str(path), seed=world.seed)
        try:
            return await syn.record(world, hooks, start_hooks=start_hooks)
        finally:
            await hooks.close()

    recording = asyncio.run(run())
    return recording, parse(enumerate(recording.text().splitlines(), 1)), parse_policy(policy_text)


FIGURES = ["tasks", "succeeded", "dead_lettered", "discarded", "retries",
           "time_to_success_p50_seconds", "time_to_success_p95_seconds",
           "peak_retries_per_minute"]  # fmt: skip


class TestReplayReproducesTheService:
    """Replaying a history under the policy it was recorded under gives back what happened,
    decision for decision, breaker openings included (the history does not hold those:
    the service's own counter does)."""

    @pytest.mark.parametrize(
        ("policy_text", "start_hooks"),
        [
            pytest.param(POLICIES, True, id="default-policy"),
            pytest.param(
                syn.with_retry_policies(POLICIES, {"TRANSIENT_DATABASE": FAST_DATABASE}),
                True,
                id="fast-retries-adaptive",
            ),
            pytest.param(POLICIES, False, id="workers-without-start-hooks"),
        ],
    )
    def test_baseline_is_the_recorded_outcome(self, tmp_path, policy_text, start_hooks):
        recording, h, policy = record(tmp_path, policy_text, busy_world(), start_hooks)
        doc = report(simulate(h, policy, policy))
        recorded, baseline = doc["recorded"], doc["baseline"]
        assert recorded["tasks"] > 100
        assert recorded["retries"] > 100
        assert {m: baseline[m] for m in FIGURES} == {m: recorded[m] for m in FIGURES}
        assert baseline["breaker_openings"] == recording.breaker_openings > 0
        u = doc["uncertainty"]
        assert u["baseline_decisions_reproduced"] == u["recorded_decisions"]
        assert u["attempts_inferred"]["baseline"] == 0
        for rows in doc["by_failure_type"].values():
            assert {m: rows["baseline"][m] for m in FIGURES} == {
                m: rows["recorded"][m] for m in FIGURES
            }
        # The same policy as candidate: the same figures (the same draws are made).
        assert doc["candidate"] == baseline

    def test_refused_starts_and_off_peak_were_exercised(self, tmp_path):
        _recording, h, _policy = record(tmp_path, POLICIES, busy_world())
        # Several start hooks for one run: some were refused (an open breaker).
        assert any(len(run.starts) > 1 for task in h.tasks for run in task.runs)
        # A LOW retry waited for 22:00 UTC (the world's 22:00 is 6 h after its start).
        deferred = [
            run
            for task in h.tasks
            if task.task_name.startswith("maintenance")
            for run in task.runs
            if run.decision is not None and run.decision.delay_seconds > 600
        ]
        assert deferred


@pytest.fixture(scope="module")
def recorded_default(tmp_path_factory):
    return record(tmp_path_factory.mktemp("history"), POLICIES, busy_world())


class TestReport:
    """The document narrows by task and failure type, and reads as a table."""

    def test_filters(self, recorded_default):
        _, h, policy = recorded_default
        sim = simulate(h, policy, policy)
        everything = report(sim)
        billing = report(sim, task="billing.*")
        assert 0 < billing["recorded"]["tasks"] < everything["recorded"]["tasks"]
        only = report(sim, failure_type="TRANSIENT_DATABASE")
        assert list(only["by_failure_type"]) == ["TRANSIENT_DATABASE"]
        assert only["baseline"] == everything["by_failure_type"]["TRANSIENT_DATABASE"]["baseline"]
        nothing = report(sim, task="no.such.task")
        assert nothing["baseline"]["tasks"] == 0
        assert nothing["by_failure_type"] == {}

    def test_table_shows_columns_and_changes(self, recorded_default):
        _, h, policy = recorded_default
        slower = syn.with_retry_policies(
            POLICIES, {"TRANSIENT_DATABASE": {**FAST_DATABASE, "max_retries": 1}}
        )
        doc = report(simulate(h, policy, parse_policy(slower)), task="billing.*")
        text = table(doc)
        header = text.splitlines()[0].split()
        assert header == ["recorded", "baseline", "candidate", "change"]
        dead = next(line for line in text.splitlines() if line.startswith("dead_lettered"))
        b, c = doc["baseline"]["dead_lettered"], doc["candidate"]["dead_lettered"]
        assert c > b
        assert f"+{c - b} (" in dead
        assert "breaker_openings" in text
        assert "\nTRANSIENT_DATABASE\n" in text
        assert "recorded decisions reproduced by the baseline" in text


class TestBeyondTheHistory:
    """What the history does not say is extrapolated, and counted."""

    def test_runs_after_the_last_observation_are_counted(self, default_policy):
        h = history(
            success(0, "s0"),
            failure(10, "t", delay=60, exc=DB_DOWN),  # in flight when the history ends
            success(20, "s1"),
        )
        later = syn.with_retry_policies(
            POLICIES,
            {
                "TRANSIENT_DATABASE": {
                    **FAST_DATABASE,
                    "initial_delay": "1h",
                    "max_delay": "2h",
                    "jitter": "none",
                }
            },
        )
        doc = report(simulate(h, default_policy, parse_policy(later)))
        u = doc["uncertainty"]
        assert u["recorded_tasks_in_flight"] == 1
        assert u["attempts_outside_observed_span"] == {"baseline": 1, "candidate": 1}
        assert doc["candidate"]["succeeded"] == 1  # up at 20, and so it stays
        assert doc["candidate"]["time_to_success_p50_seconds"] == pytest.approx(3600, abs=1)

    def test_dlq_reruns_change_the_state_but_are_not_tasks(self):
        strict = POLICIES.replace(
            "      breaker: {failures: 10, open_for: 5m}",
            "      breaker: {failures: 2, open_for: 5m}",
        )
        policy = parse_policy(strict)
        h = history(
            failure(0, "t1", delay=30),
            {**failure(5, "t0", action="dead_letter", delay=0), "event": {
                **failure(5, "t0")["event"], "dlq_id": "d-1"}},  # an operator's retry
            success(40, "t1", attempt=1),
        )  # fmt: skip
        sim = simulate(h, policy, policy)
        doc = report(sim)
        assert doc["baseline"]["tasks"] == 1
        assert sim.baseline.openings == 1  # the rerun's failure was the breaker's second
        assert doc["baseline"]["breaker_openings"] == 0  # ... and t1's failure did not open it
