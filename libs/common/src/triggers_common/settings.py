"""Typed settings, read once from ``TRIGGERS_*`` environment variables."""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Mapping

import msgspec

ENV_PREFIX = "TRIGGERS_"
DEV_API_KEY = "test-api-key-12345"
DEV_TENANT = "dev"
_DEV_SECRET = "dev-only-secret-do-not-use-in-production"  # noqa: S105 - used only in dev mode


class Settings(msgspec.Struct, kw_only=True, frozen=True):
    """Every knob of every service. Field ``foo_bar`` is read from ``TRIGGERS_FOO_BAR``."""

    dev_mode: bool = False
    """Development mode: creates the dev key ``test-api-key-12345`` for tenant ``dev``. Never in production."""
    secret_key: str = ""
    """Signs inbox cursors. Required outside dev mode; every replica must share it."""

    http_host: str = "127.0.0.1"
    http_port: int = 8080
    workers: int = 1
    """Processes serving one port (``triggers run``); each joins the consumer groups of its target."""
    log_level: str = "INFO"
    version: str = "0.1.0"

    kafka_bootstrap: str = "127.0.0.1:9092"
    events_topic: str = "triggers.events.v1"
    status_topic: str = "triggers.event-status.v1"
    deadletter_topic: str = "triggers.deadletter.v1"
    events_partitions: int = 6
    status_partitions: int = 3
    deadletter_partitions: int = 1
    topic_replication: int = 1
    """Replication factor of the topics the services create when they are missing (3 on a production cluster);
    their ``min.insync.replicas`` is 2 from 3 replicas on, else 1. Existing topics are left as they are."""
    consumer_group_prefix: str = "triggers"
    send_timeout_s: float = 5.0
    """Longest an ingest request waits for the broker's ack before answering 503."""
    producer_linger_ms: int = 2

    database_url: str = "postgresql://triggers@127.0.0.1:5432/triggers"
    db_pool_min: int = 1
    db_pool_max: int = 8
    db_command_timeout_s: float = 10.0

    max_payload_bytes: int = 409_600
    """Largest encoded ``payload`` of one event."""
    max_header_bytes: int = 16 * 1024
    """Largest total size of request headers on authenticated routes (400 above)."""
    max_body_bytes: int = 10 * 1024 * 1024
    """Largest request body any route accepts."""

    idempotency_ttl_s: float = 86_400.0
    """How long an idempotency key is remembered per tenant."""
    idempotency_purge_interval_s: float = 300.0
    """How often the ingest component deletes expired idempotency keys (in batches of 1,000)."""
    bulk_max_items: int = 1000

    inbox_batch_max: int = 1000
    """Most records the inbox consumer writes in one transaction."""
    read_your_writes_window_s: float = 10.0
    """How long after its creation an event not yet in the inbox is waited for instead of answering 404."""
    inbox_max_leases: int = 5
    """Leases an event gets without an ack; the next lease attempt quarantines it instead."""
    inbox_acked_retention_s: float = 7 * 86_400.0
    """How long acknowledged events are kept (from their ack) before the purge job removes them."""
    inbox_pending_retention_s: float = 30 * 86_400.0
    """How long unacknowledged (pending or quarantined) events and delete markers are kept (from creation)."""
    inbox_purge_interval_s: float = 300.0
    """How often the inbox component runs its retention purge (in batches of 1,000)."""
    inbox_stats_interval_s: float = 15.0
    """How often the inbox component refreshes the depth and oldest-pending-age gauges."""

    analytics_dedupe_window_s: float = 8 * 86_400.0
    """How long the analytics consumers remember a counted event id, so that a redelivered or replayed record
    counts once. Keep it above the events topic's retention (7 days by default): older records cannot come back.
    An event's counted acknowledgement and deletion are remembered this long after its inbox retention."""
    analytics_purge_interval_s: float = 300.0
    """How often the analytics component forgets event ids older than that window (in batches of 1,000)."""

    webhooks_allow_private: bool | None = None
    """Allow webhook URLs that resolve to loopback, private, link-local or metadata addresses (default: only
    in dev mode, so a receiver on 127.0.0.1 works out of the box)."""

    webhook_retry_schedule_s: str = "5,300,1800,7200,18000,36000,36000"
    """Seconds before each retry of a failed delivery (±20 % jitter); after the last, the delivery fails."""
    webhook_disable_after_s: float = 5 * 86_400.0
    """A webhook whose attempts have all failed for this long is disabled."""
    webhook_timeout_s: float = 15.0
    """A delivery succeeds if the receiver answers 2xx within this long."""
    webhook_breaker_failures: int = 5
    """Failed attempts in a row after which a webhook's circuit breaker opens (per process)."""
    webhook_breaker_cooldown_s: float = 30.0
    """How long an open breaker holds a webhook's deliveries back before one probe; doubles after each failed
    probe, up to 10 min."""
    webhook_concurrency: int = 200
    """Deliveries in flight at once per process."""
    webhook_endpoint_concurrency: int = 10
    """Deliveries in flight at once per webhook and process: a slow endpoint never takes every slot."""

    default_rate_limit: int = 1000
    """Requests per minute for a key without its own ``rate_limit``."""
    tenant_rate_limit: int = 60_000
    """Requests per minute across all keys of a tenant without its own cap."""
    trusted_proxies: str = ""
    """Comma-separated CIDRs of proxies whose ``X-Forwarded-For`` is believed."""

    key_cache_ttl_s: float = 5.0
    """Longest a cached API key lookup is trusted before it is read again."""

    def __post_init__(self) -> None:
        if not self.dev_mode and not self.secret_key:
            raise ValueError("TRIGGERS_SECRET_KEY must be set outside dev mode")

    @property
    def webhook_retries(self) -> tuple[float, ...]:
        return tuple(float(x) for x in self.webhook_retry_schedule_s.split(",") if x.strip())

    @property
    def private_webhooks_allowed(self) -> bool:
        return self.dev_mode if self.webhooks_allow_private is None else self.webhooks_allow_private

    @property
    def cursor_secret(self) -> bytes:
        return (self.secret_key or _DEV_SECRET).encode()

    def tenant_label(self, tenant_id: str) -> str:
        """A tenant's name in metric labels: /metrics is open, so it shows a keyed hash, never the tenant id.
        ``triggers tenants label NAME`` prints it."""
        digest = hmac.new(self.cursor_secret, b"metrics-label:" + tenant_id.encode(), hashlib.sha256)
        return "t_" + digest.hexdigest()[:12]


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Build :class:`Settings` from the environment; unknown ``TRIGGERS_*`` variables are ignored."""
    env = os.environ if environ is None else environ
    values = {k[len(ENV_PREFIX) :].lower(): v for k, v in env.items() if k.startswith(ENV_PREFIX)}
    try:
        return msgspec.convert(values, Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise ValueError(f"invalid settings: {exc}") from exc
