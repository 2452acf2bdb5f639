"""The ingest gateway's idempotency statements against the real Postgres: batched claims and the purge."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from triggers_common.db import Pool
from triggers_common.models import new_event_id
from triggers_ingest import store

pytestmark = pytest.mark.integration

DAY = timedelta(days=1)


def bid(tenant: str, key: str, body: bytes = b"h") -> store.Claim:
    return store.Claim(tenant, key, body.ljust(32, b"."), *new_event_id())


async def test_one_batch_claims_each_key_once_across_tenants(pool: Pool) -> None:
    a, b = f"t-{uuid.uuid4().hex[:8]}", f"t-{uuid.uuid4().hex[:8]}"
    bids = [bid(a, "k1"), bid(b, "k1"), bid(a, "k1"), bid(a, "k2")]
    rows = await store.claim_keys(pool, bids, DAY)
    assert [r is not None and r.claimed for r in rows] == [True, True, False, True]
    assert rows[2] is not None and rows[2].event_id == bids[0].event_id  # the twin sees the first claim
    again = await store.claim_keys(pool, [bid(a, "k1"), bid(b, "k1", b"other")], DAY)
    assert [(r.claimed, r.event_id) for r in again if r] == [(False, bids[0].event_id), (False, bids[1].event_id)]
    assert again[1] is not None and again[1].request_hash != b"other".ljust(32, b".")


async def test_completion_and_release_touch_only_the_claims_named(pool: Pool) -> None:
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    first, second = bid(tenant, "k1"), bid(tenant, "k2")
    await store.claim_keys(pool, [first, second], DAY)
    await store.complete_keys(pool, [first, store.Claim(tenant, "k2", b"", *new_event_id())])  # wrong event id
    rows = await store.claim_keys(pool, [bid(tenant, "k1"), bid(tenant, "k2")], DAY)
    assert rows[0] is not None and rows[0].completed_at is not None
    assert rows[1] is not None and rows[1].completed_at is None
    await store.release_keys(pool, [first, second])  # a completed claim is never released
    rows = await store.claim_keys(pool, [bid(tenant, "k1"), bid(tenant, "k2")], DAY)
    assert rows[0] is not None and rows[0].completed_at is not None and rows[0].claimed_at.year > 1970
    assert rows[1] is not None and rows[1].claimed_at.year == 1970


async def test_an_expired_key_is_claimed_anew_and_purged_while_unexpired_ones_stay(pool: Pool) -> None:
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    old = bid(tenant, "old")
    await store.claim_keys(pool, [old, bid(tenant, "kept")], DAY)
    await pool.execute(
        "UPDATE idempotency_keys SET expires_at = now() - interval '1 s' WHERE tenant_id = $1 AND idempotency_key = $2",
        tenant,
        "old",
    )
    renewed = (await store.claim_keys(pool, [newer := bid(tenant, "old", b"new body")], DAY))[0]
    assert renewed is not None and renewed.claimed and renewed.event_id == newer.event_id != old.event_id

    await store.claim_keys(pool, [bid(tenant, f"gone-{i}") for i in range(5)], -DAY)  # born expired
    while await store.purge_expired_keys(pool, 2):  # small batches, as the job runs them
        pass
    left = await pool.fetch("SELECT idempotency_key FROM idempotency_keys WHERE tenant_id = $1", tenant)
    assert sorted(r[0] for r in left) == ["kept", "old"]


def _hash(text: bytes) -> bytes:
    return text.ljust(32, b".")


async def test_bodies_compare_by_body_hash_or_by_the_compact_hash_of_older_claims(pool: Pool) -> None:
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    h = _hash
    await store.claim_keys(
        pool,
        [
            store.Claim(tenant, "now", h(b"compact-a"), *new_event_id(), h(b"body-a")),
            store.Claim(tenant, "before", h(b"compact-a"), *new_event_id()),  # claimed by the previous version
        ],
        DAY,
    )
    respelled = store.Claim(tenant, "now", h(b"compact-b"), *new_event_id(), h(b"body-a"))
    other = store.Claim(tenant, "now", h(b"compact-a"), *new_event_id(), h(b"body-b"))
    now, before = await store.claim_keys(
        pool, [respelled, store.Claim(tenant, "before", h(b"x"), *new_event_id())], DAY
    )
    assert now is not None and now.body_hash == h(b"body-a") and now.request_hash == h(b"compact-a")
    assert respelled.same_body(now) and not other.same_body(now)  # the same event however spelled, not the bytes
    assert before is not None and before.body_hash is None
    assert store.Claim(tenant, "before", h(b"compact-a"), *new_event_id(), h(b"body-z")).same_body(before)
    assert not respelled.same_body(before)  # only the compact JSON can tell for an older claim
