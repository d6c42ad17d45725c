"""The backtest end to end (issue 16, "Done when"): record a real history under policy A,
predict policy B from it with the real commands, then run B for real and compare.

A real Celery worker (tests/backtest_app.py, thread pool) runs two tasks against real
dependencies: invoices query PostgreSQL, rates call a stand-in HTTP API. A script sends the
same workload each time and takes the dependencies down for known intervals: the database
refuses connections (psycopg's OperationalError) from 2 s to 6 s, the rates API answers 503
from 5 s to 9 s; every 10th invoice carries bad input. Each policy runs on its own sidecar
(`task-sidecar serve` on PostgreSQL + Redis, fresh state and database), with its own worker
and broker.

1. Policy A runs the script; `task-sidecar events export` writes its history.
2. `task-sidecar simulate --events A.jsonl --baseline A.yaml --policies B.yaml -o json`
   predicts B. Its baseline column must reproduce what A's history records, exactly.
3. Policy B runs the same script for real; the worker's own run log and the sidecar's DLQ
   say what B really did. The prediction must be within the bounds below, and the naive
   per-attempt model (a success probability per attempt number) must miss them.

Delays are seconds, so the whole module runs in about a minute of real time.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

pytest.importorskip("celery")

import psycopg
import redis
from celery import Celery

from sidecar.backtest import parse, report, simulate
from sidecar.backtest import synthetic as syn
from sidecar.backtest.metrics import percentile
from sidecar.policy import parse_policy
from tests.celery_worker import Worker
from tests.polling import wait_for
from tests.processes import SidecarProcess
from tests.services import free_port

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
HOOK_TOKEN = "hook-" + uuid.uuid4().hex
OPERATOR_TOKEN = "ops-" + uuid.uuid4().hex
QUEUES = "default,critical,high_priority,reports,maintenance"

# --- the script: the same workload and outages for every run, seconds after its start -------

SPACING = 0.125  # one invoice and one rates call every 1/8 s for 10 s
ARRIVALS = 80
# Arrivals sit between the outages' switch times (multiples of 1/8 s) so that a run lands
# clearly inside or outside an outage: the worker's latency (tens of ms) stays under 0.06 s.
PHASE = 0.06
DB_DOWN = (2.0, 6.0)
API_DOWN = (5.0, 9.0)
BAD_EVERY = 10  # every 10th invoice fails validation on every run


def bad_invoice(number: int) -> bool:
    return number % BAD_EVERY == BAD_EVERY - 1


def _policy(changes: dict[str, dict[str, Any]]) -> str:
    """policies.yaml with the retry policies of the two dependencies replaced. No jitter:
    B's live draws are not in A's history, so with ~80 tasks a kind jitter alone would move
    B by more than the bounds (tests/test_backtest_accuracy.py covers jitter on 10,000s of
    tasks). No breakers on the two types (see the module's report in docs/backtest.md).
    Off-peak deferral off: the test must not depend on the hour it runs at."""
    doc = yaml.safe_load(syn.with_retry_policies((ROOT / "policies.yaml").read_text(), changes))
    doc["off_peak"]["enabled"] = False
    return yaml.safe_dump(doc, sort_keys=False)


# A retries the database quickly (0.5 s, 1 s) and the API twice after 0.5 s: it gives up
# inside both outages.
POLICY_A = _policy(
    {
        "TRANSIENT_DATABASE": {
            "max_retries": 2,
            "initial_delay": 0.5,
            "backoff": "exponential",
            "multiplier": 2.0,
            "max_delay": 2.0,
            "jitter": "none",
        },
        "EXTERNAL_API_DOWN": {
            "max_retries": 2,
            "initial_delay": 0.5,
            "backoff": "constant",
            "max_delay": 0.5,
            "jitter": "none",
        },
    }
)
# B waits longer and retries the database more (1.5 s, 3 s, 6 s: it outlasts the outage);
# it retries the API once, after 2 s.
POLICY_B = _policy(
    {
        "TRANSIENT_DATABASE": {
            "max_retries": 3,
            "initial_delay": 1.5,
            "backoff": "exponential",
            "multiplier": 2.0,
            "max_delay": 6.0,
            "jitter": "none",
        },
        "EXTERNAL_API_DOWN": {
            "max_retries": 1,
            "initial_delay": 2.0,
            "backoff": "constant",
            "max_delay": 2.0,
            "jitter": "none",
        },
    }
)
# The bounds for dead letters, successes and the p95. Retries: ±10 % too — with no
# jitter a retry is scheduled exactly when the policy says, so the count moves only with
# the runs that land on the other side of a switch time (a few of ~250).
BOUNDS = {
    "dead_lettered": 0.10,
    "succeeded": 0.10,
    "retries": 0.10,
    "time_to_success_p95_seconds": 0.20,
}


# --- the stand-in rates API ----------------------------------------------------------------


class RatesApi:
    """A loopback HTTP API that answers 503 while `down` is set, 200 otherwise."""

    def __init__(self) -> None:
        self.down = False
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status, body = (503, b"unavailable") if api.down else (200, b'{"EUR": 1.0}')
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/latest"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# --- one live run of the script under one policy -------------------------------------------


@dataclass
class Live:
    """A policy's sidecar, worker and dependencies."""

    name: str
    policy_path: Path
    sidecar: SidecarProcess
    worker: Worker
    runs: redis.Redis
    producer: Celery
    rates: RatesApi
    started: float = 0.0
    task_ids: tuple[str, ...] = ()

    def api(self, path: str) -> Any:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.sidecar.port}{path}",
            headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.read()

    def run_log(self) -> list[dict[str, Any]]:
        return [json.loads(r) for r in self.runs.lrange("runs", 0, -1)]

    def dead_lettered(self) -> set[str]:
        page = json.loads(self.api("/v1/dlq?limit=500"))
        return {record["task_id"] for record in page["records"]}

    def play(self) -> None:
        """Send the workload and switch the dependencies at their times."""
        script: list[tuple[float, str, int]] = []
        for n in range(ARRIVALS):
            script.append((n * SPACING + PHASE, "invoice", n))
            script.append((n * SPACING + PHASE, "rates", n))
        for what, (down, up) in (("db", DB_DOWN), ("api", API_DOWN)):
            script += [(down, f"{what}-down", 0), (up, f"{what}-up", 0)]
        script.sort()
        ids = []
        self.started = time.time()
        for offset, action, n in script:
            time.sleep(max(0.0, self.started + offset - time.time()))  # the script's clock
            if action == "invoice":
                ids.append(self._send("bt.sync_invoice", n, bad_invoice(n)))
            elif action == "rates":
                ids.append(self._send("bt.fetch_rates", n))
            elif action == "db-down":
                self.runs.set("down:db", 1)
            elif action == "db-up":
                self.runs.delete("down:db")
            else:
                self.rates.down = action == "api-down"
        self.task_ids = tuple(ids)

    def _send(self, name: str, *args: Any) -> str:
        return self.producer.send_task(name, args=args, queue="default").id

    def wait_until_done(self) -> None:
        """Every task succeeded or is in the DLQ, and the sidecar stored every report."""

        def unfinished() -> set[str]:
            ok = {run["task_id"] for run in self.run_log() if run["ok"]}
            return set(self.task_ids) - ok - self.dead_lettered()

        wait_for(lambda: not unfinished(), 60, f"{self.name}: every task ended")
        reports = len(self.run_log())

        def stored() -> bool:
            lines = self.api(f"/v1/events/export?since={self.started - 5}").splitlines()
            kinds = [json.loads(line)["kind"] for line in lines]
            return sum(kind != "start" for kind in kinds) >= reports

        wait_for(stored, 30, f"{self.name}: every report in the history")

    def export(self, path: Path) -> Path:
        """The history, with the real command a user runs."""
        subprocess.run(
            [
                str(BIN / "task-sidecar"), "events", "export",
                "--since", str(self.started - 5),
                "--url", f"http://127.0.0.1:{self.sidecar.port}",
                "--token", OPERATOR_TOKEN,
                "-f", str(path),
            ],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        return path

    def truth(self) -> dict[str, Any]:
        """What the policy really did, from the worker's run log and the sidecar's DLQ
        (not from the history): the figures `simulate` prints, for tasks that failed."""
        by_task: dict[str, list[dict[str, Any]]] = {}
        for run in self.run_log():
            by_task.setdefault(run["task_id"], []).append(run)
        dead = self.dead_lettered()
        failed = {t: sorted(runs, key=lambda r: r["t"]) for t, runs in by_task.items()}
        failed = {t: runs for t, runs in failed.items() if not runs[0]["ok"]}
        times = [runs[-1]["t"] - runs[0]["t"] for runs in failed.values() if runs[-1]["ok"]]
        return {
            "tasks": len(failed),
            "succeeded": len(times),
            "dead_lettered": len(dead & set(failed)),
            "retries": sum(len(runs) - 1 for runs in failed.values()),
            "time_to_success_p95_seconds": percentile(sorted(times), 0.95),
        }

    def stop(self) -> None:
        self.worker.stop()
        self.sidecar.__exit__(None, None, None)
        self.rates.close()


def _database(postgres_dsn: str, name: str) -> str:
    """A fresh database on the shared server: each sidecar keeps its own history."""
    with psycopg.connect(postgres_dsn, autocommit=True) as connection:
        connection.execute(f"drop database if exists {name}")
        connection.execute(f"create database {name}")
    return postgres_dsn.rsplit("/", 1)[0] + f"/{name}"


def _start(name: str, policy: str, dbs: range, tmp: Path, redis_base: str, pg: str) -> Live:
    """Sidecar, worker and stand-ins of one policy; Redis databases `dbs` are its broker,
    run log and sidecar state."""
    broker, runs_url, state = (f"{redis_base}/{db}" for db in dbs)
    for url in (broker, runs_url, state):
        redis.Redis.from_url(url).flushdb()
    policy_path = tmp / f"{name}.yaml"
    policy_path.write_text(policy)
    sidecar = SidecarProcess(
        tmp,
        HOOK_TOKEN,
        policies=str(policy_path),
        redis_url=state,
        postgres_dsn=_database(pg, f"backtest_{name}"),
        operator_tokens=f"ops:{OPERATOR_TOKEN}",
    )
    rates = RatesApi()
    worker = Worker(
        tmp / f"worker-{name}.log",
        QUEUES,
        {
            "CELERY_BROKER_URL": broker,
            "RUNS_REDIS_URL": runs_url,
            "BT_DB_DSN": pg,
            "BT_DEAD_DSN": f"postgresql://postgres@127.0.0.1:{free_port()}/none",
            "BT_RATES_URL": rates.url,
            "TASK_SIDECAR_URL": f"http://127.0.0.1:{sidecar.port}",
            "TASK_SIDECAR_TOKEN": HOOK_TOKEN,
            "TASK_SIDECAR_POLICIES": str(policy_path),
        },
        app="tests.backtest_app",
        pool="threads",
        concurrency=4,
    )
    producer = Celery(f"producer-{name}", broker=broker)
    return Live(name, policy_path, sidecar, worker, redis.Redis.from_url(runs_url), producer, rates)


@dataclass
class Results:
    a: Live
    b: Live
    history_a: Path
    predicted: dict[str, Any]  # simulate's JSON document
    truth_a: dict[str, Any]
    truth_b: dict[str, Any]


@pytest.fixture(scope="module")
def results(
    tmp_path_factory: pytest.TempPathFactory, redis_service: Any, postgres_service: Any
) -> Iterator[Results]:
    tmp = tmp_path_factory.mktemp("backtest-e2e")
    redis_service.start()
    postgres_service.start()
    base = redis_service.url.rsplit("/", 1)[0]
    pg = postgres_service.dsn
    started: list[Live] = []
    try:
        # Both policies' processes start together: they get ready in the same seconds.
        a = _start("a", POLICY_A, range(1, 4), tmp, base, pg)
        started.append(a)
        b = _start("b", POLICY_B, range(4, 7), tmp, base, pg)
        started.append(b)
        for live in started:
            live.sidecar.wait_ready()
            live.worker.wait_ready()

        a.play()
        a.wait_until_done()
        history_a = a.export(tmp / "a.jsonl")
        predicted = json.loads(
            subprocess.run(
                [
                    str(BIN / "task-sidecar"), "simulate",
                    "--events", str(history_a),
                    "--baseline", str(a.policy_path),
                    "--policies", str(b.policy_path),
                    "-o", "json",
                ],
                check=True, capture_output=True, timeout=120,
            ).stdout
        )  # fmt: skip

        b.play()
        b.wait_until_done()
        for live in (a, b):  # for a look at single tasks when a figure is off
            (tmp / f"{live.name}-runs.json").write_text(json.dumps(live.run_log()))
        yield Results(a, b, history_a, predicted, a.truth(), b.truth())
    finally:
        for live in started:
            live.stop()


FIGURES = ("tasks", "succeeded", "dead_lettered", "discarded", "retries")


def error(predicted: dict, truth: dict, figure: str) -> float:
    return (predicted[figure] - truth[figure]) / truth[figure]


def test_history_holds_what_policy_a_did(results: Results) -> None:
    """The exported history says what the worker's log says: nothing lost on the way."""
    recorded = results.predicted["recorded"]
    for figure in ("tasks", "succeeded", "dead_lettered", "retries"):
        assert recorded[figure] == results.truth_a[figure], figure
    assert results.truth_a["dead_lettered"] > 30  # A gives up inside both outages


def test_baseline_replay_reproduces_policy_a_exactly(results: Results) -> None:
    doc = results.predicted
    baseline, recorded = doc["baseline"], doc["recorded"]
    for figure in recorded:
        if recorded[figure] is not None and figure != "breaker_openings":
            assert baseline[figure] == recorded[figure], figure
    u = doc["uncertainty"]
    assert u["baseline_decisions_reproduced"] == u["recorded_decisions"]
    assert u["attempts_inferred"]["baseline"] == 0


def test_simulate_predicts_policy_b_within_bounds(results: Results, capsys) -> None:
    candidate, truth = results.predicted["candidate"], results.truth_b
    history = parse(enumerate(results.history_a.read_bytes().splitlines(), 1))
    policy_a = parse_policy(POLICY_A, "A")
    policy_b = parse_policy(POLICY_B, "B")
    naive = report(simulate(history, policy_a, policy_b, model=syn.PerAttemptModel))["candidate"]
    with capsys.disabled():
        print("\n[figures] policy B live vs predicted from policy A's live history:")
        for figure in ("tasks", *BOUNDS):
            print(
                f"  {figure:28} A {results.truth_a[figure]!s:>7}  B {truth[figure]!s:>7}"
                f"  simulate {candidate[figure]!s:>7} ({error(candidate, truth, figure):+.1%})"
                f"  per-attempt {naive[figure]!s:>7} ({error(naive, truth, figure):+.1%})"
            )
    # Worth predicting: B really does much better than A.
    assert truth["succeeded"] > 2 * results.truth_a["succeeded"]
    for figure, bound in BOUNDS.items():
        assert abs(error(candidate, truth, figure)) <= bound, (figure, candidate, truth)
    missed = [f for f in ("dead_lettered", "succeeded") if abs(error(naive, truth, f)) > BOUNDS[f]]
    assert missed == ["dead_lettered", "succeeded"], naive
