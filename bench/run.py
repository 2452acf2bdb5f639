"""Benchmark a running Triggers stack: saturation (wrk), the same with an idempotency key on every other
request, bulk throughput (wrk, batches of 500), a fixed 1,000 events/s, and ingest-to-inbox latency; and, for
comparison, the same wrk saturation against a bare Litestar + aiokafka app (bench/baseline_app.py) and against
the floor, a plain ASGI + aiokafka endpoint in as many processes as the gateway (bench/floor_app.py).

    scripts/bench.sh [--duration 15] [--connections 64] [--rate 1000] [--rate-duration 20] ...

Needs the stack's environment (TRIGGERS_DATABASE_URL, TRIGGERS_KAFKA_BOOTSTRAP) to create the run's tenant and
to read persisted_at from Postgres; scripts/bench.sh provides it. Prints a table and writes
bench/results/<UTC timestamp>.json and bench/results/latest.json. Exits 0 whether or not targets are met, 1 if
the harness itself failed (stack unreachable, a phase got no successful response, ...).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from bench import cpu, inbox, inbox_scale, loadgen, saturation, webhooks
from bench.loadgen import percentile

T = TypeVar("T")

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
LOOPBACK = {"127.0.0.1", "localhost"}
EVENTS_PATH = "/v1/events"
SATURATION_TARGET = 3000.0
CHECKS_TARGET = 5000.0
BULK_TARGET = 50000.0
FIXED_P99_TARGET_MS = 50.0
FIXED_P99_LATER_TARGET_MS = 25.0  # the same measurement against a later milestone's target
INBOX_P99_TARGET_MS = 250.0
CONSUMER_TARGET = 20000.0
INBOX_PAGE_P99_TARGET_MS = 10.0
DELIVERIES_TARGET = 2000.0
BASELINE_SHARE_TARGET_PCT = 70.0
BASELINE_START_TIMEOUT_S = 60.0
FIXED_SOURCE = "bench-fixed"
WRK_SOURCE = "bench-wrk"
WARMUP_SOURCE = "bench-warmup"
SYSTEM_WARMUP_SOURCE = "bench-warmup-system"
BASELINE_SOURCE = "bench-baseline"
CHECKS_SOURCE = "bench-checks"  # also the prefix of the phase's idempotency keys
CHECKS_WARMUP_SOURCE = "bench-warmup-checks"  # keys must not start with "bench-checks-"
BULK_SOURCE = "bench-bulk"
BULK_WARMUP_SOURCE = "bench-warmup-bulk"
CHECKS_LABEL = "single events/s, all checks on (auth, rate limits, idempotency key on half)"
BASELINE_LABEL = "bare Litestar+aiokafka"
FLOOR_LABEL = "floor: plain ASGI+aiokafka"
_PCTS = {"p50": 50.0, "p90": 90.0, "p99": 99.0, "p99.9": 99.9, "max": 100.0}

_EVENT_BODY = (
    '{{"source":"{source}","event_type":"order.created","payload":{{"order_id":"ord_{seq:09d}",'
    '"customer_id":"cus_4821","amount_cents":4999,"currency":"EUR","items":3}},'
    '"metadata":{{"trace_id":"bench","region":"eu-west-1"}}}}'
)


class HarnessError(RuntimeError):
    """The benchmark could not run (as opposed to: it ran and the numbers are bad)."""


@dataclass
class Row:
    """One line of the summary table."""

    metric: str
    value: str
    target: str = ""
    result: str = ""


# A phase: its name, what runs it (args, API key -> JSON), and its table rows.
Phase = tuple[str, Callable[[argparse.Namespace, str], dict[str, Any]], Callable[[dict[str, Any]], list[Row]]]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line; every duration is in seconds."""
    p = argparse.ArgumentParser(prog="bench", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--url", default="http://127.0.0.1:8080", help="the stack (loopback only)")
    p.add_argument("--connections", type=int, default=64, help="wrk connections of the single-event saturation phases")
    p.add_argument("--threads", type=int, default=1, help="wrk threads of the single-event saturation phases")
    p.add_argument("--duration", type=int, default=15, help="length of each single-event saturation phase")
    p.add_argument("--warmup", type=int, default=5, help="wrk warm-up before each wrk phase (0: none)")
    p.add_argument(
        "--system-warmup",
        type=int,
        default=90,
        help="seconds of load before any phase, so a freshly started broker and gateway reach steady state "
        "(measured: the first minutes run at ~65 %% of steady-state throughput); 0: none",
    )
    p.add_argument("--rate", type=float, default=1000.0, help="events/s of the fixed-rate phase")
    p.add_argument("--rate-duration", type=float, default=20.0, help="fixed-rate phase length")
    p.add_argument("--rate-connections", type=int, default=64, help="connection pool of the fixed-rate phase")
    p.add_argument("--inbox-timeout", type=float, default=30.0, help="longest wait for events to reach the inbox")
    p.add_argument(
        "--drain-timeout", type=float, default=60.0, help="longest wait for a single-event saturation backlog"
    )
    p.add_argument("--skip-saturation", action="store_true", help="skip the plain single-event saturation")
    p.add_argument(
        "--skip-checks",
        action="store_true",
        help="skip the single-event saturation with an idempotency key on every other request",
    )
    p.add_argument("--skip-bulk", action="store_true", help="skip the bulk-endpoint throughput phase")
    p.add_argument("--bulk-size", type=int, default=500, help="events per bulk request (1..1000)")
    p.add_argument("--bulk-connections", type=int, default=8, help="wrk connections for the bulk phase")
    p.add_argument("--bulk-threads", type=int, default=1, help="wrk threads for the bulk phase")
    p.add_argument("--bulk-duration", type=int, help="bulk phase length (default: --duration)")
    p.add_argument(
        "--bulk-drain-timeout", type=float, default=120.0, help="longest wait for the bulk events to be persisted"
    )
    p.add_argument(
        "--skip-baseline", action="store_true", help="do not saturate the bare Litestar+aiokafka app for comparison"
    )
    p.add_argument(
        "--skip-floor", action="store_true", help="do not saturate the plain-ASGI floor app (bench/floor_app.py)"
    )
    p.add_argument("--skip-fixed-rate", action="store_true", help="skip the fixed-rate phase")
    p.add_argument("--skip-inbox-scale", action="store_true", help="skip the inbox-at-scale phase")
    p.add_argument("--skip-webhooks", action="store_true", help="skip the webhook delivery phase")
    p.add_argument(
        "--skip-observability",
        action="store_true",
        help="skip the saturation of ingest-only gateways with metrics and tracing on and off",
    )
    p.add_argument("--webhook-events", type=int, default=30_000, help="events of the delivery-throughput backlog")
    p.add_argument("--webhook-rate", type=float, default=200.0, help="events/s while one endpoint is dead")
    p.add_argument(
        "--webhook-duration", type=float, default=15.0, help="seconds of that, and of the same without a dead one"
    )
    p.add_argument("--inbox-events", type=int, default=1_000_000, help="pending events of the inbox-at-scale phase")
    p.add_argument("--inbox-tenants", type=int, default=100, help="tenants they are spread over")
    p.add_argument("--inbox-page-requests", type=int, default=400, help="timed GET /v1/inbox per filter combination")
    p.add_argument("--lease-workers", type=int, default=16, help="concurrent lease+ack clients")
    p.add_argument("--lease-duration", type=float, default=10.0, help="seconds of lease+ack cycles")
    p.add_argument("--output-dir", type=Path, default=RESULTS, help="where the JSON results go")
    p.add_argument(
        "--keep-events", action="store_true", help="leave the run's events in the inbox (deleted at the end by default)"
    )
    p.add_argument("--no-save", action="store_true", help="print only, write no JSON")
    args = p.parse_args(argv)
    if args.bulk_duration is None:
        args.bulk_duration = args.duration
    counts = (args.connections, args.threads, args.duration, args.rate_connections)
    if min(*counts, args.bulk_connections, args.bulk_threads, args.bulk_duration) < 1 or args.rate <= 0:
        p.error("connections, threads, durations and rate must be positive")
    if not 1 <= args.bulk_size <= 1000:
        p.error("--bulk-size must be 1..1000")
    if args.rate_duration * args.rate < 1:
        p.error("--rate x --rate-duration must be at least one request")
    return args


def loopback_target(url: str) -> tuple[str, int]:
    """Host and port of ``url``, which must point at this machine."""
    parts = urlsplit(url)
    if parts.scheme != "http" or parts.hostname not in LOOPBACK:
        raise HarnessError(f"--url must be http://127.0.0.1:PORT, got {url!r}")
    return parts.hostname, parts.port or 80


def check_ready(url: str) -> None:
    """Fail unless /health/ready answers 200."""
    try:
        with urllib.request.urlopen(f"{url}/health/ready", timeout=5) as resp:  # noqa: S310 - loopback only
            if resp.status == 200:
                return
            raise HarnessError(f"{url}/health/ready answered {resp.status}")
    except (urllib.error.URLError, OSError) as exc:
        raise HarnessError(f"stack not reachable at {url}: {exc} (start it with 'make up')") from exc


def create_tenant_key(tenant: str) -> str:
    """Create ``tenant`` and an API key for it with the ``triggers`` CLI; return the key."""
    # The bench measures capacity, so its tenant and key get limits far above what the machine can do;
    # the rate-limit check itself still runs on every request.
    unlimited = "1000000000"
    cmd = [sys.executable, "-m", "triggers.cli", "keys", "create", "--tenant", tenant, "--name", "bench"]
    env = dict(os.environ)
    if not env.get("TRIGGERS_SECRET_KEY"):
        env.setdefault("TRIGGERS_DEV_MODE", "true")  # the CLI's settings need one of the two; keys do not use them
    tenant_cmd = [sys.executable, "-m", "triggers.cli", "tenants", "create", tenant, "--rate-limit", unlimited]
    made = subprocess.run(tenant_cmd, capture_output=True, text=True, timeout=60, check=False, env=env)
    if made.returncode != 0:
        raise HarnessError(f"'triggers tenants create' failed ({made.returncode}): {made.stderr.strip()}")
    out = subprocess.run(
        [*cmd, "--rate-limit", unlimited], capture_output=True, text=True, timeout=60, check=False, env=env
    )
    key = out.stdout.strip()
    if out.returncode != 0 or not key:
        raise HarnessError(f"'triggers keys create' failed ({out.returncode}): {out.stderr.strip()}")
    return key


def event_body(source: str, seq: int) -> bytes:
    """A ~200-byte order event; ``seq`` makes each one different."""
    return _EVENT_BODY.format(source=source, seq=seq).encode()


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on uvloop when available (a cheaper client leaves more CPU to the server)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def cpu_seconds(who: int) -> float:
    """User + system CPU seconds used so far by this process or its children."""
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on."""
    model = ""
    with open("/proc/cpuinfo", encoding="utf-8") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with open("/proc/meminfo", encoding="utf-8") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
                break
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_count": os.cpu_count(),
        "cpu_model": model,
        "mem_total_mb": mem_kb // 1024,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "wrk": saturation.wrk_version(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "speed_check_ms": {"start": cpu.speed_check_ms()},
    }


def git_info() -> dict[str, Any]:
    """Short commit of HEAD and whether the work tree had changes."""

    def git(*args: str) -> str:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
        return out.stdout.strip() if out.returncode == 0 else ""

    return {"commit": git("rev-parse", "--short", "HEAD") or "unknown", "dirty": bool(git("status", "--porcelain"))}


def saturate(
    args: argparse.Namespace,
    url: str,
    key: str,
    source: str,
    warmup_source: str,
    *,
    script: Path = saturation.SCRIPT,
    env: dict[str, str] | None = None,
    threads: int | None = None,
    connections: int | None = None,
    duration_s: int | None = None,
) -> dict[str, Any]:
    """A wrk saturation run (warm-up, then measure): by default the one that both the gateway and the bare
    baseline get; ``script``, ``env``, ``threads``, ``connections`` and ``duration_s`` make it another one."""
    threads = threads or args.threads
    connections = connections or args.connections
    duration_s = duration_s or args.duration
    common: dict[str, Any] = {"threads": threads, "connections": connections, "script": script, "env": env}
    warmup = None
    if args.warmup > 0:
        warmup = saturation.run_wrk(url, key, warmup_source, duration_s=args.warmup, **common)
    wrk_before, groups_before = cpu_seconds(resource.RUSAGE_CHILDREN), cpu.snapshot()
    result = saturation.run_wrk(url, key, source, duration_s=duration_s, **common)
    wrk_cpu, groups_after = cpu_seconds(resource.RUSAGE_CHILDREN) - wrk_before, cpu.snapshot()
    if result.ok == 0:
        raise HarnessError(f"no 201 among {result.requests} responses ({result.statuses})")
    out = {
        "script": f"bench/{script.name}",
        "threads": threads,
        "connections": connections,
        "duration_s": round(result.duration_s, 3),
        "requests": result.requests,
        "ok": result.ok,
        "ok_per_s": round(result.ok_rate, 1),
        "non_201": result.non_201,
        "statuses": result.statuses,
        "socket_errors": result.socket_errors,
        "errors": result.errors,
        "counters": result.counters,
        "latency_ms": {k: round(v, 3) for k, v in result.latency_ms.items()},
        "cpu_us_per_request": cpu.per_request(groups_before, groups_after, wrk_cpu, result.requests),
        "warmup": None if warmup is None else {"requests": warmup.requests, "errors": warmup.errors},
    }
    return out


def run_saturation(args: argparse.Namespace, key: str) -> dict[str, Any]:
    """Warm up, then saturate with wrk; then wait for the inbox to absorb the backlog."""
    out = saturate(args, args.url, key, WRK_SOURCE, WARMUP_SOURCE)
    drained = run_async(
        inbox.measure(os.environ["TRIGGERS_DATABASE_URL"], args.tenant, WRK_SOURCE, out["ok"], args.drain_timeout)
    )
    return {**out, "inbox": inbox_dict(drained)}


def run_checks(args: argparse.Namespace, key: str) -> dict[str, Any]:
    """Saturate like run_saturation, with a unique Idempotency-Key on every other request (so the key is claimed
    and completed in Postgres, and no request is a replay); then wait for the inbox, and count the keys."""
    out = saturate(args, args.url, key, CHECKS_SOURCE, CHECKS_WARMUP_SOURCE, script=saturation.CHECKS_SCRIPT)
    dsn = os.environ["TRIGGERS_DATABASE_URL"]
    drained = run_async(inbox.measure(dsn, args.tenant, CHECKS_SOURCE, out["ok"], args.drain_timeout))
    stored, completed = run_async(inbox.idempotency_keys(dsn, args.tenant, CHECKS_SOURCE))
    keys = {
        "sent": out["counters"].get("keyed", 0),  # includes requests still in flight when wrk stopped
        "stored": stored,
        "completed": completed,
        "replayed": out["counters"].get("replayed", 0),  # must be 0: every key is new
    }
    return {**out, "idempotency_keys": keys, "inbox": inbox_dict(drained)}


def run_bulk(args: argparse.Namespace, key: str) -> dict[str, Any]:
    """Saturate POST /v1/events/bulk with wrk (batches of --bulk-size), then count the phase's events in Postgres.

    wrk counts the requests answered within the run; their events, minus the items answered in ``failed``, are
    the expected count. Requests still in flight when wrk stops may be persisted too, so the persisted count can
    exceed it by up to connections x batch size; accepted events/s counts at most the expected events.
    """
    out = saturate(
        args,
        args.url,
        key,
        BULK_SOURCE,
        BULK_WARMUP_SOURCE,
        script=saturation.BULK_SCRIPT,
        env={"BENCH_BULK_SIZE": str(args.bulk_size)},
        threads=args.bulk_threads,
        connections=args.bulk_connections,
        duration_s=args.bulk_duration,
    )
    failed_items = out["counters"].get("failed_items", 0)
    expected = out["ok"] * args.bulk_size - failed_items
    drained = run_async(
        inbox.measure(os.environ["TRIGGERS_DATABASE_URL"], args.tenant, BULK_SOURCE, expected, args.bulk_drain_timeout)
    )
    accepted = min(drained.persisted, expected)
    duration = out["duration_s"]
    return {
        **out,
        "batch_size": args.bulk_size,
        "events_sent_per_s": round(out["ok"] * args.bulk_size / duration, 1) if duration else None,
        "failed_items": failed_items,
        "partial_responses": out["counters"].get("partial", 0),
        "expected_events": expected,
        "persisted_events": drained.persisted,
        "missing_events": expected - accepted,
        "in_flight_events": max(drained.persisted - expected, 0),
        "accepted_events": accepted,
        "accepted_per_s": round(accepted / duration, 1) if duration else 0.0,
        "inbox": inbox_dict(drained),
    }


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def triggers_run(target: str, port: int) -> list[str]:
    """The command of a ``target`` gateway of the phase's own, with as many workers as the stack's."""
    workers = os.environ.get("TRIGGERS_WORKERS") or str(os.cpu_count() or 1)
    return [sys.executable, "-m", "triggers.cli", "run", "--target", target, "--port", str(port), "--workers", workers]


def wait_until_answers(url: str, proc: subprocess.Popen[bytes], deadline_s: float) -> None:
    """Poll ``url`` until it answers 200; fail if ``proc`` exits or ``deadline_s`` passes first."""
    deadline = time.monotonic() + deadline_s
    while True:
        if proc.poll() is not None:
            raise HarnessError(f"exited with {proc.returncode} during start-up")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - loopback only
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() >= deadline:
            raise HarnessError(f"{url} did not answer within {deadline_s:.0f} s")
        time.sleep(0.2)


def stop_process(proc: subprocess.Popen[bytes], grace_s: float = 20.0) -> None:
    """SIGTERM ``proc`` and wait; SIGKILL it if it is still there after ``grace_s``."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _log_tail(log: Any, lines: int = 20) -> str:
    log.flush()
    log.seek(0)
    return "\n".join(log.read().decode(errors="replace").splitlines()[-lines:])


def run_baseline(args: argparse.Namespace, key: str) -> dict[str, Any]:
    """Start bench/baseline_app.py with uvicorn as the gateway runs (uvloop, httptools, one process), give it
    the gateway's wrk saturation (same script, threads, connections, warm-up, duration), and stop it."""
    port = free_port()
    cmd = [sys.executable, "-m", "uvicorn", "bench.baseline_app:app", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning"]
    return {**saturate_reference(args, key, cmd, port), "app": "bench/baseline_app.py"}


def run_floor(args: argparse.Namespace, key: str) -> dict[str, Any]:
    """Start bench/floor_app.py in as many processes as scripts/run.sh gives the gateway (a socket each, as
    triggers.workers runs them), give it the gateway's wrk saturation, and stop it."""
    port, workers = free_port(), gateway_workers()
    options = {"app": "bench.floor_app:app", "host": "127.0.0.1", "port": port, "loop": "uvloop"}
    options |= {"http": "httptools", "access_log": False, "log_level": "warning"}
    serve = f"from triggers.workers import run_workers; run_workers({workers}, {options!r})"
    return {
        **saturate_reference(args, key, [sys.executable, "-c", serve], port),
        "app": "bench/floor_app.py",
        "workers": workers,
    }


def gateway_workers() -> int:
    """The gateway's process count as scripts/run.sh sets it: TRIGGERS_WORKERS, else one per usable core."""
    return int(os.environ.get("TRIGGERS_WORKERS") or len(os.sched_getaffinity(0)))


def saturate_reference(args: argparse.Namespace, key: str, cmd: list[str], port: int) -> dict[str, Any]:
    """Run a reference app (``cmd``, serving on ``port``), saturate it as the gateway was, and stop it."""
    if not os.environ.get("TRIGGERS_KAFKA_BOOTSTRAP"):
        raise HarnessError("TRIGGERS_KAFKA_BOOTSTRAP is not set (run through scripts/bench.sh)")
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_until_answers(f"{url}/ping", proc, BASELINE_START_TIMEOUT_S)
            out = saturate(args, url, key, BASELINE_SOURCE, BASELINE_SOURCE)
        except Exception as exc:
            stop_process(proc)
            raise HarnessError(f"{exc}; reference app output:\n{_log_tail(log)}") from exc
        finally:
            stop_process(proc)  # also on KeyboardInterrupt; a no-op once it has exited
        tail = _log_tail(log)
    return {**out, "port": port, "exit_code": proc.returncode, "log_tail": tail}


def inbox_dict(result: inbox.InboxLatency) -> dict[str, Any]:
    """The JSON form of an ingest-to-inbox measurement."""
    span = result.persist_span_s
    return {
        "expected": result.expected,
        "persisted": result.persisted,
        "missing": result.missing,
        "waited_s": round(result.waited_s, 2),
        "p50_ms": _round(result.p50_ms),
        "p90_ms": _round(result.p90_ms),
        "p99_ms": _round(result.p99_ms),
        "max_ms": _round(result.max_ms),
        "persist_rate_per_s": round(result.persisted / span, 1) if span else None,
    }


def run_fixed(args: argparse.Namespace, key: str) -> dict[str, Any]:
    """The open-loop fixed-rate phase, then how long its events took to reach the inbox."""
    host, port = loopback_target(args.url)
    cpu_before = cpu_seconds(resource.RUSAGE_SELF)
    result = run_async(
        loadgen.run_fixed_rate(
            host=host,
            port=port,
            path=EVENTS_PATH,
            headers={"X-API-Key": key},
            body=lambda seq: event_body(FIXED_SOURCE, seq),
            rate=args.rate,
            duration_s=args.rate_duration,
            connections=args.rate_connections,
        )
    )
    client_cpu = cpu_seconds(resource.RUSAGE_SELF) - cpu_before
    if result.ok == 0:
        raise HarnessError(f"fixed rate: no 201 among {result.scheduled} requests ({dict(result.failures)})")
    lat = sorted(x * 1000 for x in result.latencies)
    lag = sorted(x * 1000 for x in result.send_lags)
    persisted = run_async(
        inbox.measure(os.environ["TRIGGERS_DATABASE_URL"], args.tenant, FIXED_SOURCE, result.ok, args.inbox_timeout)
    )
    return {
        "target_rate": args.rate,
        "duration_s": args.rate_duration,
        "connections": args.rate_connections,
        "scheduled": result.scheduled,
        "ok": result.ok,
        "achieved_per_s": round(result.achieved_rate, 1),
        "elapsed_s": round(result.elapsed_s, 3),
        "errors": result.errors,
        "statuses": dict(result.statuses),
        "failures": dict(result.failures),
        "latency_ms": {name: _round(percentile(lat, pct)) for name, pct in _PCTS.items()},
        "send_lag_ms": {name: _round(percentile(lag, pct)) for name, pct in _PCTS.items()},
        "client_cpu_pct": round(100 * client_cpu / result.elapsed_s, 1) if result.elapsed_s else None,
        "inbox": inbox_dict(persisted),
    }


def run_inbox_scale(args: argparse.Namespace, key: str) -> dict[str, Any]:
    """A backlog of --inbox-events records consumed by an inbox process of its own (own database and topics),
    then page latency over them for every filter combination, then lease+ack cycles; all removed at the end."""
    stack = inbox_scale.Stack(
        os.environ["TRIGGERS_DATABASE_URL"], os.environ["TRIGGERS_KAFKA_BOOTSTRAP"], args.tenant.replace("-", "_")
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, **stack.env()}
    cmd = triggers_run("inbox", port)
    try:
        seeded = run_async(inbox_scale.prepare(stack, args.inbox_events, args.inbox_tenants))
        with tempfile.TemporaryFile() as log:
            proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
            try:
                wait_until_answers(f"{url}/health/ready", proc, BASELINE_START_TIMEOUT_S)
                consumed = run_async(inbox_scale.wait_consumed(stack, args.inbox_events, args.bulk_drain_timeout * 5))
                keys = run_async(inbox_scale.create_keys(stack, args.inbox_tenants))
                pages = run_async(inbox_scale.page_latency(url, keys, args.inbox_page_requests))
                leases = run_async(inbox_scale.lease_ack_cycles(url, keys, args.lease_workers, args.lease_duration))
            except Exception as exc:
                raise HarnessError(f"{exc}; inbox process output:\n{_log_tail(log)}") from exc
            finally:
                stop_process(proc)
    finally:
        run_async(inbox_scale.cleanup(stack))
    return {**seeded, "workers": cmd[-1], "consumer": consumed, "pages": pages, "leases": leases}


OBSERVABILITY_SOURCE = "bench-observability"
OBSERVABILITY_ROUNDS = 2


def run_observability(args: argparse.Namespace, key: str) -> dict[str, Any]:
    """What metrics and tracing cost on ingest: the same wrk saturation against ingest-only gateways (``--target
    ingest``, on the stack's database and topics, as many workers as the stack's) started once per variant and
    round: as they ship, metrics off, and tracing on exporting OTLP to a stand-in collector at two sampling
    rates. The variants take turns, ``OBSERVABILITY_ROUNDS`` times, so a drift of the machine hits them all."""
    sink_port = free_port()
    sink = subprocess.Popen(
        [sys.executable, "-m", "bench.otlp_sink", str(sink_port)], cwd=ROOT, stdin=subprocess.DEVNULL
    )
    tracing = {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{sink_port}"}
    variants: list[tuple[str, dict[str, str]]] = [
        ("metrics on, tracing off (the default)", {}),
        ("metrics off", {"TRIGGERS_METRICS": "false"}),
        ("tracing on, 10 % of requests sampled (its default)", {**tracing, "OTEL_TRACES_SAMPLER_ARG": "0.1"}),
        ("tracing on, every request sampled", {**tracing, "OTEL_TRACES_SAMPLER_ARG": "1.0"}),
    ]
    runs: list[list[dict[str, Any]]] = [[] for _ in variants]
    try:
        for round_ in range(OBSERVABILITY_ROUNDS):
            for number, (label, extra) in enumerate(variants):
                source = f"{OBSERVABILITY_SOURCE}-{round_}-{number}"
                runs[number].append(_ingest_gateway_saturation(args, key, label, extra, source))
    finally:
        sink.kill()
        sink.wait()
    results = []
    for (label, extra), done in zip(variants, runs, strict=True):
        cpu_keys = list(dict.fromkeys(k for r in done for k in r["cpu_us_per_request"]))  # in order, once
        results.append(
            {
                "variant": label,
                "env": extra,
                "ok_per_s": round(sum(r["ok_per_s"] for r in done) / len(done), 1),
                "errors": sum(r["errors"] for r in done),
                "cpu_us_per_request": {
                    k: round(sum(r["cpu_us_per_request"].get(k, 0) for r in done) / len(done)) for k in cpu_keys
                },
                "threads": done[0]["threads"],
                "connections": done[0]["connections"],
                "runs": done,
            }
        )
    return {"rounds": OBSERVABILITY_ROUNDS, "variants": results}


def _ingest_gateway_saturation(
    args: argparse.Namespace, key: str, label: str, extra: dict[str, str], source: str
) -> dict[str, Any]:
    """Start an ingest-only gateway with ``extra`` in its environment, saturate it, stop it, and wait until the
    stack's consumers absorbed its events (the next run would share the CPU with that backlog)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}  # tracing off unless asked
    if not env.get("TRIGGERS_SECRET_KEY"):
        env.setdefault("TRIGGERS_DEV_MODE", "true")  # like the stack the bench runs against
    env.update(extra)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = triggers_run("ingest", port)
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        try:
            wait_until_answers(f"{url}/health/ready", proc, BASELINE_START_TIMEOUT_S)
            out = saturate(args, url, key, source, f"{source}-warmup")
        except Exception as exc:
            raise HarnessError(f"{label}: {exc}; gateway output:\n{_log_tail(log)}") from exc
        finally:
            stop_process(proc)
    run_async(inbox.measure(os.environ["TRIGGERS_DATABASE_URL"], args.tenant, source, out["ok"], args.drain_timeout))
    return out


def observability_rows(ob: dict[str, Any]) -> list[Row]:
    """Table rows of the observability-overhead phase: each variant against the default."""
    base = ob["variants"][0]
    rows = [
        Row(
            f"ingest-only gateway (wrk -t{base['threads']} -c{base['connections']}), {base['variant']}",
            f"{base['ok_per_s']:,.0f} /s",
            "",
            verdict(True, base["errors"]),
        ),
        cpu_row(base),
    ]
    for v in ob["variants"][1:]:
        change = 100 * (v["ok_per_s"] / base["ok_per_s"] - 1) if base["ok_per_s"] else 0.0
        rows.append(
            Row(f"  {v['variant']}", f"{v['ok_per_s']:,.0f} /s ({change:+.1f} %)", "", verdict(True, v["errors"]))
        )
        rows.append(Row("    CPU per request", cpu.describe(v["cpu_us_per_request"])))
    return rows


def run_webhooks(args: argparse.Namespace, key: str) -> dict[str, Any]:
    """Delivery throughput of a backlog to a local receiver, then a healthy endpoint's latency while the
    tenant's other webhook points at an endpoint that never answers. Receivers run in processes of their own;
    the phase's webhooks are deleted at the end."""
    healthy = webhooks.start_receiver(free_port())
    dead = webhooks.start_receiver(free_port(), hang=True)
    isolated = webhooks.start_receiver(free_port())
    try:
        caught_up_s = run_async(webhooks.webhooks_caught_up(args.url, args.bulk_drain_timeout))
        out = {
            "waited_for_webhooks_consumer_s": caught_up_s,
            "throughput": run_async(
                webhooks.throughput(args.url, key, healthy, args.webhook_events, args.bulk_drain_timeout)
            ),
        }
        out["isolation"] = run_async(
            webhooks.isolation(args.url, key, isolated, dead, args.webhook_rate, args.webhook_duration)
        )
    finally:
        for receiver in (healthy, dead, isolated):
            receiver.proc.kill()
            receiver.proc.wait()
    if out["throughput"]["delivered"] == 0:
        raise HarnessError("webhooks: no delivery arrived")
    return out


def webhooks_rows(wh: dict[str, Any]) -> list[Row]:
    """Table rows of the webhook phase."""
    tp, iso = wh["throughput"], wh["isolation"]
    per_s = tp["deliveries_per_s"] or 0
    alone, dead = iso["alone"]["latency_ms"], iso["beside_dead"]["latency_ms"]
    return [
        Row(
            f"webhook deliveries/s ({tp['events']:,}-event backlog, local receiver)",
            f"{per_s:,.0f} /s",
            f">= {DELIVERIES_TARGET:,.0f}/s",
            verdict(per_s >= DELIVERIES_TARGET, tp["missing"], "missing"),
        ),
        Row(
            f"healthy endpoint event->delivery p50 / p99 at {iso['rate']:.0f}/s, another endpoint dead",
            f"{_ms(dead['p50'])} / {_ms(dead['p99'])} ms",
            "",
            verdict(True, iso["missing"], "missing"),
        ),
        Row("  the same, alone (no dead endpoint)", f"{_ms(alone['p50'])} / {_ms(alone['p99'])} ms"),
        Row("  requests the dead endpoint took (at most 10 at once per process)", f"{iso['dead_endpoint_requests']}"),
    ]


def inbox_scale_rows(sc: dict[str, Any]) -> list[Row]:
    """Table rows of the inbox-at-scale phase."""
    consumer, pages, leases = sc["consumer"], sc["pages"], sc["leases"]
    rows = [
        Row(
            f"inbox consumer persistence ({sc['events']:,}-record backlog, {sc['workers']} processes)",
            f"{consumer['per_s'] or 0:,.0f} /s",
            f">= {CONSUMER_TARGET:,.0f}/s",
            verdict((consumer["per_s"] or 0) >= CONSUMER_TARGET, consumer["missing"], "missing"),
        ),
        Row(
            f"GET /v1/inbox p99, {sc['events']:,} pending over {sc['tenants']} tenants, worst filter",
            f"{pages['worst_p99_ms']:,.1f} ms",
            f"<= {INBOX_PAGE_P99_TARGET_MS:,.0f} ms",
            verdict(pages["worst_p99_ms"] <= INBOX_PAGE_P99_TARGET_MS, 0),
        ),
    ]
    for name, r in pages["filters"].items():
        rows.append(
            Row(f"  {name}: p50 / p99 (events per page)", f"{r['p50']} / {r['p99']} ms ({r['events_per_page']:.0f})")
        )
    rows.append(
        Row(
            f"lease 10 + ack by lease, {leases['workers']} clients",
            f"{leases['events_acked_per_s']:,} events/s ({leases['cycles_per_s']:,} cycles/s)",
            "",
            verdict(True, leases["errors"]),
        )
    )
    return rows


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.1f}"


def verdict(passed: bool, errors: int, what: str = "errors") -> str:
    """PASS/FAIL, and FAIL whenever the phase had errors, whatever the number."""
    if errors:
        return f"FAIL ({errors:,} {what})"
    return "PASS" if passed else "FAIL"


def cpu_row(phase: dict[str, Any]) -> Row:
    """Where the machine's CPU went per answered request during a wrk phase (see bench/cpu.py)."""
    return Row("  CPU per request", cpu.describe(phase["cpu_us_per_request"]))


def saturation_rows(sat: dict[str, Any]) -> list[Row]:
    """Table rows of the saturation phase."""
    lat = sat["latency_ms"]
    rows = [
        Row(
            f"saturation throughput (wrk -t{sat['threads']} -c{sat['connections']})",
            f"{sat['ok_per_s']:,.0f} /s",
            f">= {SATURATION_TARGET:,.0f}/s",
            verdict(sat["ok_per_s"] >= SATURATION_TARGET, sat["errors"]),
        ),
        Row("  latency p50 / p99 / max", f"{_ms(lat['p50'])} / {_ms(lat['p99'])} / {_ms(lat['max'])} ms"),
        Row(
            "  201s / non-201 / socket errors",
            f"{sat['ok']:,} / {sat['non_201']:,} / {sum(sat['socket_errors'].values()):,}",
        ),
        cpu_row(sat),
    ]
    if sat["statuses"]:
        rows.append(Row("  non-201 statuses", ", ".join(f"{k}: {v:,}" for k, v in sorted(sat["statuses"].items()))))
    box = sat["inbox"]
    rows += [
        Row(
            "  inbox after saturation: p50 / p99 / max",
            f"{_ms(box['p50_ms'])} / {_ms(box['p99_ms'])} / {_ms(box['max_ms'])} ms",
        ),
        Row(
            "  inbox persist rate / missing",
            f"{box['persist_rate_per_s'] or 0:,.0f} /s / {box['missing']:,} (waited {box['waited_s']} s)",
        ),
    ]
    return rows


def checks_rows(ck: dict[str, Any]) -> list[Row]:
    """Table rows of the all-checks saturation phase."""
    lat, keys, box = ck["latency_ms"], ck["idempotency_keys"], ck["inbox"]
    rows = [
        Row(
            CHECKS_LABEL,
            f"{ck['ok_per_s']:,.0f} /s",
            f">= {CHECKS_TARGET:,.0f}/s",
            verdict(ck["ok_per_s"] >= CHECKS_TARGET, ck["errors"] + keys["replayed"], "errors/replays"),
        ),
        Row(
            f"  wrk -t{ck['threads']} -c{ck['connections']}: latency p50 / p99 / max",
            f"{_ms(lat['p50'])} / {_ms(lat['p99'])} / {_ms(lat['max'])} ms",
        ),
        Row(
            "  201s / non-201 / socket errors",
            f"{ck['ok']:,} / {ck['non_201']:,} / {sum(ck['socket_errors'].values()):,}",
        ),
        cpu_row(ck),
    ]
    if ck["statuses"]:
        rows.append(Row("  non-201 statuses", ", ".join(f"{k}: {v:,}" for k, v in sorted(ck["statuses"].items()))))
    rows += [
        Row(
            "  idempotency keys sent / completed / replayed",
            f"{keys['sent']:,} / {keys['completed']:,} / {keys['replayed']:,}",
        ),
        Row(
            "  inbox persisted / missing",
            f"{box['persisted']:,} / {box['missing']:,} (waited {box['waited_s']} s)",
        ),
    ]
    return rows


def bulk_rows(bk: dict[str, Any]) -> list[Row]:
    """Table rows of the bulk phase."""
    lat, box = bk["latency_ms"], bk["inbox"]
    problems = bk["errors"] + bk["failed_items"] + bk["missing_events"]
    rows = [
        Row(
            f"bulk events/s, persisted (batches of {bk['batch_size']})",
            f"{bk['accepted_per_s']:,.0f} /s",
            f">= {BULK_TARGET:,.0f}/s",
            verdict(bk["accepted_per_s"] >= BULK_TARGET, problems, "errors/failed/missing"),
        ),
        Row(
            f"  wrk -t{bk['threads']} -c{bk['connections']}: requests/s / events/s sent",
            f"{bk['ok_per_s']:,.1f} /s / {bk['events_sent_per_s'] or 0:,.0f} /s",
        ),
        Row("  request latency p50 / p99 / max", f"{_ms(lat['p50'])} / {_ms(lat['p99'])} / {_ms(lat['max'])} ms"),
        Row(
            "  201s / non-201 / socket errors",
            f"{bk['ok']:,} / {bk['non_201']:,} / {sum(bk['socket_errors'].values()):,}",
        ),
        cpu_row(bk),
    ]
    if bk["statuses"]:
        rows.append(Row("  non-201 statuses", ", ".join(f"{k}: {v:,}" for k, v in sorted(bk["statuses"].items()))))
    rows += [
        Row("  items in 'failed' / answers with any", f"{bk['failed_items']:,} / {bk['partial_responses']:,}"),
        Row(
            "  events expected / persisted / missing",
            f"{bk['expected_events']:,} / {bk['persisted_events']:,} / {bk['missing_events']:,}",
        ),
        Row("  persisted from requests in flight at the end", f"{bk['in_flight_events']:,}"),
        Row("  inbox persist rate / waited", f"{box['persist_rate_per_s'] or 0:,.0f} /s / {box['waited_s']} s"),
    ]
    return rows


def baseline_rows(base: dict[str, Any]) -> list[Row]:
    """Table rows of the bare Litestar+aiokafka saturation run."""
    return reference_rows(BASELINE_LABEL, base)


def floor_rows(fl: dict[str, Any]) -> list[Row]:
    """Table rows of the plain-ASGI floor's saturation run."""
    return reference_rows(f"{FLOOR_LABEL}, {fl['workers']} processes,", fl)


def reference_rows(label: str, ref: dict[str, Any]) -> list[Row]:
    """Table rows of a reference app's saturation run."""
    lat = ref["latency_ms"]
    rows = [
        Row(f"{label} throughput (wrk -t{ref['threads']} -c{ref['connections']})", f"{ref['ok_per_s']:,.0f} /s"),
        Row("  latency p50 / p99 / max", f"{_ms(lat['p50'])} / {_ms(lat['p99'])} / {_ms(lat['max'])} ms"),
        Row(
            "  201s / non-201 / socket errors",
            f"{ref['ok']:,} / {ref['non_201']:,} / {sum(ref['socket_errors'].values()):,}",
        ),
        cpu_row(ref),
    ]
    if ref["statuses"]:
        rows.append(Row("  non-201 statuses", ", ".join(f"{k}: {v:,}" for k, v in sorted(ref["statuses"].items()))))
    return rows


def baseline_share(sat: dict[str, Any], base: dict[str, Any]) -> float:
    """Gateway saturation throughput as a percentage of the bare app's."""
    return 100 * float(sat["ok_per_s"]) / float(base["ok_per_s"])


def share_row(sat: dict[str, Any], base: dict[str, Any]) -> Row:
    """The gateway-vs-bare comparison; errors in either run make it a FAIL (they distort the ratio)."""
    pct = baseline_share(sat, base)
    return Row(
        f"gateway vs {BASELINE_LABEL}",
        f"{pct:.1f} % ({sat['ok_per_s']:,.0f} / {base['ok_per_s']:,.0f})",
        f">= {BASELINE_SHARE_TARGET_PCT:.0f} %",
        verdict(pct >= BASELINE_SHARE_TARGET_PCT, sat["errors"] + base["errors"]),
    )


def floor_share_row(checks: dict[str, Any], fl: dict[str, Any]) -> Row:
    """The all-checks throughput as a share of the floor's, and the all-checks target as one (no verdict)."""
    got, floor = float(checks["ok_per_s"]), float(fl["ok_per_s"])
    return Row(
        "  all checks / floor; the all-checks target / floor",
        f"{100 * got / floor:.0f} % ({got:,.0f} /s); {100 * CHECKS_TARGET / floor:.0f} % ({CHECKS_TARGET:,.0f} /s)",
    )


def fixed_rows(fx: dict[str, Any]) -> list[Row]:
    """Table rows of the fixed-rate phase and its ingest-to-inbox latency."""
    lat, box = fx["latency_ms"], fx["inbox"]
    rate = f"{fx['target_rate']:,.0f}/s"
    rows = [
        Row(
            f"p99 latency at {rate} ({fx['connections']} conns)",
            f"{_ms(lat['p99'])} ms",
            f"<= {FIXED_P99_TARGET_MS:,.0f} ms",
            verdict(lat["p99"] is not None and lat["p99"] <= FIXED_P99_TARGET_MS, fx["errors"]),
        ),
        Row(
            f"p99 latency at {rate}, later milestone",
            f"{_ms(lat['p99'])} ms",
            f"<= {FIXED_P99_LATER_TARGET_MS:,.0f} ms",
            verdict(lat["p99"] is not None and lat["p99"] <= FIXED_P99_LATER_TARGET_MS, fx["errors"]),
        ),
        Row("  achieved rate / 201s / errors", f"{fx['achieved_per_s']:,.1f} /s / {fx['ok']:,} / {fx['errors']:,}"),
        Row("  latency p50 / p90 / max", f"{_ms(lat['p50'])} / {_ms(lat['p90'])} / {_ms(lat['max'])} ms"),
        Row("  client send lag p99 / max", f"{_ms(fx['send_lag_ms']['p99'])} / {_ms(fx['send_lag_ms']['max'])} ms"),
    ]
    failures = {**fx["statuses"], **fx["failures"]}
    if failures:
        rows.append(Row("  errors by kind", ", ".join(f"{k}: {v:,}" for k, v in sorted(failures.items()))))
    rows += [
        Row(
            f"ingest-to-inbox p99 (at {rate})",
            f"{_ms(box['p99_ms'])} ms",
            f"<= {INBOX_P99_TARGET_MS:,.0f} ms",
            verdict(box["p99_ms"] is not None and box["p99_ms"] <= INBOX_P99_TARGET_MS, box["missing"], "missing"),
        ),
        Row("  p50 / max", f"{_ms(box['p50_ms'])} / {_ms(box['max_ms'])} ms"),
        Row("  persisted / missing", f"{box['persisted']:,} / {box['missing']:,} (waited {box['waited_s']} s)"),
    ]
    return rows


def render(report: dict[str, Any], rows: list[Row]) -> str:
    """The plain-text table."""
    m, g = report["machine"], report["git"]
    title = (
        f"Triggers bench  {report['date']}  commit {g['commit']}{' (dirty)' if g['dirty'] else ''}  "
        f"{m['nproc']} x {m['cpu_model']}  load {m['loadavg_at_start'][0]}"
    )
    speed = m["speed_check_ms"]
    speed_line = (
        f"host speed check (a fixed Python loop, lower is faster): {speed['start']} ms at the start, "
        f"{speed.get('end', '-')} ms at the end"
    )
    header = Row("metric", "value", "target", "result")
    widths = [max(len(getattr(r, f)) for r in [header, *rows]) for f in ("metric", "value", "target")]
    lines = [title, speed_line, ""]
    for r in [header, *rows]:
        cells = [r.metric.ljust(widths[0]), r.value.ljust(widths[1]), r.target.ljust(widths[2]), r.result]
        lines.append("  ".join(cells).rstrip())
    for problem in report["harness_errors"]:
        lines.append(f"HARNESS ERROR: {problem}")
    return "\n".join(lines)


def save(report: dict[str, Any], directory: Path, stamp: str) -> Path:
    """Write <stamp>.json and latest.json; return the first."""
    directory.mkdir(parents=True, exist_ok=True)
    text = json.dumps(report, indent=2) + "\n"
    path = directory / f"{stamp}.json"
    tmp = directory / f"{stamp}.json.tmp"
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    shutil.copyfile(path, directory / "latest.json")
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """Run every phase, print the table, write the results; 1 if the harness failed, else 0."""
    args = parse_args(argv)
    now = datetime.now(UTC)
    stamp = now.strftime("%Y-%m-%dT%H-%M-%SZ")
    args.tenant = f"bench-{now.strftime('%Y%m%d-%H%M%S')}"
    report: dict[str, Any] = {
        "date": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "git": git_info(),
        "machine": machine_info(),
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "targets": {
            "saturation_per_s": SATURATION_TARGET,
            "checks_per_s": CHECKS_TARGET,
            "bulk_events_per_s": BULK_TARGET,
            "fixed_p99_ms": FIXED_P99_TARGET_MS,
            "fixed_p99_later_ms": FIXED_P99_LATER_TARGET_MS,
            "inbox_p99_ms": INBOX_P99_TARGET_MS,
            "gateway_vs_baseline_pct": BASELINE_SHARE_TARGET_PCT,
            "inbox_consumer_per_s": CONSUMER_TARGET,
            "inbox_page_p99_ms": INBOX_PAGE_P99_TARGET_MS,
            "webhook_deliveries_per_s": DELIVERIES_TARGET,
        },
        "harness_errors": [],
    }
    rows: list[Row] = []
    try:
        loopback_target(args.url)
        check_ready(args.url)
        if not os.environ.get("TRIGGERS_DATABASE_URL"):
            raise HarnessError("TRIGGERS_DATABASE_URL is not set (run through scripts/bench.sh)")
        key = create_tenant_key(args.tenant)
    except HarnessError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    # Run order: the system's own phases first, the bare baseline last (measured right before, its 100k-record
    # burst left the broker slower for the phase after it). Each wrk phase but the baseline waits for its
    # events to reach the inbox, so the next phase does not share the CPU with that backlog.
    phases: list[Phase] = [
        ("saturation", run_saturation, saturation_rows),
        ("checks", run_checks, checks_rows),
        ("bulk", run_bulk, bulk_rows),
        ("fixed_rate", run_fixed, fixed_rows),
        ("baseline", run_baseline, baseline_rows),
        ("floor", run_floor, floor_rows),
        ("webhooks", run_webhooks, webhooks_rows),
        ("observability", run_observability, observability_rows),
        ("inbox_scale", run_inbox_scale, inbox_scale_rows),
    ]
    phases = [phase for phase in phases if not getattr(args, f"skip_{phase[0]}", False)]
    if args.system_warmup > 0:
        print(f"bench: system warm-up ({args.system_warmup} s) ...", file=sys.stderr, flush=True)
        warm = saturation.run_wrk(
            args.url,
            key,
            SYSTEM_WARMUP_SOURCE,
            duration_s=args.system_warmup,
            threads=args.threads,
            connections=args.connections,
            script=saturation.SCRIPT,
            env=None,
        )
        run_async(
            inbox.measure(
                os.environ["TRIGGERS_DATABASE_URL"], args.tenant, SYSTEM_WARMUP_SOURCE, warm.ok, args.drain_timeout
            )
        )
        report["system_warmup"] = {"seconds": args.system_warmup, "requests_per_s": round(warm.ok / args.system_warmup)}
    phase_rows: dict[str, list[Row]] = {}
    for name, phase, to_rows in phases:
        started = time.monotonic()
        print(f"bench: {name} ...", file=sys.stderr, flush=True)
        try:
            report[name] = phase(args, key)
            phase_rows[name] = to_rows(report[name])
        except Exception as exc:  # a failed phase is reported; the others still run
            report["harness_errors"].append(f"{name}: {type(exc).__name__}: {exc}")
        print(f"bench: {name} done in {time.monotonic() - started:.1f} s", file=sys.stderr, flush=True)
    if "saturation" in report and "baseline" in report:
        report["gateway_vs_baseline_pct"] = round(baseline_share(report["saturation"], report["baseline"]), 1)
        phase_rows.setdefault("baseline", []).append(share_row(report["saturation"], report["baseline"]))
    if "checks" in report and "floor" in report:
        phase_rows.setdefault("floor", []).append(floor_share_row(report["checks"], report["floor"]))
    for name in (
        "saturation",
        "baseline",
        "floor",
        "checks",
        "bulk",
        "fixed_rate",
        "webhooks",
        "observability",
        "inbox_scale",
    ):  # a blank line between
        if name in phase_rows:
            rows += [*([Row("", "")] if rows else []), *phase_rows[name]]
    report["summary"] = [vars(r) for r in rows if r.target]
    report["machine"]["speed_check_ms"]["end"] = cpu.speed_check_ms()
    print(render(report, rows))
    if not args.no_save:
        print(f"\nwrote {save(report, args.output_dir, stamp)}")
    if not args.keep_events:
        deleted = run_async(inbox.forget(os.environ["TRIGGERS_DATABASE_URL"], args.tenant))
        print(f"bench: deleted the run's {deleted:,} events from the inbox (--keep-events keeps them)", file=sys.stderr)
    return 1 if report["harness_errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
