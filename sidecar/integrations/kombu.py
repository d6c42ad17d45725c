"""What the sidecar knows of Celery's messages on kombu, in one place: the header that
names a DLQ record, how our priority levels become message priorities, and where the
Redis transport keeps a queue's messages (for the queue-depth probe).

Pure functions and constants: no Celery import, so the sidecar uses them without the
`celery` extra and the worker integration shares them.
"""

from __future__ import annotations

from collections.abc import Sequence

DLQ_HEADER = "task_sidecar_dlq_id"  # set on DLQ retries; the success hook resolves it

# Celery's Redis transport keeps priorities 3, 6 and 9 in sub-queues named
# "<queue>\x06\x16<priority>" beside the queue itself (kombu's priority_steps).
REDIS_PRIORITY_SUFFIXES = ("", "\x06\x163", "\x06\x166", "\x06\x169")


def lowest_first(broker_url: str) -> bool:
    """On Redis, kombu treats 0 as the highest priority (RabbitMQ: the highest number)."""
    return broker_url.startswith(("redis://", "rediss://", "sentinel://", "redis+socket://"))


def message_priority(priority: int, broker_url: str) -> int:
    """Our levels (CRITICAL 10 … DEFERRED 2) as a message priority for this broker:
    turned around on Redis (0-9), as they are on RabbitMQ (0-255)."""
    if lowest_first(broker_url):
        return max(0, min(9, 10 - int(priority)))
    return max(0, min(255, int(priority)))


def redis_lists(queue: str) -> list[str]:
    """The Redis lists that together hold a queue's waiting messages."""
    return [queue + suffix for suffix in REDIS_PRIORITY_SUFFIXES]


def queue_depths(queues: Sequence[str], lengths: Sequence[int]) -> dict[str, int]:
    """Per queue, the sum of its lists' lengths (`lengths` in `redis_lists` order)."""
    step = len(REDIS_PRIORITY_SUFFIXES)
    return {queue: sum(lengths[i * step : (i + 1) * step]) for i, queue in enumerate(queues)}
