"""Core state (breakers, outcome windows) as bytes, for the backends that store bytes."""

from __future__ import annotations

import msgspec

from ..policy.breaker import BreakerState, Status
from ..policy.poison import Runs
from ..policy.window import Window

_breaker_encoder = msgspec.msgpack.Encoder()


def encode_breaker(state: BreakerState) -> bytes:
    return _breaker_encoder.encode(
        (state.status.value, state.opened_at, state.window.buckets, state.probes, state.probe_at)
    )


def decode_breaker(data: bytes) -> BreakerState:
    status, opened_at, buckets, probes, probe_at = msgspec.msgpack.decode(data)
    return BreakerState(
        Status(status), opened_at, Window(tuple(map(tuple, buckets))), probes, probe_at
    )


def encode_window(window: Window) -> bytes:
    return _breaker_encoder.encode(window.buckets)


def decode_window(data: bytes) -> Window:
    return Window(tuple(map(tuple, msgspec.msgpack.decode(data))))


_runs_decoder = msgspec.msgpack.Decoder(Runs)


def encode_runs(runs: Runs) -> bytes:
    return _breaker_encoder.encode(runs)


def decode_runs(data: bytes) -> Runs:
    return _runs_decoder.decode(data)
