"""TRIGGERS_METRICS=false makes every metric a no-op (in a fresh process: the switch is read at import)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

SCRIPT = """
import triggers_common.kafka as kafka
from prometheus_client import generate_latest
kafka.PRODUCE_SECONDS.observe(0.003)
kafka.LAG.labels("g", "0").set(7)
print(generate_latest().decode())
"""


@pytest.mark.parametrize(
    ("switch", "count", "lag"), [("true", "1.0", "7.0"), ("false", "0.0", "0.0"), ("", "1.0", "7.0")]
)
def test_metrics_can_be_switched_off(switch: str, count: str, lag: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"} | {"TRIGGERS_METRICS": switch}
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, check=True).stdout
    assert f"triggers_kafka_produce_seconds_count {count}" in out
    assert f'triggers_consumer_lag_records{{group="g",partition="0"}} {lag}' in out
