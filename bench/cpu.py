"""Where the machine's CPU goes during a bench phase: per process group, from /proc.

Everything runs on one machine, so a phase's throughput is bounded by the CPU all of it needs per request:
the gateway's processes, the broker, Postgres and the load generator. ``snapshot()`` before and after a
phase, and ``per_request()`` turns the difference into microseconds of CPU per answered request.

Groups: ``gateway`` (every ``triggers run`` process and its workers), ``baseline`` (the reference apps,
bench/baseline_app.py and bench/floor_app.py, which never run at once),
``broker`` (the Kafka JVM), ``postgres`` (every Postgres backend and helper). A process that exits between
two snapshots is not counted; wrk is (it is a child of the harness, measured through getrusage instead).
"""

from __future__ import annotations

import os
import time

GROUPS = ("gateway", "baseline", "broker", "postgres")
_TICK = os.sysconf("SC_CLK_TCK")


def _own_group(cmdline: str, comm: str) -> str | None:
    if "kafka.Kafka" in cmdline:
        return "broker"
    if comm == "postgres":
        return "postgres"
    if "bench.baseline_app" in cmdline or "bench.floor_app" in cmdline:
        return "baseline"
    if "triggers run" in cmdline or "triggers.cli run" in cmdline:
        return "gateway"
    return None


def snapshot() -> dict[str, float]:
    """CPU seconds (user + system) used so far by each group's running processes."""
    parents: dict[int, int] = {}
    seconds: dict[int, float] = {}
    own: dict[int, str | None] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        pid = int(name)
        try:
            with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as f:
                stat = f.read()
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # gone meanwhile
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        parents[pid] = int(fields[1])
        seconds[pid] = (int(fields[11]) + int(fields[12])) / _TICK
        own[pid] = _own_group(cmdline, comm)
    totals = dict.fromkeys(GROUPS, 0.0)
    for pid, used in seconds.items():
        group, ancestor, hops = own[pid], parents.get(pid, 0), 0
        while group is None and ancestor > 1 and hops < 32:  # a worker belongs to the group of its parent
            group, ancestor, hops = own.get(ancestor), parents.get(ancestor, 0), hops + 1
        if group is not None:
            totals[group] += used
    return totals


def per_request(before: dict[str, float], after: dict[str, float], wrk_s: float, requests: int) -> dict[str, int]:
    """Microseconds of CPU per request for each group that used any, plus wrk and the total."""
    if requests <= 0:
        return {}
    used = {group: after[group] - before[group] for group in GROUPS if after[group] - before[group] > 0}
    used["wrk"] = wrk_s
    out = {group: round(1e6 * s / requests) for group, s in used.items()}
    out["total"] = round(1e6 * sum(used.values()) / requests)
    return out


def describe(us: dict[str, int]) -> str:
    """``gateway 420 + broker 110 + postgres 40 + wrk 60 = 630 µs``"""
    parts = [f"{group} {value:,}" for group, value in us.items() if group != "total"]
    return f"{' + '.join(parts)} = {us.get('total', 0):,} µs"


def speed_check_ms() -> float:
    """How long a fixed pure-Python loop takes on one core (the median of 7 rounds), in milliseconds; lower
    is faster.

    The machine shares its host, and its speed drifts: the same loop has taken from 42 ms to 74 ms within
    ten seconds, on an otherwise idle machine. Taken at the start and the end of a run, it tells whether two
    runs' numbers can be compared, or one ran on a slower host."""
    rounds = []
    for _ in range(7):
        started = time.perf_counter()
        total = 0
        for i in range(1_000_000):
            total += i * i
        rounds.append(time.perf_counter() - started)
    return round(sorted(rounds)[len(rounds) // 2] * 1000, 1)
