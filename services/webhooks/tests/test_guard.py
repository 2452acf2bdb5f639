"""The SSRF guard with a stand-in DNS (this machine resolves no outside names): a name that resolves to a
private address is refused when delivering, even if it resolved to a public one when the webhook was created
(DNS rebinding), and the circuit breaker's states."""

from __future__ import annotations

import ipaddress
import socket
import uuid
from typing import Any

import pytest
from aiohttp.abc import ResolveResult
from triggers_webhooks import deliver, guard
from triggers_webhooks.dispatch import Breakers


class StandInDns:
    """Answers each lookup with the next address of a list (a rebinding name changes its answer)."""

    def __init__(self, *answers: str) -> None:
        self.answers = list(answers)

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        address = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        return [
            ResolveResult(hostname=host, host=address, port=port, family=family, proto=0, flags=socket.AI_NUMERICHOST)
        ]

    async def close(self) -> None:
        pass


def resolver(dns: StandInDns, allow_private: bool) -> deliver.GuardedResolver:
    guarded = deliver.GuardedResolver(allow_private)
    guarded._inner = dns  # type: ignore[assignment]
    return guarded


@pytest.mark.parametrize(
    "address", ["10.0.0.7", "172.16.4.4", "192.168.1.1", "169.254.169.254", "127.0.0.1", "::1", "fd00:ec2::254"]
)
async def test_a_name_resolving_to_a_private_address_is_refused_at_delivery(address: str) -> None:
    with pytest.raises(OSError, match="non-public"):
        await resolver(StandInDns(address), allow_private=False).resolve("hooks.example.com", 443)
    allowed = await resolver(StandInDns(address), allow_private=True).resolve("hooks.example.com", 443)
    assert allowed[0]["host"] == address


async def test_a_rebinding_name_is_refused_once_it_points_inside() -> None:
    guarded = resolver(StandInDns("93.184.216.34", "10.0.0.7"), allow_private=False)
    assert (await guarded.resolve("rebind.example.com", 443))[0]["host"] == "93.184.216.34"
    with pytest.raises(OSError, match=r"non-public address \(10\.0\.0\.7\)"):
        await guarded.resolve("rebind.example.com", 443)


async def test_creation_checks_every_address_a_name_resolves_to(monkeypatch: pytest.MonkeyPatch) -> None:
    async def two_addresses(*_: Any, **__: Any) -> list[tuple[Any, ...]]:
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, 443)) for a in ("93.184.216.34", "10.9.8.7")]

    import asyncio

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", two_addresses)
    with pytest.raises(guard.Refused, match=r"10\.9\.8\.7"):
        await guard.check_destination("https://mixed.example.com/hook", allow_private=False)
    await guard.check_destination("https://mixed.example.com/hook", allow_private=True)


def test_public_addresses_pass_and_mapped_private_ones_do_not() -> None:
    assert not guard.forbidden(ipaddress.ip_address("93.184.216.34"))
    assert guard.forbidden(ipaddress.ip_address("::ffff:10.0.0.1"))
    assert guard.forbidden(ipaddress.ip_address("100.64.0.1"))  # carrier-grade NAT is not public either


def test_a_breaker_opens_after_failures_in_a_row_probes_once_and_backs_off(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr("triggers_webhooks.dispatch.time.monotonic", lambda: now[0])
    breakers, hook = Breakers(failures=3, cooldown_s=10), uuid.uuid4()
    for _ in range(2):
        breakers.record(hook, ok=False)
    breakers.record(hook, ok=True)  # a success resets the count
    for _ in range(2):
        breakers.record(hook, ok=False)
    assert breakers.held_back() == [] and breakers.limit(hook, 10) == 10
    breakers.record(hook, ok=False)
    assert breakers.held_back() == [hook], "open after 3 failures in a row"
    now[0] += 10.5
    assert breakers.held_back() == [] and breakers.limit(hook, 10) == 1, "half-open: one probe"
    breakers.started(hook)
    assert breakers.held_back() == [hook], "nothing more while the probe is out"
    breakers.record(hook, ok=False)
    now[0] += 15
    assert breakers.held_back() == [hook], "a failed probe opens it for twice as long"
    now[0] += 6
    breakers.started(hook)
    breakers.record(hook, ok=True)
    assert breakers.held_back() == [] and breakers.limit(hook, 10) == 10, "a successful probe closes it"


def test_the_open_breakers_gauge_follows_each_breaker_without_a_claim(monkeypatch: pytest.MonkeyPatch) -> None:
    from triggers_webhooks.dispatch import OPEN_BREAKERS

    now = [1000.0]
    monkeypatch.setattr("triggers_webhooks.dispatch.time.monotonic", lambda: now[0])
    breakers, hook = Breakers(failures=2, cooldown_s=10), uuid.uuid4()

    def gauge() -> float:
        return float(OPEN_BREAKERS._value.get())

    breakers.record(hook, ok=False)
    breakers.record(hook, ok=False)
    assert gauge() == 1, "opened"
    now[0] += 10.5
    breakers.started(hook)  # the probe
    breakers.record(hook, ok=True)
    assert gauge() == 0, "closed by the probe's success, before any further claim"
