"""The classifier's memo: bounded whatever clients send, and never changing an answer.

Clients choose exception types, MROs and task names; the memo of candidate rules keeps
at most `MEMO_ENTRIES` of them and `MEMO_KEY_BYTES` of their text, shares one candidate
list between every entry with the same candidates, and compiles nothing per entry.
"""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.policy import load_policy
from sidecar.policy.classify import MEMO_ENTRIES, MEMO_KEY_BYTES, Classifier
from sidecar.policy.events import ExceptionInfo

ROOT = Path(__file__).resolve().parent.parent
POLICY = load_policy(ROOT / "policies.yaml")
ROWS = [
    msgspec.convert(json.loads(line)["exception"], ExceptionInfo)
    for line in (ROOT / "tests" / "data" / "exceptions.jsonl").read_text().splitlines()
    if line
]
UNMEMOISED = Classifier(POLICY, memo_entries=0)  # scans every time: the reference


def novel(i: int, message: str = "boom") -> ExceptionInfo:
    return ExceptionInfo(
        type=f"Novel{i}Error",
        module=f"vendor{i}.errors",
        mro=(f"vendor{i}.errors.Novel{i}Error", "builtins.ValueError", "builtins.Exception"),
        message=message,
    )


def test_10000_novel_types_keep_the_memo_within_its_bounds():
    classifier = Classifier(POLICY)
    answers = {classifier.classify(novel(i), f"tasks.t{i}").failure_type for i in range(10_000)}
    entries, key_bytes, shared = classifier.memo_stats()
    assert entries == MEMO_ENTRIES
    assert key_bytes <= MEMO_KEY_BYTES
    assert shared <= 3  # every novel ValueError has the same candidates
    assert answers == {"PERMANENT_VALIDATION"}


def test_long_keys_are_bounded_by_bytes_not_only_entries():
    classifier = Classifier(POLICY, memo_entries=1000, memo_bytes=64 * 1024)
    deep = tuple(f"pkg.m{j}.Base{j}Error" for j in range(200))  # ~6 KB of names per key
    for i in range(100):
        exc = ExceptionInfo(type=f"E{i}", mro=(f"pkg.E{i}", *deep, "builtins.Exception"))
        classifier.classify(exc, "t")
    entries, key_bytes, _ = classifier.memo_stats()
    assert key_bytes <= 64 * 1024
    assert 0 < entries < 100


def test_the_least_recently_used_entry_goes_first():
    classifier = Classifier(POLICY, memo_entries=2)
    first, second, third = novel(1), novel(2), novel(3)
    classifier.classify(first, "t")
    classifier.classify(second, "t")
    classifier.classify(first, "t")  # used again: `second` is now the oldest
    classifier.classify(third, "t")
    keys = list(classifier._memo._items)
    assert [key[0] for key in keys] == ["Novel1Error", "Novel3Error"]


@settings(max_examples=60, deadline=None)
@given(
    picks=st.lists(st.integers(0, len(ROWS) - 1), min_size=1, max_size=30),
    message=st.sampled_from(["", "deadlock detected", "connection refused", "Invalid data"]),
)
def test_a_tiny_memo_answers_like_a_fresh_classifier(picks, message):
    """Evictions and shared candidate lists never change a classification."""
    tiny = Classifier(POLICY, memo_entries=2)
    for pick in picks:
        exc = msgspec.structs.replace(ROWS[pick], message=message or ROWS[pick].message)
        assert tiny.classify(exc, "app.t") == UNMEMOISED.classify(exc, "app.t")
    assert UNMEMOISED.memo_stats()[0] == 0
