"""RQ integration (see docs/rq.md): a worker whose failed jobs are decided by the sidecar.

    rq worker --worker-class sidecar.integrations.rq.SidecarWorker --with-scheduler

`SidecarWorker` runs `SidecarJob`s: before a job runs, `hooks/start` may postpone it (an
open breaker; not counted as an attempt); a failure is decided by the sidecar — retry
after the decided delay (through RQ's own scheduled retry, hence `--with-scheduler`), dead
letter (the job ends in RQ's FailedJobRegistry, the sidecar keeps the DLQ record) or
discard (the job is deleted); successes are reported, with the DLQ id of a dead-letter
retry; functions decorated with `@idempotent()` skip duplicates. `RequeueWebhook` is the
sidecar's webhook requeue target for RQ:

    python -m sidecar.integrations.rq webhook --redis-url redis://… --port 8090

The client is configured by `install()` or, in a worker started from the command line,
from TASK_SIDECAR_URL, TASK_SIDECAR_TOKEN, TASK_SIDECAR_POLICIES and
TASK_SIDECAR_CLIENT_TIMEOUT (and TASK_SIDECAR_CLIENT_OUTBOX, which the client reads). The
sidecar never blocks or fails a job: the client falls back to a local decision when it
does not answer, and keeps a dead letter it decides in its outbox on disk until the
sidecar has it.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import hmac
import http.server
import json
import logging
import math
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from rq import Queue, Worker
from rq.job import Job, Retry

from ..client import SidecarClient, idempotency_key

# Under RQ's worker logger, so these lines appear in `rq worker`'s output at its level.
log = logging.getLogger("rq.worker.sidecar")

DLQ_META = "task_sidecar_dlq_id"  # set on jobs requeued from the DLQ by RequeueWebhook
# ... with the record's task id: the sidecar lets a run resolve only its own task's record.
TASK_META = "task_sidecar_task_id"
ATTEMPT_META = "task_sidecar_attempt"  # retries the sidecar decided so far
DISCARD_META = "task_sidecar_discard"
OFF_META = "sidecar"  # meta={"sidecar": False}: a plain RQ job, its own Retry applies
SIGNATURE_HEADER = "X-Task-Sidecar-Signature"

# --- the client -------------------------------------------------------------------------------

_settings: dict[str, Any] = {}
_client: tuple[int, Any] | None = None  # (pid, client): RQ forks a work horse per job
_lock = threading.Lock()


def _interval(delay: float) -> int:
    """RQ's retry interval for a delay: whole seconds, and one more, because RQ stores the
    scheduled time truncated to the second; the job then never runs before the delay."""
    return math.ceil(max(0.0, delay)) + 1


def install(
    url: str | None = None,
    token: str | None = None,
    *,
    policies: str | None = None,
    client: Any = None,
    **client_options: Any,
) -> None:
    """Configure the client the jobs use (call it where the worker imports your code).
    Without it the environment is read: TASK_SIDECAR_URL (required), TASK_SIDECAR_TOKEN,
    TASK_SIDECAR_POLICIES, TASK_SIDECAR_CLIENT_TIMEOUT."""
    global _client
    with _lock:
        _settings.clear()
        _settings.update(
            url=url, token=token, policies=policies, client=client, options=client_options
        )
        _client = None


def current_client() -> Any:
    """The client of this process, made on first use after a fork; None when no sidecar is
    configured (jobs then run as plain RQ jobs)."""
    global _client
    with _lock:
        if _client is not None and _client[0] == os.getpid():
            return _client[1]
        made = _settings.get("client")
        if made is None:
            url = _settings.get("url") or os.environ.get("TASK_SIDECAR_URL")
            if not url:
                return None
            options = dict(_settings.get("options") or {})
            timeout = os.environ.get("TASK_SIDECAR_CLIENT_TIMEOUT")
            if "timeout" not in options and timeout:
                options["timeout"] = float(timeout)
            made = SidecarClient(
                url,
                _settings.get("token") or os.environ.get("TASK_SIDECAR_TOKEN") or None,
                policies=_settings.get("policies") or os.environ.get("TASK_SIDECAR_POLICIES"),
                **options,
            )
        _client = (os.getpid(), made)
        return made


# --- idempotency ------------------------------------------------------------------------------


def idempotent(
    scope: str = "global", ttl: float | None = None, duplicate_delay: float = 10.0
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Mark a job function idempotent: a run whose key (function name + arguments, plus the
    user/device/job id for those scopes) was already claimed is skipped; while the first
    run is still running the duplicate is postponed by `duplicate_delay` seconds."""

    def mark(func: Callable[..., Any]) -> Callable[..., Any]:
        func.sidecar_idempotent = {  # type: ignore[attr-defined]
            "scope": scope,
            "ttl": ttl,
            "duplicate_delay": duplicate_delay,
        }
        return func

    return mark


# --- the job and the worker -------------------------------------------------------------------


class SidecarJob(Job):
    """An RQ job that asks the sidecar before it runs and when it fails."""

    @property
    def task_id(self) -> str:
        """The id the sidecar knows this work by: a DLQ retry keeps its record's."""
        return self.meta.get(TASK_META) or self.id

    def _execute(self) -> Any:
        client = current_client()
        if client is None or self.meta.get(OFF_META) is False:
            return super()._execute()
        attempt = int(self.meta.get(ATTEMPT_META) or 0)
        dlq_id = self.meta.get(DLQ_META)
        name = self.func_name

        answer = client.start(self.id, name, attempt=attempt, queue=self.origin)
        if not answer.get("allow", True):
            return self._postpone(float(answer.get("delay_seconds") or 1.0), "breaker")

        key = scope = None
        options = getattr(self.func, "sidecar_idempotent", None)
        if options is not None:
            scope = options["scope"]
            kwargs = self.kwargs or {}
            key = idempotency_key(
                name,
                self.args,
                kwargs,
                scope,
                user_id=kwargs.get("user_id"),
                device_id=kwargs.get("device_id"),
                task_id=self.id,
            )
            claim = client.claim(key, scope, options["ttl"], task_name=name)
            if not claim.get("claimed", True):
                return self._duplicate(claim, options["duplicate_delay"])

        started = time.monotonic()
        try:
            result = super()._execute()
        except Exception as exc:
            if key is not None:
                client.release(key, scope)
            self._on_failure(client, exc, attempt, dlq_id)
            raise  # RQ records the failure; the retry (if any) is set on the job
        if key is not None:
            client.complete(key, scope, options["ttl"])
        client.success(
            self.task_id,
            name,
            attempt=attempt,
            runtime_seconds=time.monotonic() - started,
            dlq_id=dlq_id,
        )
        client.flush(2.0)  # a forked work horse ends with os._exit: send it now
        return result

    def _postpone(self, delay: float, why: str) -> Retry:
        """Run again `delay` seconds later through RQ's scheduled retry; not an attempt."""
        log.info("%s[%s]: postponed %.1fs by the sidecar (%s)", self.func_name, self.id, delay, why)
        return Retry(max=(self.number_of_retries or 0) + 1, interval=_interval(delay))

    def _duplicate(self, claim: dict[str, Any], delay: float) -> Any:
        if claim.get("state") == "running":
            # The first run may still fail: look again later rather than lose the work.
            return self._postpone(delay, "duplicate of a running job")
        log.info(
            "%s[%s]: duplicate skipped (first seen %s)",
            self.func_name,
            self.id,
            claim.get("first_seen_at"),
        )
        return None

    def _on_failure(self, client: Any, exc: Exception, attempt: int, dlq_id: str | None) -> None:
        decision = client.failure(
            self.task_id,
            self.func_name,
            exc,
            attempt=attempt,
            queue=self.origin,
            args=self.args,
            kwargs=self.kwargs,
            context=self.meta.get("sidecar_context") or {},
            dlq_id=dlq_id,
        )
        action = decision.get("action")
        source = f" ({decision['source']})" if decision.get("source") else ""
        if action == "retry":
            delay = max(0.0, float(decision.get("delay_seconds") or 0.0))
            self.meta[ATTEMPT_META] = attempt + 1
            self.save_meta()
            # One more retry, after the decided delay.
            self.retries_left = 1
            self.retry_intervals = [_interval(delay)]
            log.info("%s[%s]: retry in %.1fs%s", self.func_name, self.id, delay, source)
            return
        self.retries_left = None
        if action == "discard":
            self.meta[DISCARD_META] = True
            self.save_meta()
            log.warning("%s[%s]: discarded%s: %s", self.func_name, self.id, source,
                        decision.get("rationale"))  # fmt: skip
            return
        log.warning(
            "%s[%s]: dead-lettered (%s): %s",
            self.func_name,
            self.id,
            decision.get("dlq_id") or decision.get("source", "sidecar"),
            decision.get("rationale"),
        )


class SidecarWorker(Worker):
    """`rq worker --worker-class sidecar.integrations.rq.SidecarWorker --with-scheduler`"""

    job_class = SidecarJob

    def __init__(self, *args: Any, job_class: Any = None, **kwargs: Any) -> None:
        # `rq worker` passes its default --job-class (rq.job.Job) explicitly.
        if job_class in (None, Job, "rq.job.Job"):
            job_class = SidecarJob
        super().__init__(*args, job_class=job_class, **kwargs)

    def handle_job_failure(self, job: Job, queue: Queue, *args: Any, **kwargs: Any) -> None:
        super().handle_job_failure(job, queue, *args, **kwargs)
        if job.meta.get(DISCARD_META):
            job.delete()  # out of the FailedJobRegistry too: a discard keeps nothing


# --- DLQ retries: the sidecar's webhook requeue target ------------------------------------------


def verify(secret: str, body: bytes, header: str | None, tolerance: float = 300.0) -> bool:
    """Check `X-Task-Sidecar-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of "t.body">`."""
    try:
        parts = dict(item.split("=", 1) for item in (header or "").split(","))
        stamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs(time.time() - stamp) > tolerance:
        return False
    expected = hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256)
    return hmac.compare_digest(expected.hexdigest(), parts.get("v1", ""))


class RequeueWebhook:
    """Puts a dead-lettered task retried by an operator back on an RQ queue: the record's
    function (`task_name`, a dotted path), args and kwargs, with its DLQ id in the job's
    meta so the success resolves the record. `queues`, when given, limits the queues a
    request may name; others go to `default_queue`."""

    def __init__(
        self,
        connection: Any,
        secret: str,
        *,
        default_queue: str = "default",
        queues: set[str] | None = None,
    ) -> None:
        if not secret:
            raise ValueError("RequeueWebhook needs the sidecar's webhook secret")
        self.connection, self.secret = connection, secret
        self.default_queue, self.queues = default_queue, queues

    def handle(self, body: bytes, signature: str | None) -> tuple[int, dict[str, Any]]:
        if not verify(self.secret, body, signature):
            return 401, {"error": "bad or stale signature"}
        try:
            record = json.loads(body)
            name = record.get("queue") or self.default_queue
            if self.queues is not None and name not in self.queues:
                name = self.default_queue
            job = Queue(name, connection=self.connection, job_class=SidecarJob).enqueue_call(
                func=record["task_name"],
                args=tuple(record.get("args") or ()),
                kwargs=record.get("kwargs") or {},
                meta={
                    DLQ_META: record["id"],
                    TASK_META: record["task_id"],
                    "sidecar_context": record.get("context") or {},
                },
            )
        except (ValueError, KeyError, TypeError) as exc:
            return 400, {"error": f"not a DLQ record: {exc}"}
        log.info("requeued DLQ record %s as job %s on %s", record["id"], job.id, name)
        return 202, {"job_id": job.id, "queue": name}

    def server(self, host: str = "127.0.0.1", port: int = 8090) -> http.server.HTTPServer:
        webhook = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                status, payload = webhook.handle(
                    self.rfile.read(min(length, 1 << 20)), self.headers.get(SIGNATURE_HEADER)
                )
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("webhook: " + format, *args)

        return http.server.ThreadingHTTPServer((host, port), Handler)


@functools.cache
def _redis(url: str) -> Any:
    import redis

    return redis.Redis.from_url(url)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sidecar.integrations.rq")
    sub = parser.add_subparsers(dest="command", required=True)
    web = sub.add_parser("webhook", help="serve the sidecar's webhook requeue target for RQ")
    web.add_argument(
        "--redis-url", default=os.environ.get("RQ_REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    web.add_argument("--host", default="127.0.0.1")
    web.add_argument("--port", type=int, default=8090)
    web.add_argument("--default-queue", default="default")
    web.add_argument("--queues", help="comma-separated queues a request may name")
    args = parser.parse_args(argv)
    secret = os.environ.get("TASK_SIDECAR_WEBHOOK_SECRET", "")
    if not secret:
        print("set TASK_SIDECAR_WEBHOOK_SECRET (the sidecar's webhook secret)", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    queues = set(args.queues.split(",")) if args.queues else None
    webhook = RequeueWebhook(
        _redis(args.redis_url), secret, default_queue=args.default_queue, queues=queues
    )
    server = webhook.server(args.host, args.port)
    print(f"requeue webhook listening on http://{args.host}:{args.port}/", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
