"""Requeue by POSTing the record to a URL the user runs, signed with HMAC-SHA256.

The body is the record as JSON plus the chosen `queue` and `priority`; the header
`X-Task-Sidecar-Signature: t=<unix time>,v1=<hex hmac of "t.body">` lets the receiver
check it came from the sidecar and is fresh (the scheme Stripe and others use)."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Sequence

import aiohttp
import msgspec

from ..records import DlqRecord
from . import RequeueError, Send, one_by_one

SIGNATURE_HEADER = "X-Task-Sidecar-Signature"


def sign(secret: str, body: bytes, timestamp: int) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


class WebhookTarget:
    name = "webhook"

    def __init__(self, url: str, secret: str, timeout: float = 5.0) -> None:
        self.url, self.secret = url, secret
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def requeue(self, record: DlqRecord, queue: str, priority: int) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
        body = msgspec.json.encode(
            {**msgspec.to_builtins(record), "queue": queue or None, "priority": priority}
        )
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(self.secret, body, int(time.time())),
        }
        try:
            async with self._session.post(self.url, data=body, headers=headers) as response:
                if response.status >= 300:
                    raise RequeueError(f"webhook answered {response.status}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise RequeueError(f"webhook: {type(exc).__name__}: {exc}") from exc

    async def requeue_many(self, sends: Sequence[Send]) -> list[RequeueError | None]:
        return await one_by_one(self, sends)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
