"""The retention purge on PostgreSQL: a large backlog of old hook events goes in batches of
short statements while the sidecar keeps answering hooks and storing dead letters, and
purges running at once share the work instead of deadlocking."""

from __future__ import annotations

import asyncio
import json
import time

import psycopg
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from sidecar.http import create_app
from sidecar.http.keys import SERVICES
from sidecar.settings import Settings

from .test_actions import HOOKS, TOKENS, dead_letter

BATCH = 500
OLD_EVENTS = 400 * BATCH  # four hundred statements' worth


async def test_hooks_are_answered_while_a_large_purge_runs(empty_dsn, tmp_path):
    settings = Settings(
        data_dir=tmp_path,
        tokens=TOKENS,
        postgres_dsn=empty_dsn,
        reload_interval=0,
        poll_interval=3600,
        event_retention=7 * 86400,
    )
    app = create_app(settings, registry=CollectorRegistry())
    async with TestClient(TestServer(app)) as client:  # migrates the empty database
        with psycopg.connect(empty_dsn, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO hook_events (at, kind, task_name, failure_type, event)"
                " SELECT now() - interval '30 days' + i * interval '1 ms', 'failure',"
                " 'old.task', 'TRANSIENT_NETWORK', '{}'"
                " FROM generate_series(1, %s) AS i",
                [OLD_EVENTS],
            )
        services = app[SERVICES]
        # Two purges at once, besides the one the sidecar's poller started with it (a
        # fleet deployed together purges together): disjoint batches, no deadlock.
        store = services.stores.dlq
        purges = [
            asyncio.create_task(store.purge(time.time(), settings.event_retention, batch=BATCH))
            for _ in range(2)
        ]
        answered, dlq_ids = 0, set()
        while not all(p.done() for p in purges):
            response = await client.post(
                "/v1/hooks/failure",
                json=dead_letter(task_id=f"during-{answered}"),
                headers={"Authorization": f"Bearer {HOOKS}"},
            )
            assert response.status == 200, await response.text()
            dlq_ids.add((await response.json())["dlq_id"])
            answered += 1
        removed = await asyncio.gather(*purges)
        assert sum(removed) > 0
        await store.purge(time.time(), settings.event_retention)  # what the others left
        await services.pollers.flush_events()

    # Answered while it ran, not after it: the purge never held the hooks up for its
    # whole run (each hook takes a few ms; four hundred batches take far longer).
    assert answered >= 10, answered
    with psycopg.connect(empty_dsn) as conn:
        old = conn.execute("SELECT count(*) FROM hook_events WHERE task_name = 'old.task'")
        assert old.fetchone() == (0,)
        kept = conn.execute("SELECT count(*) FROM hook_events WHERE task_name <> 'old.task'")
        assert kept.fetchone() == (answered,)  # what was answered meanwhile is history
        stored = conn.execute("SELECT id FROM dlq_records").fetchall()
    assert {dlq_id for (dlq_id,) in stored} == dlq_ids
    assert len(dlq_ids) == answered


async def test_flushes_at_once_store_each_event_once(tmp_path):
    """The poller's flush and another (the last one at shutdown) overlapping: a flush pops
    its events only once stored, so the second must wait for the first, not store them
    again."""
    settings = Settings(data_dir=tmp_path, tokens=TOKENS, reload_interval=0, poll_interval=3600)
    app = create_app(settings, registry=CollectorRegistry())
    async with TestClient(TestServer(app)) as client:
        for i in range(300):
            response = await client.post(
                "/v1/hooks/failure",
                json=dead_letter(task_id=f"flush-{i}"),
                headers={"Authorization": f"Bearer {HOOKS}"},
            )
            assert response.status == 200
        pollers = app[SERVICES].pollers
        await asyncio.gather(pollers.flush_events(), pollers.flush_events())
        stored = app[SERVICES].stores.dlq.events(0, time.time() + 60)
        task_ids = [json.loads(row["event"])["task_id"] async for rows in stored for row in rows]
    assert sorted(task_ids) == sorted(f"flush-{i}" for i in range(300))
