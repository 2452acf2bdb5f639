"""The arithmetic of analytics, free of I/O: hour buckets, the ack-latency histogram, and what a batch of status
transitions adds to the counters."""

from __future__ import annotations

import math
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import datetime

import msgspec

LATENCY_BUCKETS = 128
"""Bucket b holds latencies below 2^(b/4) ms: 0.0 ms up to 2^31.75 ms (about 40 days), each 19 % wider than
the last, so a percentile read from them is at most 19 % above the true one."""


def hour_of(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def latency_bucket(ms: float) -> int:
    """The histogram bucket of an ack latency in milliseconds."""
    if ms < 1.0:
        return 0
    return min(math.floor(4 * math.log2(ms)) + 1, LATENCY_BUCKETS - 1)


def bucket_bound_ms(bucket: int) -> float:
    """The upper bound of ``bucket`` in milliseconds."""
    return float(2 ** (bucket / 4))


def percentiles(histogram: Mapping[int, int], wanted: Iterable[float]) -> dict[float, float] | None:
    """Nearest-rank percentiles (e.g. 0.5, 0.99) of a histogram, as bucket upper bounds; None if it is empty."""
    total = sum(histogram.values())
    if total == 0:
        return None
    ordered = sorted(histogram.items())
    out: dict[float, float] = {}
    for q in wanted:
        rank = max(1, math.ceil(q * total))
        seen = 0
        for bucket, count in ordered:
            seen += count
            if seen >= rank:
                out[q] = round(bucket_bound_ms(bucket), 1)
                break
    return out


class Transition(msgspec.Struct, frozen=True):
    """An ack or delete from ``triggers.event-status.v1``, with the hour its event was created in."""

    event_id: uuid.UUID
    tenant_id: str
    hour: datetime
    status: str
    latency_ms: float
    """From the event's creation to this transition."""


class EventState(msgspec.Struct):
    acknowledged: bool = False
    deleted: bool = False


class StatusDeltas(msgspec.Struct):
    acknowledged: Counter[tuple[str, datetime]]
    deleted: Counter[tuple[str, datetime]]
    latency: Counter[tuple[str, datetime, int]]
    states: dict[uuid.UUID, EventState]
    """The new state of every event the batch changed."""


def apply_transitions(known: Mapping[uuid.UUID, EventState], transitions: Iterable[Transition]) -> StatusDeltas:
    """What ``transitions`` (in topic order) add, given what was already counted for their events.

    An event counts as acknowledged once, at its first ack; as deleted once, and only if it was never
    acknowledged (a deleted event cannot be acknowledged afterwards). Anything already counted changes nothing,
    so a redelivered transition is harmless.
    """
    deltas = StatusDeltas(Counter(), Counter(), Counter(), {})
    for t in transitions:
        state = deltas.states.get(t.event_id) or msgspec.structs.replace(known.get(t.event_id) or EventState())
        if t.status == "acknowledged" and not state.acknowledged and not state.deleted:
            state.acknowledged = True
            deltas.acknowledged[t.tenant_id, t.hour] += 1
            deltas.latency[t.tenant_id, t.hour, latency_bucket(t.latency_ms)] += 1
        elif t.status == "deleted" and not state.deleted:
            state.deleted = True
            if not state.acknowledged:
                deltas.deleted[t.tenant_id, t.hour] += 1
        else:
            continue
        deltas.states[t.event_id] = state
    return deltas
