"""Collectors of numbers shared by every worker (read from the database) join and leave /metrics."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import REGISTRY
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from triggers_common.http import register_collector, unregister_collector


class Depth(Collector):
    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily("triggers_test_depth", "A number read elsewhere", value=3)


def test_a_collector_joins_and_leaves_and_leaving_twice_or_unjoined_is_harmless() -> None:
    depth = Depth()
    unregister_collector(depth)  # a component whose start failed before it registered still stops cleanly
    register_collector(depth)
    assert REGISTRY.get_sample_value("triggers_test_depth") == 3
    unregister_collector(depth)
    unregister_collector(depth)
    assert REGISTRY.get_sample_value("triggers_test_depth") is None
