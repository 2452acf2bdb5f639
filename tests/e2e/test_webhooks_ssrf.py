"""The SSRF guard of a webhooks target configured as in production (private destinations refused). Its own
module, so the strict server (which joins the same consumer group and dispatches from the same database,
refusing every private receiver) lives only while these tests run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from triggers_common.db import Pool

from tests.e2e.test_webhooks import HOOK, auth
from tests.support import Server

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
async def strict_server(test_env: dict[str, str], pool: Pool, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The webhooks target with private destinations refused, as in production."""
    env = {**test_env, "TRIGGERS_WEBHOOKS_ALLOW_PRIVATE": "false"}
    server = await Server(env, target="webhooks", log_dir=Path(tmp_path_factory.mktemp("strict"))).start()
    yield server
    server.stop()


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]:8080/hook",
        "http://10.1.2.3/hook",
        "http://[::ffff:10.0.0.1]/hook",
        "http://localhost:8080/hook",  # a DNS name that resolves to loopback
        "http://0.0.0.0/hook",
        "https://no-such-host.invalid/hook",
    ],
)
async def test_private_and_unresolvable_destinations_are_refused(
    strict_server: Server, tenant_key: str, url: str
) -> None:
    async with httpx.AsyncClient(base_url=strict_server.url, headers=auth(tenant_key)) as c:
        response = await c.post("/v1/webhooks", json={**HOOK, "url": url})
        assert response.status_code == 400, response.text
        assert response.json()["error"]["details"]["validation_errors"][0]["field"] == "body.url"
        assert json.dumps((await c.get("/v1/webhooks")).json()["webhooks"]) == "[]"
