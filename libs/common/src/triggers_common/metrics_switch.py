"""``TRIGGERS_METRICS=false`` turns every Prometheus metric of the process into a no-op and ``/metrics`` into a
404: to measure what the metrics cost, or where nothing scrapes them. On by default.

Metrics are module-level objects, so the switch is read once, when ``triggers_common`` is first imported,
before any metric exists (the package's ``__init__`` imports this module first).
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import values

ENABLED = os.environ.get("TRIGGERS_METRICS", "true").strip().lower() not in ("0", "false", "no", "off")


class _NoValue:
    """A metric value that keeps nothing (prometheus_client's value interface)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def inc(self, amount: float) -> None:
        pass

    def set(self, value: float, timestamp: float | None = None) -> None:
        pass

    def set_exemplar(self, exemplar: Any) -> None:
        pass

    def get(self) -> float:
        return 0.0

    def get_exemplar(self) -> None:
        return None


if not ENABLED:
    values.ValueClass = _NoValue
