"""Composition: which components a ``--target`` runs, in one Litestar app and one process."""

from __future__ import annotations

import os
from collections.abc import Callable

from litestar import Litestar
from opentelemetry.sdk.trace import TracerProvider
from triggers_analytics.app import create_component as analytics
from triggers_common.http import Component, build_app
from triggers_common.logs import configure_logging
from triggers_common.runtime import Runtime
from triggers_common.settings import Settings, load_settings
from triggers_common.telemetry import tracer_provider_from_env
from triggers_inbox.app import create_component as inbox
from triggers_ingest.app import create_component as ingest
from triggers_webhooks.app import create_component as webhooks

TARGETS: dict[str, Callable[[Runtime], Component]] = {
    "ingest": ingest,
    "inbox": inbox,
    "webhooks": webhooks,
    "analytics": analytics,
}


def create_app_from_env() -> Litestar:
    """Entry point for worker processes: the target and settings come from the environment."""
    settings = load_settings()
    configure_logging(settings.log_level)
    return create_app(os.environ.get("TRIGGERS_TARGET", "all"), settings)


def create_app(
    target: str = "all", settings: Settings | None = None, tracer_provider: TracerProvider | None = None
) -> Litestar:
    """The app for one target, or for ``all`` of them side by side. Its spans go to ``tracer_provider``, by
    default to what the ``OTEL_*`` variables configure (nothing unless they name an exporter): each process,
    worker processes included, sets up its own."""
    settings = settings or load_settings()
    names = list(TARGETS) if target == "all" else [target]
    if any(name not in TARGETS for name in names):
        raise ValueError(f"unknown target {target!r}; choose all, {', '.join(TARGETS)}")
    if tracer_provider is None:
        tracer_provider = tracer_provider_from_env(
            "triggers" if target == "all" else f"triggers-{target}", settings.version
        )
    rt = Runtime(settings, tracer_provider)
    components = [TARGETS[name](rt) for name in names]

    async def open_runtime() -> None:
        await rt.open(components)

    async def close_runtime() -> None:
        await rt.close(components)

    return build_app(settings, components, rt.ready, on_startup=[open_runtime], on_shutdown=[close_runtime])
