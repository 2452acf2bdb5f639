"""What every Triggers service shares."""

from triggers_common import metrics_switch as metrics_switch  # first: TRIGGERS_METRICS applies to every metric
