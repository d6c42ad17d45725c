"""Celery integration (see docs/celery.md).

`install(app, url, token, policies=...)` makes `SidecarTask` the app's default task base:
failures are decided by the sidecar (retry on the decided queue and priority after the
decided delay, dead letter, discard), `hooks/start` postpones tasks whose breaker is open,
successes are reported, DLQ retries resolve their record, and `idempotent=True` tasks skip
duplicates (the key is built from the arguments bound to the task's signature, so
`charge("o1", 10)` and `charge(order_id="o1", amount=10)` are the same call). A failure
report carries what Celery needs to continue a chain or callbacks after a DLQ retry
(`workflow`). At worker start it warns once when the worker does not consume the queues
the policy sends its tasks' retries to.

`send_beat_schedule(app, url)` reports a Celery app's `beat_schedule` to the sidecar so
its schedule health (hotspots, conflicts, advice) covers the periodic tasks the app runs.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import time
import urllib.request
from collections.abc import Mapping
from typing import Any

from ..schedules import ScheduleError
from .beat import schedule_from_celery
from .kombu import DLQ_HEADER, message_priority


def beat_schedules(app: Any, durations: dict[str, float] | None = None) -> list[dict[str, Any]]:
    """The app's beat_schedule as sidecar schedule entries. An entry Celery can run but
    the analysis cannot express (a solar schedule) is left out rather than failing all."""
    durations = durations or {}
    timezone = str(app.conf.timezone) if app.conf.timezone else None
    out = []
    for name, entry in (app.conf.beat_schedule or {}).items():
        try:
            schedule = schedule_from_celery(
                name, entry, timezone=timezone, expected_duration=durations.get(name)
            )
        except ScheduleError:
            continue
        out.append(
            {
                "name": schedule.name,
                "cron": schedule.cron,
                "queue": schedule.queue,
                "expected_duration": schedule.expected_duration,
                "timezone": schedule.timezone,
            }
        )
    return out


def send_beat_schedule(
    app: Any,
    url: str,
    token: str | None = None,
    durations: dict[str, float] | None = None,
    timeout: float = 5.0,
) -> int:
    """PUT the app's beat_schedule to the sidecar at `url`; returns how many it took.
    `durations` gives the expected run time (seconds) of entries, for conflict checks."""
    body = json.dumps({"schedules": beat_schedules(app, durations)}).encode()
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(f"{url.rstrip('/')}/v1/schedules", body, headers, method="PUT")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())["schedules"]


# --- smart retries: a Task base class driven by the sidecar --------------------------------

log = logging.getLogger("sidecar.integrations.celery")

try:  # Celery is an optional extra; beat-schedule reporting above does not need it.
    from celery import Task as _CeleryTask
    from celery.exceptions import Ignore, Reject, Retry, WorkerLostError
    from celery.worker.request import Request as _CeleryRequest
except ImportError:  # pragma: no cover - depends on the installation
    _CeleryTask = _CeleryRequest = object  # type: ignore[assignment,misc]
    Ignore = Reject = Retry = WorkerLostError = ()  # type: ignore[assignment,misc]


class SidecarRequest(_CeleryRequest):  # type: ignore[misc,valid-type]
    """The worker's (parent process's) view of a run: when a prefork child dies under a
    task (SIGKILL, the OOM killer, a segfault), Celery reports WorkerLostError here, in
    the parent, and nowhere else; it is sent to the sidecar as a lost run, with the
    signal or exit code, before Celery requeues the message (reject_on_worker_lost)."""

    def on_failure(self, exc_info: Any, send_failed_event: bool = True, return_ok: bool = False):
        exc = getattr(exc_info, "exception", None)
        exc = getattr(exc, "exc", exc)  # ExceptionWithTraceback
        task = self.task
        client = getattr(task, "sidecar_client", None)
        if (
            isinstance(WorkerLostError, type)
            and isinstance(exc, WorkerLostError)
            and client is not None
            and getattr(task, "sidecar", False)
        ):
            try:
                client.failure(
                    self.id,
                    self.name,
                    {
                        "type": "WorkerLostError",
                        "module": "billiard.exceptions",
                        "mro": ["billiard.exceptions.WorkerLostError", "builtins.Exception"],
                        "message": str(exc),
                    },
                    attempt=int(self._request_dict.get("retries") or 0),
                    queue=_queue_of(self),
                    host=self.hostname,
                    process=_process(self.worker_pid),
                    args=list(self.args or ()),
                    kwargs=dict(self.kwargs or {}),
                )
            except Exception:  # never into the worker
                log.debug("task-sidecar: lost run not reported", exc_info=True)
        return super().on_failure(exc_info, send_failed_event, return_ok)


_CONTROL = tuple(c for c in (Retry, Ignore, Reject) if isinstance(c, type))


def dlq_id_of(request: Any) -> str | None:
    """The DLQ record a run was retried from: Celery copies custom message headers onto
    the request (`self.request.task_sidecar_dlq_id`); older protocols keep them in
    `self.request.headers`."""
    value = getattr(request, DLQ_HEADER, None)
    if value is None:
        headers = getattr(request, "headers", None) or {}
        value = headers.get(DLQ_HEADER) if isinstance(headers, dict) else None
    return str(value) if value else None


class SidecarTask(_CeleryTask):  # type: ignore[misc,valid-type]
    """A Celery Task whose failures are decided by the sidecar.

    Per-task options (as task decorator keywords):
      sidecar = False            run as a plain Celery task (its own retry options apply)
      idempotent = True          skip a run whose key was already claimed (DESIGN §3.2)
      idempotency_scope          "global" (default), "user", "device", "task"
      idempotency_ttl            seconds a completed key refuses duplicates
      sidecar_context(args, kwargs) -> dict   extra failure context (tier, user_id, …)
    """

    abstract = True  # Celery < 5 compatibility; ignored by newer versions
    Request = "sidecar.integrations.celery:SidecarRequest"  # reports lost runs (prefork)
    sidecar: bool = True
    idempotent: bool = False
    idempotency_scope: str = "global"
    idempotency_ttl: float | None = None
    duplicate_delay: float = 10.0  # when the first run of a duplicate is still running
    sidecar_client: Any = None  # set by install(); None turns the integration off
    sidecar_route_retries: bool = True  # send retries to the queue the sidecar decides
    _sidecar_signature: Any = None  # inspect.Signature of run(), False when it has none

    def sidecar_context(self, args: tuple, kwargs: dict) -> dict[str, Any]:
        return {}

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        client = self.sidecar_client
        request = self.request
        if client is None or not self.sidecar or request.is_eager or request.called_directly:
            # Not a worker's run (a plain function call, or eager apply()): nothing to report.
            return super().__call__(*args, **kwargs)
        task_id = request.id or ""
        try:
            return self._sidecar_call(client, request, task_id, args, kwargs)
        finally:
            _seen.pop(task_id, None)  # the run ended in this process

    def _sidecar_call(
        self, client: Any, request: Any, task_id: str, args: tuple, kwargs: dict
    ) -> Any:
        attempt = int(request.retries or 0)
        queue = _queue_of(request)
        dlq_id = dlq_id_of(request)

        delivery_count = _delivery_count(request)
        redelivered = _redelivery(request, task_id, attempt, delivery_count)
        # The healthy path (a first delivery, no run of this id open in the process) sends
        # no start: the breaker gate answers from the cached allowance. A redelivery may be
        # a poison task, and a DLQ retry starts its count over: both ask before running.
        ask = redelivered or dlq_id is not None
        answer = None if ask else client.cached_start(self.name)
        if answer is None:
            answer = client.start(
                task_id,
                self.name,
                attempt=attempt,
                queue=queue,
                ask=ask,
                redelivered=redelivered,
                delivery_count=delivery_count,
                host=getattr(request, "hostname", None),
                process=_process(os.getpid()),
                dlq_id=dlq_id,
                args=list(args) if redelivered else None,
                kwargs=dict(kwargs) if redelivered else None,
            )
        if answer.get("dead_lettered"):
            # Too many runs of this task id never ended (it kills its worker): the message
            # is acknowledged without running it; the DLQ has it.
            log.error(
                "%s[%s] not run: poison task, dead-lettered (%s) after runs that never "
                "ended; acknowledged",
                self.name,
                task_id,
                answer.get("dlq_id"),
            )
            raise Ignore()
        if not answer.get("allow", True):
            client.end(task_id, self.name)
            self._postpone(float(answer.get("delay_seconds") or 1.0), answer)

        key, owner = None, None
        if self.idempotent:
            key = self._idempotency_key(args, kwargs)
            claim = client.claim(
                key, self.idempotency_scope, self.idempotency_ttl, task_name=self.name
            )
            if not claim.get("claimed", True):
                client.end(task_id, self.name)
                return self._duplicate(key, claim)
            owner = claim.get("owner")  # complete/release prove the claim is ours

        started = time.monotonic()
        try:
            # The worker's tracer has pushed this run's request and task already; Task's
            # own __call__ would push copies of both again, on every run.
            result = self.run(*args, **kwargs)
        except _CONTROL:
            if key is not None:
                client.release(key, self.idempotency_scope, owner=owner)
            client.end(task_id, self.name)
            raise
        except Exception as exc:
            if key is not None:
                client.release(key, self.idempotency_scope, owner=owner)
            self._on_failure(client, exc, args, kwargs, attempt, queue, dlq_id)
            if isinstance(exc, MemoryError):
                # Celery treats a MemoryError reaching the worker as unrecoverable and
                # stops the whole worker (with acks_late the message would come back):
                # it is in the DLQ, so the message is rejected without a requeue.
                raise Reject(f"dead-lettered: {exc!r}", requeue=False) from exc
            raise  # dead_letter: the task fails (the sidecar stored it in the DLQ)
        if key is not None:
            client.complete(key, self.idempotency_scope, self.idempotency_ttl, owner=owner)
        client.success(
            task_id,
            self.name,
            attempt=attempt,
            runtime_seconds=time.monotonic() - started,
            dlq_id=dlq_id,
        )
        return result

    # --- helpers ---------------------------------------------------------------------------

    def _idempotency_key(self, args: tuple, kwargs: dict) -> str:
        """The key of this call: the arguments by parameter name, defaults applied, so a
        call is the same however its arguments were passed."""
        from ..client import idempotency_key

        context = self.sidecar_context(args, kwargs) or {}
        named = self._bound_arguments(args, kwargs)
        if named is not None:
            args, kwargs = (), named
        return idempotency_key(
            self.name,
            args,
            kwargs,
            self.idempotency_scope,  # type: ignore[arg-type]
            user_id=context.get("user_id", kwargs.get("user_id")),
            device_id=context.get("device_id", kwargs.get("device_id")),
            task_id=self.request.id,
        )

    def _bound_arguments(self, args: tuple, kwargs: dict) -> dict[str, Any] | None:
        """`inspect.signature(run).bind(...)` with defaults applied; None when the call does
        not fit the signature (the run then fails on it as it would without us)."""
        signature = self._sidecar_signature
        if signature is None:  # once per task: inspect.signature is not free
            try:
                signature = inspect.signature(self.run)
            except (TypeError, ValueError):
                signature = False
            self._sidecar_signature = signature
        if signature is False:
            return None
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError:
            return None
        bound.apply_defaults()
        return dict(bound.arguments)

    def _duplicate(self, key: str, claim: dict[str, Any]) -> Any:
        counts = _DUPLICATES.setdefault(self.name, [0])
        counts[0] += 1
        if claim.get("state") == "running":
            # The first run has not finished and may still fail: look again later rather
            # than lose the work. Not counted as an attempt.
            log.info("%s[%s]: duplicate of a running task, postponed", self.name, self.request.id)
            self._postpone(self.duplicate_delay, claim)
        log.info(
            "%s[%s]: duplicate skipped (key %s, first seen %s)",
            self.name,
            self.request.id,
            key,
            claim.get("first_seen_at"),
        )
        return None

    def _postpone(self, delay: float, why: dict[str, Any]) -> None:
        """Publish the same task again `delay` seconds later, keeping `retries` unchanged
        (a postponement is not an attempt), and end this run with Celery's Retry."""
        request = self.request
        signature = self.signature_from_request(
            request, None, None, countdown=delay, retries=int(request.retries or 0)
        )
        signature.apply_async()
        raise Retry(f"postponed {delay:.1f}s by the sidecar ({why.get('breaker')})", when=delay)

    def _on_failure(
        self,
        client: Any,
        exc: Exception,
        args: tuple,
        kwargs: dict,
        attempt: int,
        queue: str | None,
        dlq_id: str | None,
    ) -> None:
        """Ask the sidecar; retry (raises Retry), discard (raises Ignore) or return so the
        caller re-raises the exception (dead letter)."""
        try:
            context = dict(self.sidecar_context(args, kwargs) or {})
        except Exception:
            context = {}
        decision = client.failure(
            self.request.id or "",
            self.name,
            exc,
            attempt=attempt,
            queue=queue,
            args=args,
            kwargs=kwargs,
            context=context,
            dlq_id=dlq_id,
            workflow=workflow_of(self.request),
        )
        action = decision.get("action")
        if action == "retry":
            options: dict[str, Any] = {}
            if self.sidecar_route_retries and decision.get("queue"):
                options["queue"] = decision["queue"]
            if decision.get("priority_value") is not None:
                options["priority"] = _message_priority(self.app, decision["priority_value"])
            raise self.retry(
                exc=exc,
                countdown=max(0.0, float(decision.get("delay_seconds") or 0.0)),
                max_retries=attempt + 1,  # the sidecar decides; Celery's limit must not
                **options,
            )
        if action == "discard":
            log.warning(
                "%s[%s] discarded by the sidecar: %s",
                self.name,
                self.request.id,
                decision.get("rationale"),
            )
            raise Ignore()
        log.warning(
            "%s[%s] dead-lettered (%s): %s",
            self.name,
            self.request.id,
            decision.get("dlq_id") or decision.get("source", "sidecar"),
            decision.get("rationale"),
        )


_DUPLICATES: dict[str, list[int]] = {}


def duplicates_skipped() -> dict[str, int]:
    """Duplicate runs skipped (or postponed) by idempotency in this process, per task."""
    return {name: count[0] for name, count in _DUPLICATES.items()}


def workflow_of(request: Any) -> dict[str, Any]:
    """What Celery needs to continue the workflow after a DLQ retry of this run: the rest
    of its chain, its callbacks and errbacks (signatures as the dicts Celery serialises)
    and the ids tying it to its parent, root and group. Empty fields are left out; the
    client leaves the whole object out when nothing is set."""
    fields = {
        "chain": getattr(request, "chain", None),
        "callbacks": getattr(request, "callbacks", None),
        "errbacks": getattr(request, "errbacks", None),
        "parent_id": getattr(request, "parent_id", None),
        "root_id": getattr(request, "root_id", None),
        "group_id": getattr(request, "group", None),
    }
    if fields["root_id"] == getattr(request, "id", None):
        fields["root_id"] = None  # its own root: Celery makes a requeued task its own root too
    workflow: dict[str, Any] = {}
    for name, value in fields.items():
        if not value:
            continue
        if isinstance(value, (list, tuple)):
            value = [dict(v) if isinstance(v, Mapping) else v for v in value]  # Signature: a dict
        workflow[name] = value if isinstance(value, list) else str(value)
    return workflow


# Made once per worker (at import, in the parent, so prefork children inherit it): with the
# pid it names a process across restarts, where pids repeat (a container starts its
# worker with the same pid each time).
_BOOT = os.urandom(4).hex()


def _process(pid: int | None) -> str | None:
    """The process running a run, as its start and its WorkerLostError report name it (the
    parent reports its child's pid)."""
    return f"{_BOOT}-{pid}" if pid else None


_SEEN_LIMIT = 10_000
_seen: dict[str, int] = {}  # task id -> retries of the runs running in this process


def _redelivery(request: Any, task_id: str, retries: int, count: int | None) -> bool:
    """The broker says so (delivery_info / headers `redelivered`, a delivery count above
    1), or this process is already running this task id with the same retries count
    (a second delivery while the first runs: thread and gevent pools). `count`: the
    delivery count, when the broker keeps one."""
    info = getattr(request, "delivery_info", None) or {}
    headers = getattr(request, "headers", None) or {}
    flagged = bool(info.get("redelivered") or getattr(request, "redelivered", False))
    if not flagged and isinstance(headers, dict):
        flagged = bool(headers.get("redelivered"))
    again = _seen.get(task_id) == retries
    if len(_seen) >= _SEEN_LIMIT:
        _seen.clear()
    _seen[task_id] = retries
    return flagged or again or (count is not None and count > 1)


def _delivery_count(request: Any) -> int | None:
    """RabbitMQ quorum queues count deliveries (`x-delivery-count`, 0 on the first)."""
    headers = getattr(request, "headers", None) or {}
    value = headers.get("x-delivery-count") if isinstance(headers, dict) else None
    if value is None:
        value = getattr(request, "x-delivery-count", None)
    try:
        return int(value) + 1 if value is not None else None
    except (TypeError, ValueError):
        return None


def _queue_of(request: Any) -> str | None:
    info = getattr(request, "delivery_info", None) or {}
    return info.get("routing_key") or info.get("queue") or None


def _message_priority(app: Any, priority: int) -> int:
    return message_priority(priority, str(app.conf.broker_url or ""))


def retry_queues(policy: Any, task_name: str) -> set[str]:
    """Queues the policy may send the task's retries to: its base priority level and every
    level its boosts (SLA breach, aging, retries, failure urgency, positive or negative)
    can move it to, and the safety-critical level."""
    from ..policy.priority import nearest_level

    priority = policy.priority
    base = priority.level(policy.base_level(task_name)).value
    aging = [a.boost for a in priority.aging] or [0.0]
    urgency = [t.urgency for t in policy.failure_types.values()] or [0.0]
    sla = priority.sla_breach_boost if priority.tier_sla else 0.0
    escalation = priority.retry_escalation_boost
    up = sum(max(0.0, b) for b in (sla, max(aging), escalation, max(urgency)))
    down = sum(min(0.0, b) for b in (sla, min(aging), escalation, min(urgency)))
    high = nearest_level(priority, base + up).value
    low = nearest_level(priority, base + down).value
    levels = [level for level in priority.levels if low <= level.value <= high]
    levels.append(priority.level(priority.safety_critical_level))
    return {level.queue for level in levels}


def stranded_retry_queues(app: Any, consumed: set[str]) -> dict[str, list[str]]:
    """{queue: the app's tasks whose retries may go there} for the queues the policy may
    route retries to that this worker does not consume; empty when retries are not
    routed (install(route_retries=False), or the policy's `priority.route_retries`
    false) or no policy file can be read."""
    stranded: dict[str, list[str]] = {}
    for name, task in sorted(app.tasks.items()):
        client = getattr(task, "sidecar_client", None)
        if (
            name.startswith("celery.")
            or not isinstance(task, SidecarTask)
            or not task.sidecar
            or not task.sidecar_route_retries
            or client is None
        ):
            continue
        local = getattr(client, "local", None)
        policy = local.policy() if local is not None else None
        if policy is None or not policy.priority.route_retries:
            continue
        for queue in retry_queues(policy, name) - consumed:
            stranded.setdefault(queue, []).append(name)
    return stranded


def consumed_queues(consumer: Any) -> set[str]:
    """The queues a worker's consumer reads (`celery worker -Q`)."""
    task_consumer = getattr(consumer, "task_consumer", None)
    queues = getattr(task_consumer, "queues", None)
    if queues is None:
        queues = consumer.app.amqp.queues.consume_from.values()
    return {queue.name for queue in queues}


def warn_stranded_retries(app: Any, consumer: Any) -> dict[str, list[str]]:
    """The worker_ready check: one warning naming each queue this worker does not read
    and the tasks whose retries may land there."""
    consumed = consumed_queues(consumer)
    stranded = stranded_retry_queues(app, consumed)
    if stranded:
        listed = "; ".join(f"{queue} ({_some(tasks)})" for queue, tasks in sorted(stranded.items()))
        wanted = ",".join(sorted(consumed) + sorted(stranded))
        log.warning(
            "task-sidecar: this worker consumes %s but the policy may send retries of its "
            "tasks to queues it does not consume: %s. Those retries would wait for a worker "
            "that reads them. Consume them (celery worker -Q %s), or keep retries on the "
            "task's own queue: priority.route_retries: false in the policy (the default).",
            ", ".join(sorted(consumed)),
            listed,
            wanted,
        )
    return stranded


def _some(names: list[str], shown: int = 3) -> str:
    more = f", and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def install(
    app: Any,
    url: str | None = None,
    token: str | None = None,
    *,
    policies: str | None = None,
    client: Any = None,
    route_retries: bool = True,
    **client_options: Any,
) -> Any:
    """Make SidecarTask the default base of the app's tasks and give it a client.
    `url`, `token` and `policies` default to TASK_SIDECAR_URL, TASK_SIDECAR_TOKEN and
    TASK_SIDECAR_POLICIES; `client_options` go to SidecarClient (`outbox_dir` defaults to
    TASK_SIDECAR_CLIENT_OUTBOX there). Call it before the tasks are defined. Returns the
    client."""
    from ..client import SidecarClient

    if client is None:
        url = url or os.environ.get("TASK_SIDECAR_URL")
        if not url:
            raise ValueError("install(): give url= or set TASK_SIDECAR_URL")
        token = token or os.environ.get("TASK_SIDECAR_TOKEN") or None
        policies = policies or os.environ.get("TASK_SIDECAR_POLICIES") or None
        if "timeout" not in client_options and os.environ.get("TASK_SIDECAR_CLIENT_TIMEOUT"):
            client_options["timeout"] = float(os.environ["TASK_SIDECAR_CLIENT_TIMEOUT"])
        client = SidecarClient(url, token, policies=policies, **client_options)

    class AppSidecarTask(SidecarTask):
        abstract = True
        sidecar_client = client
        sidecar_route_retries = route_retries

    app.Task = AppSidecarTask
    try:
        from celery.signals import worker_ready, worker_shutdown
    except ImportError:  # pragma: no cover
        return client
    worker_shutdown.connect(lambda **_: client.close(), weak=False)

    def check_queues(sender: Any = None, **_: Any) -> None:
        if sender is None or getattr(sender, "app", app) is not app:
            return  # another app's worker in this process
        try:
            warn_stranded_retries(app, sender)
        except Exception as exc:  # a check must never stop a worker from starting
            log.warning("task-sidecar: cannot check the queues retries go to: %r", exc)

    if not getattr(app, "_task_sidecar_checks_queues", False):  # once, however often installed
        app._task_sidecar_checks_queues = True
        worker_ready.connect(check_queues, weak=False)
    return client
