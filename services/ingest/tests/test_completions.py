"""Finished idempotency claims: answered from memory at once, written to Postgres later, never dropped when a
write fails or is cancelled."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from triggers_common.models import new_event_id
from triggers_ingest.publish import Completions
from triggers_ingest.store import Claim


class StandInPool:
    """Records each completion statement's keys; fails while ``failing`` is set, hangs while ``hanging``."""

    def __init__(self) -> None:
        self.written: list[list[str]] = []
        self.failing = False
        self.hanging = False

    async def execute(self, sql: str, tenants: list[str], keys: list[str], event_ids: list[Any]) -> str:
        if self.hanging:
            await asyncio.sleep(3600)
        if self.failing:
            raise OSError("connection refused")
        self.written.append(keys)
        return f"UPDATE {len(keys)}"


class StandInRuntime:
    def __init__(self) -> None:
        self.relaxed_pool = StandInPool()


def claim(key: str) -> Claim:
    return Claim("acme", key, b"hash", *new_event_id())


async def test_a_failed_or_cancelled_write_keeps_its_claims_for_the_next() -> None:
    rt = StandInRuntime()
    completions = Completions(rt)  # type: ignore[arg-type]
    first, second = claim("a"), claim("b")
    completions.add([first])
    assert completions.find("acme", "a") == first and completions.find("acme", "b") is None

    rt.relaxed_pool.failing = True
    with pytest.raises(OSError):
        await completions.write()
    rt.relaxed_pool.failing = False

    completions.add([second])
    rt.relaxed_pool.hanging = True
    cancelled = asyncio.create_task(completions.write())
    await asyncio.sleep(0)
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    rt.relaxed_pool.hanging = False

    await completions.write()
    assert rt.relaxed_pool.written == [["a", "b"]]  # both, in one statement, once
    await completions.write()
    assert rt.relaxed_pool.written == [["a", "b"]]
