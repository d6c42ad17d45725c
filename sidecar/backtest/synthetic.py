"""Synthetic worlds with known outages, and a recorder that runs a workload in them.

A `World` is ground truth: which tasks arrive when, which need a dependency that is down
for a known interval (a database refusing connections, a stand-in API answering 503), which
carry bad input. `record()` plays a fleet of workers in that world against a sidecar — the
real service on a virtual clock (`ServiceHooks`), or the pure replica (`ReplicaHooks`, fast,
for benchmarks) — and returns the exported history (the JSON Lines of issue 16 §1) as the
sidecar would have recorded it.

So a test can record a history under policy A, run the same world "for real" under policy
B, and check what `simulate` predicts for B from A's history alone. `PerAttemptModel` is
the naive model that ignores time (a success probability per attempt number), kept to show
that it misses what the outage model gets right. `World.outcome()` is usable from a real
worker too: a task calls it with the current time and raises the failure it returns.

    python -m sidecar.backtest.synthetic [--hours 8] [--policies FILE] > history.jsonl
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import random
import sys
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any, Protocol

import msgspec

from ..policy import Policy, keys_for
from ..policy.events import (
    Context,
    ExceptionInfo,
    FailureEvent,
    StartEvent,
    SuccessEvent,
)
from .draws import hashed_draw
from .history import History, TaskHistory
from .model import Observer
from .replica import Expiring, Replica

# --- ground truth ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Failure:
    """What a run raises (as the worker client reports it)."""

    type: str
    module: str
    classes: tuple[str, ...]  # the MRO (a dataclass field cannot be called `mro`)
    message: str
    http_status: int | None = None
    retry_after_seconds: float | None = None

    def info(self) -> ExceptionInfo:
        return ExceptionInfo(
            type=self.type,
            module=self.module,
            mro=self.classes,
            message=self.message,
            http_status=self.http_status,
        )


DATABASE_DOWN = Failure(
    "OperationalError",
    "psycopg",
    ("psycopg.OperationalError", "psycopg.DatabaseError", "psycopg.Error", "builtins.Exception"),
    'connection to server at "db" (10.0.0.5), port 5432 failed: Connection refused',
)
API_UNAVAILABLE = Failure(
    "HTTPError",
    "requests.exceptions",
    (
        "requests.exceptions.HTTPError",
        "requests.exceptions.RequestException",
        "builtins.OSError",
        "builtins.Exception",
    ),
    "503 Server Error: Service Unavailable for url: https://rates.example.com/v1/latest",
    http_status=503,
)
BAD_INPUT = Failure(
    "ValueError", "builtins", ("builtins.ValueError", "builtins.Exception"), "Invalid data"
)
NETWORK_BLIP = Failure(
    "ConnectionResetError",
    "builtins",
    (
        "builtins.ConnectionResetError",
        "builtins.ConnectionError",
        "builtins.OSError",
        "builtins.Exception",
    ),
    "[Errno 104] Connection reset by peer",
)


@dataclass(frozen=True)
class Outage:
    """Tasks matching `task` fail with `failure` while start <= t < end (seconds after the
    world's start); `rate` below 1 fails only that share of runs (a flapping dependency)."""

    task: str
    start: float
    end: float
    failure: Failure
    rate: float = 1.0


@dataclass(frozen=True)
class TaskKind:
    name: str
    every: float  # mean seconds between arrivals (Poisson)
    bad_input: float = 0.0  # share of tasks whose input fails validation on every run
    noise: float = 0.0  # share of runs failing with NETWORK_BLIP whatever the time
    tier: str | None = None


@dataclass(frozen=True)
class Arrival:
    task_id: str
    kind: TaskKind
    at: float
    bad: bool


@dataclass(frozen=True)
class World:
    start: float  # unix seconds of t = 0
    hours: float  # tasks arrive during this long; the world lasts until they are done
    kinds: tuple[TaskKind, ...]
    outages: tuple[Outage, ...]
    pickup: tuple[float, float] = (0.05, 3.0)  # seconds from due to a worker taking it
    runtime: tuple[float, float] = (0.1, 2.0)
    seed: int = 1

    def arrivals(self) -> list[Arrival]:
        rng = random.Random(self.seed)
        out = []
        for kind in self.kinds:
            t = 0.0
            while True:
                t += rng.expovariate(1.0 / kind.every)
                if t >= self.hours * 3600:
                    break
                task_id = f"{kind.name}-{len(out):07d}"
                out.append(Arrival(task_id, kind, self.start + t, rng.random() < kind.bad_input))
        out.sort(key=lambda a: a.at)
        return out

    def outcome(self, arrival: Arrival, at: float, draw: float) -> Failure | None:
        """What a run of `arrival` at `at` meets; `draw` in [0, 1) decides partial outages
        and noise (a fresh one per run)."""
        t = at - self.start
        for outage in self.outages:
            inside = outage.start <= t < outage.end and draw < outage.rate
            if inside and fnmatchcase(arrival.kind.name, outage.task):
                return outage.failure
        if arrival.bad:
            return BAD_INPUT
        if draw < arrival.kind.noise:
            return NETWORK_BLIP
        return None


def outage_world(*, hours: float = 8.0, every: float = 4.0, seed: int = 1) -> World:
    """The canonical scenario: from 09:00 UTC, billing's database refuses connections for
    one hour (10:00–11:00), the rates API answers 503 for 90 minutes (13:00–14:30), and a
    notification task only sees rare connection resets. 2 % of invoices carry bad input."""
    return World(
        start=1_767_258_000.0,  # 2026-01-01 09:00 UTC: outside the default off-peak window
        hours=hours,
        kinds=(
            TaskKind("billing.sync_invoice", every, bad_input=0.02, tier="enterprise"),
            TaskKind("reports.fetch_rates", every),
            TaskKind("notify.send_email", 2 * every, noise=0.01, tier="standard"),
        ),
        outages=(
            Outage("billing.*", 3600, 7200, DATABASE_DOWN),
            Outage("reports.*", 4 * 3600, 5.5 * 3600, API_UNAVAILABLE),
        ),
        seed=seed,
    )


def with_retry_policies(policies_yaml: str, changes: dict[str, dict[str, Any]]) -> str:
    """`policies_yaml` with the retry policies of some failure types replaced, e.g.
    {"TRANSIENT_DATABASE": {"max_retries": 5, "initial_delay": "5m", ...}}."""
    import yaml

    class _Dumper(yaml.SafeDumper):
        def ignore_aliases(self, data: Any) -> bool:
            return True  # the policy loader refuses aliases

    doc = yaml.safe_load(policies_yaml)
    doc["retry"]["policies"].update(changes)
    return yaml.dump(doc, Dumper=_Dumper, sort_keys=False)


# --- the sidecar a world's workers talk to --------------------------------------------------


class Hooks(Protocol):
    async def start(self, event: StartEvent, now: float) -> tuple[bool, float]: ...

    async def failure(self, event: FailureEvent, now: float) -> tuple[str, float]: ...

    async def success(self, event: SuccessEvent, now: float) -> None: ...

    def breaker_openings(self) -> int: ...


class ReplicaHooks:
    """The pure replica (replica.py) as the sidecar: no service, no stores."""

    def __init__(self, policy: Policy, seed: int = 0) -> None:
        self.policy = policy
        self.replica = Replica(policy)
        self.rng = random.Random(seed)

    async def start(self, event: StartEvent, now: float) -> tuple[bool, float]:
        return self.replica.start(event.task_name, now)

    async def failure(self, event: FailureEvent, now: float) -> tuple[str, float]:
        outcome = self.replica.decide(event, keys_for(event, self.policy), now, self.rng)
        self.replica.apply(event, outcome, now)
        return outcome.decision.action, outcome.decision.delay_seconds

    async def success(self, event: SuccessEvent, now: float) -> None:
        self.replica.success(event, now)

    def breaker_openings(self) -> int:
        return self.replica.openings


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class VirtualState:
    """A `StateStore` (sidecar/store/ports.py) in memory whose keys expire on a virtual
    clock: the memory store's own TTLs follow the real monotonic clock, which a recording
    of hours in a second would never reach."""

    name = "virtual"

    def __init__(self, clock: _Clock) -> None:
        self.clock = clock
        self._breakers, self._outcomes, self._failures = Expiring(), Expiring(), Expiring()
        self._answers: dict[str, tuple[float, bytes]] = {}
        self._runs: dict[str, tuple[float, object]] = {}

    async def snapshot(self, breaker_key: str | None, outcomes_key: str | None) -> tuple:
        now = self.clock()
        breaker = self._breakers.get(breaker_key, now) if breaker_key else None
        outcomes = self._outcomes.get(outcomes_key, now) if outcomes_key else None
        return breaker, outcomes

    async def breakers(self, keys) -> dict:
        now = self.clock()
        found = {key: self._breakers.get(key, now) for key in keys}
        return {key: state for key, state in found.items() if state is not None}

    async def update_breaker(self, key: str, update, ttl: float) -> tuple:
        now = self.clock()
        new, moved = update(self._breakers.get(key, now))
        self._breakers.put(key, new, ttl, now)
        return new, moved

    async def update_outcomes(self, key: str, update, ttl: float) -> None:
        now = self.clock()
        self._outcomes.put(key, update(self._outcomes.get(key, now)), ttl, now)

    async def remember_failure(self, task_id: str, failure_type: str, ttl: float) -> None:
        self._failures.put(task_id, failure_type, ttl, self.clock())

    async def last_failure(self, task_id: str) -> str | None:
        return self._failures.get(task_id, self.clock())  # type: ignore[return-value]

    async def remember_answer(self, report_id: str, answer: bytes, ttl: float) -> None:
        self._answers[report_id] = (self.clock() + ttl, answer)

    async def answer_for(self, report_id: str) -> bytes | None:
        found = self._answers.get(report_id)
        return found[1] if found and found[0] > self.clock() else None

    async def update_runs(self, task_id: str, update, ttl: float):
        found = self._runs.get(task_id)
        current = found[1] if found and found[0] > self.clock() else None
        new = update(current)
        if new is None:
            self._runs.pop(task_id, None)
        else:
            self._runs[task_id] = (self.clock() + ttl, new)
        return new

    async def all_breakers(self) -> dict:
        now = self.clock()
        items = list(self._breakers.items)
        return {k: s for k in items if (s := self._breakers.get(k, now)) is not None}

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None


class ServiceHooks:
    """The real service (`sidecar.service.hooks.Hooks`: its hooks, its stores' calls, its
    metrics) on a virtual clock, with an in-memory SQLite DLQ."""

    def __init__(self, sidecar: Any, registry: Any, sqlite: Any, clock: _Clock) -> None:
        self.sidecar, self.registry, self._sqlite, self.clock = sidecar, registry, sqlite, clock

    @classmethod
    async def open(cls, policy_path: str, seed: int = 0) -> ServiceHooks:
        from prometheus_client import CollectorRegistry

        from ..metrics import Metrics
        from ..service.breakers import Breakers
        from ..service.hooks import Hooks
        from ..service.policies import Policies
        from ..store.sqlstore import sqlite_store

        clock = _Clock()
        registry = CollectorRegistry()
        metrics = Metrics(registry)
        sqlite = sqlite_store(":memory:")
        await sqlite.open()
        state = VirtualState(clock)
        policies = Policies(policy_path, metrics)
        breakers = Breakers(policies, state, sqlite, metrics, clock)
        hooks = Hooks(
            policies, state, sqlite, breakers, metrics, clock=clock, rng=random.Random(seed)
        )
        return cls(hooks, registry, sqlite, clock)

    async def close(self) -> None:
        await self._sqlite.close()

    async def start(self, event: StartEvent, now: float) -> tuple[bool, float]:
        self.clock.now = now
        answer = await self.sidecar.start(event)
        return answer.allow, answer.delay_seconds

    async def failure(self, event: FailureEvent, now: float) -> tuple[str, float]:
        self.clock.now = now
        decision = await self.sidecar.failure(event)
        return decision.action, decision.delay_seconds

    async def success(self, event: SuccessEvent, now: float) -> None:
        self.clock.now = now
        await self.sidecar.success(event)

    def breaker_openings(self) -> int:
        total = 0.0
        for family in self.registry.collect():
            for sample in family.samples:
                if (
                    sample.name == "task_sidecar_breaker_transitions_total"
                    and sample.labels.get("to") == "open"
                ):
                    total += sample.value
        return int(total)


# --- the recorder -------------------------------------------------------------------------


@dataclass
class Recording:
    lines: list[bytes]  # the history, one JSON document per line, oldest first
    breaker_openings: int  # as the sidecar counted them (the history does not say)
    events: int = 0

    def text(self) -> bytes:
        return b"".join(line + b"\n" for line in self.lines)


@dataclass
class _Work:
    arrival: Arrival
    attempt: int = 0
    started: float = 0.0


_encode = msgspec.json.Encoder().encode
_PICKUP, _REPORT = 0, 1


def _line(at: float, kind: str, event: Any, decision: tuple[str, float] | None = None) -> bytes:
    doc: dict[str, Any] = {"at": at, "kind": kind, "event": event}
    if decision is not None:
        doc["decision"] = {"action": decision[0], "delay_seconds": decision[1]}
    return _encode(doc)


async def record(world: World, hooks: Hooks, *, start_hooks: bool = True) -> Recording:
    """Run every arrival of `world` to its end against `hooks`, as workers with the
    Celery integration do: ask `hooks/start` before each run (postponed while refused),
    report the run, retry after the delay decided."""
    rng = random.Random(world.seed + 1)  # the world's own chance: queue waits, run times
    heap: list[tuple[float, int, int, _Work]] = []
    counter = 0

    def push(at: float, code: int, work: _Work) -> None:
        nonlocal counter
        counter += 1
        heapq.heappush(heap, (at, counter, code, work))

    for arrival in world.arrivals():
        push(arrival.at + rng.uniform(*world.pickup), _PICKUP, _Work(arrival))
    lines: list[bytes] = []
    while heap:
        at, _, code, work = heapq.heappop(heap)
        arrival = work.arrival
        name = arrival.kind.name
        if code == _PICKUP:
            if start_hooks:
                start = StartEvent(arrival.task_id, name, attempt=work.attempt, queue="default")
                allow, wait = await hooks.start(start, at)
                lines.append(_line(at, "start", start))
                if not allow:
                    push(at + (wait or 1.0) + rng.uniform(*world.pickup), _PICKUP, work)
                    continue
            work.started = at
            push(at + rng.uniform(*world.runtime), _REPORT, work)
            continue
        failure = world.outcome(arrival, at, rng.random())
        if failure is None:
            success = SuccessEvent(
                arrival.task_id, name, attempt=work.attempt, runtime_seconds=at - work.started
            )
            await hooks.success(success, at)
            lines.append(_line(at, "success", success))
            continue
        event = FailureEvent(
            task_id=arrival.task_id,
            task_name=name,
            exception=failure.info(),
            queue="default",
            attempt=work.attempt,
            context=Context(
                customer_tier=arrival.kind.tier,
                enqueued_at=arrival.at,
                retry_after_seconds=failure.retry_after_seconds,
            ),
        )
        decision = await hooks.failure(event, at)
        lines.append(_line(at, "failure", event, decision))
        if decision[0] == "retry":
            work.attempt += 1
            push(at + decision[1] + rng.uniform(*world.pickup), _PICKUP, work)
    return Recording(lines, hooks.breaker_openings(), len(lines))


# --- the naive model, for comparison ------------------------------------------------------


class PerAttemptModel:
    """A run's fate by its attempt number alone: the share of attempt-k runs that succeeded
    in the history (per failure type of the task's first failure), drawn per run. This is
    the model issue 16 warns about: it does not know that failures cluster in time."""

    def __init__(self, history: History, observer: Observer, seed: int = 0) -> None:
        self.seed = seed
        counts: dict[tuple[str, int], list[int]] = {}
        self._first: dict[int, tuple[str, FailureEvent]] = {}
        for task in history.tasks:
            first = next((run.failure for run in task.runs if run.failure is not None), None)
            if first is None:
                continue
            failure_type = observer.classify(first)[0]
            self._first[task.index] = (failure_type, first)
            for k, run in enumerate(task.runs[1:], start=1):
                found = counts.setdefault((failure_type, k), [0, 0])
                found[0] += run.failure is None
                found[1] += 1
        self.rates = {key: ok / runs for key, (ok, runs) in counts.items()}
        self._deepest: dict[str, int] = {}
        for failure_type, k in self.rates:
            self._deepest[failure_type] = max(k, self._deepest.get(failure_type, 0))

    def rate(self, failure_type: str, run: int) -> float:
        deepest = self._deepest.get(failure_type)
        if deepest is None:
            return 1.0  # never retried in the history: nothing known against it
        return self.rates.get((failure_type, min(run, deepest)), 1.0)

    def outcome(self, task: TaskHistory, run: int, at: float) -> tuple[FailureEvent | None, bool]:
        first = self._first.get(task.index)
        if first is None or run == 0:
            return None, False
        if hashed_draw(self.seed, task.task_id, run) < self.rate(first[0], run):
            return None, False
        return first[1], False


# --- command line: an example history ---------------------------------------------------------


async def _main(args: argparse.Namespace) -> int:
    import logging

    from .. import settings

    logging.getLogger("task_sidecar").setLevel(logging.ERROR)  # breakers open: that's the point

    world = outage_world(hours=args.hours, every=args.every, seed=args.seed)
    path = args.policies or settings.default_policies()
    if args.replica:
        from ..policy import load_policy

        recording = await record(world, ReplicaHooks(load_policy(path), seed=args.seed))
    else:
        hooks = await ServiceHooks.open(path, seed=args.seed)
        try:
            recording = await record(world, hooks)
        finally:
            await hooks.close()
    sys.stdout.buffer.write(recording.text())
    print(
        f"{recording.events} events, {recording.breaker_openings} breaker openings (policy {path})",
        file=sys.stderr,
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sidecar.backtest.synthetic",
        description="Write the history of the canonical outage world (see outage_world) "
        "as the sidecar would export it.",
    )
    parser.add_argument("--hours", type=float, default=8.0, help="hours of arrivals")
    parser.add_argument("--every", type=float, default=4.0, help="mean seconds between tasks")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--policies", default=None, help="the policy in force (policies.yaml)")
    parser.add_argument(
        "--replica", action="store_true", help="decide with the pure replica (fast)"
    )
    return asyncio.run(_main(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
