"""The dashboards and alert rules against a real Prometheus (Debian's ``prometheus`` package) scraping the
running stack every second: traffic on every service, then every dashboard query must answer with data, every
alert expression must evaluate and every rule group must be loaded and healthy."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import yaml

from tests.support import (
    DASHBOARDS,
    ROOT,
    RULE_FILES,
    Receiver,
    Server,
    alert_rules,
    dashboard_queries,
    event,
    free_port,
    wait_until,
)

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
async def prometheus(server: Server, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[httpx.AsyncClient]:
    """A Prometheus server on a free port that scrapes the test server and loads deploy/prometheus's rules."""
    subprocess.run([str(ROOT / "scripts" / "prometheus.sh"), "install"], check=True)
    home = tmp_path_factory.mktemp("prometheus")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(path) for path in RULE_FILES],
        "scrape_configs": [{"job_name": "triggers", "static_configs": [{"targets": [server.url[len("http://") :]]}]}],
    }
    (home / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    with (home / "prometheus.log").open("wb") as log:
        process = subprocess.Popen(
            [
                "prometheus",
                f"--config.file={home / 'prometheus.yml'}",
                f"--storage.tsdb.path={home / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5.0) as client:

            async def scraped() -> bool:
                assert process.poll() is None, (home / "prometheus.log").read_text()[-2000:]
                try:
                    answer = await client.get("/api/v1/query", params={"query": 'up{job="triggers"} == 1'})
                except httpx.TransportError:
                    return False
                return answer.status_code == 200 and bool(answer.json()["data"]["result"])  # 503 while starting

            await wait_until(scraped, timeout=30, interval=0.2, what="Prometheus to scrape the test server")
            yield client
    finally:
        process.terminate()
        process.wait(10)


async def query(client: httpx.AsyncClient, promql: str) -> list[Any]:
    answer = (await client.get("/api/v1/query", params={"query": promql})).json()
    assert answer["status"] == "success", (promql, answer)
    result: list[Any] = answer["data"]["result"]
    return result


async def traffic(client: httpx.AsyncClient, tenant_key: str) -> None:
    """Requests that make every series the dashboards show exist: ingest (single, bulk, a 4xx), the inbox (list,
    ack, one event left pending) and a webhook delivered to a real receiver."""
    key = {"X-API-Key": tenant_key}
    async with Receiver() as receiver:
        hook = await client.post("/v1/webhooks", json={"url": receiver.url, "events": ["*"]}, headers=key)
        assert hook.status_code == 201, hook.text
        single = await client.post("/v1/events", json=event(), headers=key)
        assert single.status_code == 201, single.text
        bulk = await client.post("/v1/events/bulk", json={"items": [event(), event()]}, headers=key)
        assert bulk.status_code == 201, bulk.text
        assert (await client.post("/v1/events", json={"source": ""}, headers=key)).status_code == 400
        assert (await client.get(f"/v1/webhooks/{uuid.uuid4()}", headers=key)).status_code == 404

        async def delivered() -> bool:
            return len(receiver.requests) >= 3

        await wait_until(delivered, timeout=30, what="the webhook deliveries")
    assert (await client.post(f"/v1/events/{single.json()['event_id']}/ack", headers=key)).status_code == 200
    assert (await client.get("/v1/inbox", headers=key)).json()["events"], "the bulk events stay pending"


async def test_every_dashboard_query_and_alert_rule_answers(
    prometheus: httpx.AsyncClient, client: httpx.AsyncClient, tenant_key: str
) -> None:
    await traffic(client, tenant_key)
    queries = [(f"{path.stem}: {title}", expr) for path in DASHBOARDS for title, expr in dashboard_queries(path)]
    empty: list[str] = []

    async def every_query_has_data() -> bool:
        empty[:] = [f"{name}\n    {expr}" for name, expr in queries if not await query(prometheus, expr)]
        return not empty

    try:
        await wait_until(every_query_has_data, timeout=45, interval=1.0, what="data for every dashboard query")
    except AssertionError:
        pytest.fail("dashboard queries without data:\n" + "\n".join(empty))

    served = await query(prometheus, 'sum(triggers_http_request_seconds_count{route="/v1/events", status="2xx"})')
    assert float(served[0]["value"][1]) >= 1, "the ingest request was counted under its route template"

    # the $job variable: label_values(triggers_http_request_seconds_count, job)
    match = {"match[]": "triggers_http_request_seconds_count"}
    assert (await prometheus.get("/api/v1/label/job/values", params=match)).json()["data"] == ["triggers"]

    for _, _, expr in alert_rules():
        await query(prometheus, expr)  # asserts status success; an alert that does not fire answers no data

    expected = {(group, alert) for group, alert, _ in alert_rules()}

    async def rules_evaluated() -> list[Any] | None:
        groups = (await prometheus.get("/api/v1/rules")).json()["data"]["groups"]
        rules = [(g["name"], r) for g in groups for r in g["rules"]]
        return rules if all(r["health"] != "unknown" for _, r in rules) else None

    rules = await wait_until(rules_evaluated, timeout=20, interval=0.5, what="every rule to be evaluated")
    assert {(group, r["name"]) for group, r in rules} == expected
    assert [r for _, r in rules if r["health"] != "ok"] == []
