"""Closed-loop saturation with wrk: how many POSTs per second the API takes.

Scripts (all print their result through bench/wrk_common.lua's done() hook):
  bench/post_event.lua         one event per request
  bench/post_event_checks.lua  one event per request, a unique Idempotency-Key on every other one
  bench/post_bulk.lua          BENCH_BULK_SIZE events per request to /v1/events/bulk
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCRIPT = Path(__file__).with_name("post_event.lua")
CHECKS_SCRIPT = Path(__file__).with_name("post_event_checks.lua")
BULK_SCRIPT = Path(__file__).with_name("post_bulk.lua")
_MARKER = "BENCH_JSON "


class WrkError(RuntimeError):
    """wrk is missing, failed, or printed no result."""


@dataclass
class WrkResult:
    """One wrk run, as reported by the script's done() hook."""

    threads: int
    connections: int
    duration_s: float
    requests: int
    non_201: int
    statuses: dict[str, int]
    socket_errors: dict[str, int]
    latency_ms: dict[str, float]
    counters: dict[str, int]
    raw: dict[str, Any] = field(repr=False)

    @property
    def ok(self) -> int:
        """Responses with status 201."""
        return self.requests - self.non_201

    @property
    def errors(self) -> int:
        """Non-201 responses plus socket errors (connect, read, write, timeout)."""
        return self.non_201 + sum(self.socket_errors.values())

    @property
    def ok_rate(self) -> float:
        """201 responses per second."""
        return self.ok / self.duration_s if self.duration_s > 0 else 0.0


def wrk_version() -> str:
    """wrk's version line, or "" if it is not installed."""
    if shutil.which("wrk") is None:
        return ""
    out = subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False)
    return (out.stdout or out.stderr).splitlines()[0].strip() if (out.stdout or out.stderr) else ""


def run_wrk(
    url: str,
    api_key: str,
    source: str,
    *,
    threads: int,
    connections: int,
    duration_s: int,
    timeout_s: int = 10,
    script: Path = SCRIPT,
    env: Mapping[str, str] | None = None,
) -> WrkResult:
    """Run wrk against ``url`` with ``script`` (``env``: extra variables for it) and return its parsed result."""
    if shutil.which("wrk") is None:
        raise WrkError("wrk is not installed (scripts/bench.sh installs it)")
    cmd = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{duration_s}s",
        f"--timeout={timeout_s}s",
        "-s",
        str(script),
        url,
    ]
    wrk_env = {**os.environ, **(env or {}), "BENCH_API_KEY": api_key, "BENCH_SOURCE": source}
    try:
        out = subprocess.run(cmd, env=wrk_env, capture_output=True, text=True, timeout=duration_s + timeout_s + 30)
    except subprocess.TimeoutExpired as exc:
        raise WrkError(f"wrk did not finish: {exc}") from exc
    if out.returncode != 0:
        raise WrkError(f"wrk exited {out.returncode}: {out.stderr.strip() or out.stdout.strip()}")
    return parse_wrk_output(out.stdout, threads, connections)


def parse_wrk_output(stdout: str, threads: int, connections: int) -> WrkResult:
    """Find the done() hook's JSON line in wrk's output."""
    for line in stdout.splitlines():
        if line.startswith(_MARKER):
            data = json.loads(line[len(_MARKER) :])
            break
    else:
        raise WrkError(f"no result line in wrk output:\n{stdout}")
    latency = data["latency_us"]
    latency_ms = {f"p{name}": value / 1000 for name, value in latency["percentiles"].items()}
    latency_ms |= {name: latency[name] / 1000 for name in ("min", "mean", "max", "stdev")}
    return WrkResult(
        threads=threads,
        connections=connections,
        duration_s=data["duration_us"] / 1e6,
        requests=data["requests"],
        non_201=data["non_201"],
        statuses=data["statuses"],
        socket_errors=data["socket_errors"],
        latency_ms=latency_ms,
        counters={name: int(value) for name, value in data.get("counters", {}).items()},
        raw=data,
    )
