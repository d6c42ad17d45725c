"""A bulk retry under a stop: SIGTERM ends it within the grace with no record stranded,
and after a SIGKILL the next sidecar puts back what was taken but never sent.

A real sidecar process on a real PostgreSQL, requeueing to a real webhook receiver.
"""

from __future__ import annotations

import http.server
import json
import signal
import threading
import time
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from .conftest import DEFAULT_POLICIES
from .polling import wait_for
from .processes import SidecarProcess
from .test_faults_data import HOOKS, OPERATOR, call, dead_letter

RECORDS = 200
RATE = 20  # records per second: the job runs for 10 s unless stopped


class Receiver(http.server.ThreadingHTTPServer):
    """Counts the record ids the webhook target delivers."""

    def __init__(self) -> None:
        self.received: list[str] = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.received.append(json.loads(body)["id"])
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                return None

        super().__init__(("127.0.0.1", 0), Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/requeue"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def statuses(dsn: str, task: str) -> dict[str, int]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT status, count(*) FROM dlq_records WHERE task_name = %s GROUP BY status",
            (task,),
        ).fetchall()
    return dict(rows)


def start_bulk(tmp_path, dsn: str, receiver: Receiver, task: str) -> SidecarProcess:
    process = SidecarProcess(
        tmp_path,
        HOOKS,
        policies=str(DEFAULT_POLICIES),
        postgres_dsn=dsn,
        operator_tokens=f"ops:{OPERATOR}",
        requeue="webhook",
        webhook_url=receiver.url,
        webhook_secret="webhook-secret-0123456789",
        shutdown_grace="3s",
        requeue_lease="2s",
    ).wait_ready()
    try:
        for i in range(RECORDS):
            status, _ = call(process.port, "POST", "/v1/hooks/failure", dead_letter(task, f"t{i}"))
            assert status == 200
        body = {"filter": {"task_name": task}, "rate_per_second": RATE}
        status, job = call(process.port, "POST", "/v1/dlq/bulk-retry", body, OPERATOR)
        assert status == 202, job
        wait_for(lambda: len(receiver.received) >= 10, 15, "the bulk retry under way")
    except BaseException:  # a failed start must not leave the sidecar running
        process.__exit__()
        raise
    return process


class TestBulkRetryUnderAStop:
    def test_sigterm_stops_it_within_the_grace_and_strands_nothing(
        self, postgres_dsn, receiver, tmp_path
    ):
        task = f"bulk.term_{uuid.uuid4().hex[:8]}"
        process = start_bulk(tmp_path, postgres_dsn, receiver, task)
        try:
            stopped_at = time.monotonic()
            assert process.stop(signal.SIGTERM, timeout=8) == 0, process.output()
            print(f"\nexited {time.monotonic() - stopped_at:.2f}s after SIGTERM (grace 3s)")
        finally:
            process.__exit__()

        sent = len(set(receiver.received))
        assert sent < RECORDS  # it was stopped, not finished
        assert statuses(postgres_dsn, task) == {"retrying": sent, "pending": RECORDS - sent}

    def test_after_sigkill_the_next_sidecar_releases_what_was_never_sent(
        self, postgres_dsn, receiver, tmp_path
    ):
        task = f"bulk.kill_{uuid.uuid4().hex[:8]}"
        process = start_bulk(tmp_path, postgres_dsn, receiver, task)
        process.stop(signal.SIGKILL)
        sent = len(set(receiver.received))
        with SidecarProcess(
            tmp_path,
            HOOKS,
            policies=str(DEFAULT_POLICIES),
            postgres_dsn=postgres_dsn,
            poll_interval="0.2",
            requeue_lease="2s",
        ):
            # Taken but never sent: back to pending once its lease lapsed.
            wait_for(
                lambda: (
                    statuses(postgres_dsn, task) == {"retrying": sent, "pending": RECORDS - sent}
                ),
                20,
                "every record either sent (retrying) or pending again",
            )
