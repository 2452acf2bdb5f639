"""The ``triggers`` command: run a target, migrate, create topics, manage keys."""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
from triggers_common.auth import DEFAULT_SCOPES, SCOPES, create_key, set_tenant_rate_limit
from triggers_common.db import create_pool, migrate
from triggers_common.kafka import ensure_topics
from triggers_common.logs import configure_logging
from triggers_common.runtime import migration_sources
from triggers_common.settings import load_settings


def _run(args: argparse.Namespace) -> int:
    import uvicorn

    from triggers.server import TARGETS, create_app
    from triggers.workers import run_workers

    settings = load_settings()
    configure_logging(settings.log_level)
    if args.target != "all" and args.target not in TARGETS:
        print(f"unknown target {args.target!r}", file=sys.stderr)
        return 2
    workers = args.workers or settings.workers
    options: dict[str, Any] = {
        "host": args.host or settings.http_host,
        "port": args.port or settings.http_port,
        "loop": "uvloop",
        "http": "httptools",
        "access_log": False,
        "proxy_headers": False,  # client IPs come from the socket; X-Forwarded-For only via TRIGGERS_TRUSTED_PROXIES
        "log_config": None,
        "timeout_graceful_shutdown": 10,
    }
    if workers == 1:
        uvicorn.run(create_app(args.target, settings), **options)
        return 0
    # Several processes, each with its own socket on the port, join the same consumer groups; their metrics
    # meet in one folder.
    os.environ["TRIGGERS_TARGET"] = args.target
    metrics_dir = Path(tempfile.mkdtemp(prefix="triggers-metrics-"))
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    try:
        return run_workers(workers, {"app": "triggers.server:create_app_from_env", "factory": True, **options})
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


async def _migrate() -> int:
    from triggers_common.runtime import Runtime

    from triggers.server import TARGETS, create_app  # noqa: F401 - components own their migrations

    settings = load_settings()
    rt = Runtime(settings)
    components = [factory(rt) for factory in TARGETS.values()]
    pool = await create_pool(settings)
    async with pool.acquire() as conn:
        for name in await migrate(conn, migration_sources(components)):
            print(f"applied {name}")
    await pool.close()
    return 0


async def _topics() -> int:
    settings = load_settings()
    await ensure_topics(settings)
    print(f"topics ready: {settings.events_topic}, {settings.status_topic}, {settings.deadletter_topic}")
    return 0


async def _keys_create(args: argparse.Namespace) -> int:
    settings = load_settings()
    scopes = args.scopes.split(",") if args.scopes else list(DEFAULT_SCOPES)
    pool = await create_pool(settings, deadline_s=10)
    try:
        async with pool.acquire() as conn:
            created = await create_key(
                conn,
                args.tenant,
                scopes,
                name=args.name or "",
                rate_limit=args.rate_limit,
                allowed_ips=args.allowed_ips.split(",") if args.allowed_ips else None,
                signing_secret=args.signing_secret,
                require_signature=args.require_signature,
            )
    except ValueError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    finally:
        await pool.close()
    if args.json:
        print(msgspec.json.encode(created).decode())
    else:
        print(created.key)
        print(
            f"key_id={created.key_id} tenant={created.tenant_id} scopes={','.join(created.scopes)}",
            file=sys.stderr,
        )
    return 0


async def _keys_list(args: argparse.Namespace) -> int:
    from triggers_common.key_admin import list_keys

    pool = await create_pool(load_settings(), deadline_s=10)
    try:
        async with pool.acquire() as conn:
            keys = await list_keys(conn, args.tenant)
    finally:
        await pool.close()
    if args.json:
        print(msgspec.json.encode(keys).decode())
        return 0
    for k in keys:
        expires = f" expires={k.expires_at.isoformat()}" if k.expires_at else ""
        print(f"{k.key_id}  {k.status:<8}  v{k.version}  scopes={','.join(k.scopes)}  name={k.name!r}{expires}")
    return 0


async def _keys_revoke(args: argparse.Namespace) -> int:
    from triggers_common.key_admin import revoke_key

    pool = await create_pool(load_settings(), deadline_s=10)
    try:
        async with pool.acquire() as conn:
            info = await revoke_key(conn, None, args.key_id, "cli")
    finally:
        await pool.close()
    if info is None:
        print(f"no key {args.key_id}", file=sys.stderr)
        return 1
    print(f"{info.key_id} revoked (tenant {info.tenant_id})")
    return 0


async def _tenants_create(args: argparse.Namespace) -> int:
    pool = await create_pool(load_settings(), deadline_s=10)
    try:
        async with pool.acquire() as conn:
            await set_tenant_rate_limit(conn, args.name, args.rate_limit)
    finally:
        await pool.close()
    print(args.name)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="triggers", description="Triggers event platform")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="serve a target (all, ingest, inbox, webhooks, analytics)")
    run.add_argument("--target", default=os.environ.get("TRIGGERS_TARGET", "all"))
    run.add_argument("--host", default=None)
    run.add_argument("--port", type=int, default=None)
    run.add_argument("--workers", type=int, default=None, help="processes sharing the port (default 1)")

    sub.add_parser("migrate", help="apply database migrations")
    sub.add_parser("topics", help="create the Kafka topics")

    keys = sub.add_parser("keys", help="manage API keys").add_subparsers(dest="keys_command", required=True)
    create = keys.add_parser("create", help="create a key (and its tenant) and print it once")
    create.add_argument("--tenant", required=True)
    create.add_argument("--scopes", default=None, help=f"comma-separated, of: {', '.join(SCOPES)}")
    create.add_argument("--name", default=None)
    create.add_argument("--rate-limit", type=int, default=None, help="requests per minute (default 1000)")
    create.add_argument("--allowed-ips", default=None, help="comma-separated IPs/CIDRs the key may call from")
    create.add_argument("--signing-secret", default=None, help="secret for signed requests (X-Signature)")
    create.add_argument("--require-signature", action="store_true", help="refuse unsigned requests")
    create.add_argument("--json", action="store_true", help="print the key and its id as JSON")
    listing = keys.add_parser("list", help="list a tenant's keys (never the keys themselves)")
    listing.add_argument("--tenant", required=True)
    listing.add_argument("--json", action="store_true")
    revoke = keys.add_parser("revoke", help="revoke a key: every replica refuses it within moments")
    revoke.add_argument("key_id")

    tenants = sub.add_parser("tenants", help="manage tenants").add_subparsers(dest="tenants_command", required=True)
    tenant = tenants.add_parser("create", help="create a tenant (or update its cap)")
    tenant.add_argument("name")
    tenant.add_argument("--rate-limit", type=int, default=None, help="requests per minute across all its keys")
    label = tenants.add_parser("label", help="print the tenant's label in metrics (a keyed hash of its name)")
    label.add_argument("name")

    args = parser.parse_args(argv)
    try:
        if args.command == "run":
            return _run(args)
        if args.command == "migrate":
            return asyncio.run(_migrate())
        if args.command == "topics":
            return asyncio.run(_topics())
        if args.command == "tenants" and args.tenants_command == "label":
            print(load_settings().tenant_label(args.name))
            return 0
        if args.command == "tenants":
            return asyncio.run(_tenants_create(args))
        if args.keys_command == "list":
            return asyncio.run(_keys_list(args))
        if args.keys_command == "revoke":
            return asyncio.run(_keys_revoke(args))
        return asyncio.run(_keys_create(args))
    except ValueError as exc:
        print(f"triggers: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
