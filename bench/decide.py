"""decide() cost per event, as a ratio to json.loads of the same event, measured side by side.

    .venv/bin/python bench/decide.py [--rounds 15]

Prints, for the default policy and for one with 500 rules, the median cost of decide()
per event divided by the median cost of json.loads on the same event bytes (a baseline
every Python service pays). Target: ≤ 2×. Absolute times are printed for context only:
the machines are shared and noisy; the ratio is the figure.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

import msgspec

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sidecar.policy import EMPTY, FailureEvent, decide, parse_policy  # noqa: E402

TRACEBACK = "".join(
    f'  File "/app/tasks/module_{i}.py", line {10 * i}, in step_{i}\n    result = step_{i + 1}()\n'
    for i in range(12)
)

# The failures a worker fleet really sends: a mix of families, each with a traceback.
EXCEPTIONS = [
    (
        "DeadlockDetected",
        "psycopg.errors",
        [
            "psycopg.errors.DeadlockDetected",
            "psycopg.errors.OperationalError",
            "psycopg.DatabaseError",
            "psycopg.Error",
            "builtins.Exception",
        ],
        "deadlock detected\nDETAIL: Process 1 waits for ShareLock",
        None,
    ),
    (
        "ReadTimeout",
        "requests.exceptions",
        [
            "requests.exceptions.ReadTimeout",
            "requests.exceptions.Timeout",
            "requests.exceptions.RequestException",
            "builtins.OSError",
            "builtins.Exception",
        ],
        "HTTPSConnectionPool(host='api.example.com', port=443): Read timed out.",
        None,
    ),
    (
        "HTTPError",
        "requests.exceptions",
        [
            "requests.exceptions.HTTPError",
            "requests.exceptions.RequestException",
            "builtins.OSError",
            "builtins.Exception",
        ],
        "503 Server Error: Service Unavailable for url: https://api.example.com/v1",
        503,
    ),
    ("ValueError", "builtins", ["builtins.ValueError", "builtins.Exception"], "Invalid data", None),
    (
        "DoesNotExist",
        "shop.models",
        [
            "shop.models.Order.DoesNotExist",
            "django.core.exceptions.ObjectDoesNotExist",
            "builtins.Exception",
        ],
        "Order matching query does not exist.",
        None,
    ),
    (
        "ConnectionError",
        "redis.exceptions",
        ["redis.exceptions.ConnectionError", "redis.exceptions.RedisError", "builtins.Exception"],
        "Error 111 connecting to localhost:6379. Connection refused.",
        None,
    ),
]
TASKS = [
    "billing.process_payment",
    "reports.daily_summary",
    "app.tasks.sync_inventory",
    "notify.send_email",
    "maintenance.cleanup_sessions",
]


def events() -> list[bytes]:
    out = []
    for i, (type_, module, mro, message, status) in enumerate(EXCEPTIONS * 5):
        event = {
            "task_id": f"6f1c2d3e-{i:04d}-4a5b-9c8d-0123456789ab",
            "task_name": TASKS[i % len(TASKS)],
            "queue": "default",
            "attempt": i % 4,
            "exception": {
                "type": type_,
                "module": module,
                "mro": mro,
                "message": message,
                "traceback": TRACEBACK,
                "errno": None,
                "http_status": status,
            },
            "context": {
                "customer_tier": ["enterprise", "standard", "basic"][i % 3],
                "enqueued_at": 1764345600.0 - 600 * i,
                "queue_depth": 40 + 10 * i,
            },
            "args": [i, "order-123"],
            "kwargs": {"currency": "EUR", "amount": 1999},
        }
        out.append(json.dumps(event).encode())
    return out


def policy_with_extra_rules(count: int) -> str:
    """The default policy plus `count` synthetic rules of the kinds real files grow."""
    text = (ROOT / "policies.yaml").read_text()
    types = [
        "TRANSIENT_NETWORK",
        "EXTERNAL_API_ERROR",
        "PERMANENT_VALIDATION",
        "TRANSIENT_DATABASE",
        "CONFIG_INVALID_SETTING",
    ]
    rules = []
    for i in range(count):
        kind = i % 4
        match = [
            f'exception: ["*Vendor{i}Error*", "vendor{i}.errors.*"]',
            f'message: "(?i)vendor {i} (failed|refused|rejected) request [0-9]+"',
            f'exception: ["Service{i}Exception"]\n        http_status: ["{400 + i % 100}-599"]',
            f'task: ["vendor{i}.*"]\n        exception: ["*Error"]',
        ][kind]
        rules.append(
            f"    - name: synthetic-{i}\n      failure_type: {types[i % len(types)]}\n"
            f"      confidence: {0.5 + (i % 40) / 100:.2f}\n      match:\n        {match}\n"
        )
    marker = "  rules:\n"
    return text.replace(marker, marker + "".join(rules), 1)


def median_ns(fn, items, rounds: int) -> float:
    """Median over rounds of the mean cost per item of one pass."""
    samples = []
    for _ in range(rounds):
        start = time.perf_counter_ns()
        for item in items:
            fn(item)
        samples.append((time.perf_counter_ns() - start) / len(items))
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    raw = events()
    decoded = [msgspec.json.decode(r, type=FailureEvent) for r in raw]
    rng = random.Random(42)
    now = time.time()
    default_text = (ROOT / "policies.yaml").read_text()
    base_rules = default_text.count("  - name: ")
    print(f"{len(raw)} events, {sum(map(len, raw)) // len(raw)} bytes each on average")
    print(f"{'policy':<22}{'rules':>6}{'json.loads':>14}{'decide':>12}{'ratio':>8}")
    for label, text in (
        ("default", default_text),
        ("500 rules", policy_with_extra_rules(500 - base_rules)),
    ):
        policy = parse_policy(text)

        def run(event, policy=policy):
            return decide(event, policy, EMPTY, now, rng)

        run_all = [run(e) for e in decoded]  # warm the memo as a running sidecar would be
        assert len(run_all) == len(decoded)
        # Interleave baseline and subject so drift on a noisy machine hits both alike.
        loads, costs = [], []
        for _ in range(3):
            loads.append(median_ns(json.loads, raw, args.rounds))
            costs.append(median_ns(run, decoded, args.rounds))
        baseline, cost = statistics.median(loads), statistics.median(costs)
        print(
            f"{label:<22}{len(policy.rules):>6}{baseline / 1000:>11.1f} µs"
            f"{cost / 1000:>9.1f} µs{cost / baseline:>7.2f}×"
        )
    decode = median_ns(lambda r: msgspec.json.decode(r, type=FailureEvent), raw, args.rounds)
    baseline = median_ns(json.loads, raw, args.rounds)
    print(f"(msgspec decode + validation of the same event: {decode / baseline:.2f}× json.loads)")


if __name__ == "__main__":
    main()
