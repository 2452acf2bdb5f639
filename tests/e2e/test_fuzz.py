"""Schema-driven fuzzing of every route in /openapi.json: whatever is sent, the answer is never a 5xx."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from triggers_common.auth import create_key, set_tenant_rate_limit
from triggers_common.db import Pool

from tests.support import ROOT

pytestmark = pytest.mark.e2e


async def test_openapi_documents_every_route(server_url: str) -> None:
    async with httpx.AsyncClient(base_url=server_url) as c:
        spec = (await c.get("/openapi.json")).json()
    ingest = spec["paths"]["/v1/events"]["post"]
    assert ingest["requestBody"]["content"]["application/json"]["example"]["source"] == "shop"
    assert {"400", "401", "403", "413", "415", "429", "503"} <= set(ingest["responses"])
    assert {p["name"] for p in ingest["parameters"]} >= {"Idempotency-Key", "X-Signature", "ce-specversion"}
    structured = ingest["requestBody"]["content"]["application/cloudevents+json"]
    assert structured["example"]["specversion"] == "1.0" and structured["schema"]["$ref"].endswith("CloudEventIn")
    assert "idempotent-replayed" in {h.lower() for h in ingest["responses"]["201"]["headers"]}
    assert {"Retry-After", "X-Request-ID"} <= set(ingest["responses"]["429"]["headers"])
    assert "Retry-After" in ingest["responses"]["503"]["headers"]
    reused = ingest["responses"]["422"]["content"]["application/json"]["example"]["error"]
    assert reused["code"] == "IDEMPOTENCY_KEY_REUSED" and reused["request_id"]
    assert {p["name"] for p in ingest["parameters"]} >= {"ce-time", "traceparent", "X-Signature-Timestamp"}
    bulk = spec["paths"]["/v1/events/bulk"]["post"]
    assert bulk["requestBody"] and bulk["responses"]["201"]["content"]["application/json"]["example"]["failed"]
    assert {p["name"] for p in spec["paths"]["/v1/inbox"]["get"]["parameters"]} >= {"limit", "cursor", "source"}
    envelope = spec["components"]["schemas"]["ErrorEnvelope"]
    assert envelope["properties"]["error"]["$ref"].endswith("ErrorBody")


async def test_fuzzing_finds_no_server_error(server_url: str, pool: Pool, tmp_path: Path) -> None:
    async with pool.acquire() as conn:
        await set_tenant_rate_limit(conn, "fuzz", 1_000_000)
        key = (await create_key(conn, "fuzz", rate_limit=1_000_000)).key
    async with httpx.AsyncClient(base_url=server_url) as c:
        spec = (await c.get("/openapi.json")).json()
    for param in spec["paths"]["/v1/inbox"]["get"]["parameters"]:
        if param["name"] == "wait":  # long polls of up to 30 s each would make the run crawl
            param["schema"]["maximum"] = 0.5
    spec["components"]["schemas"]["LeaseIn"]["properties"]["wait"]["maximum"] = 0.5  # the lease's long poll
    schema = tmp_path / "openapi.json"
    schema.write_text(json.dumps(spec))
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "schemathesis"),
            "run",
            str(schema),
            "--url",
            server_url,
            "--header",
            f"X-API-Key: {key}",
            "--checks",
            "not_a_server_error",
            "--max-examples",
            "60",
            "--seed",
            "20261125",
            "--request-timeout",
            "20",
            "--report-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
        check=False,
    )
    async with pool.acquire() as conn:  # the fuzzed webhooks point at junk: stop delivering to them
        await conn.execute("DELETE FROM webhooks WHERE tenant_id = 'fuzz'")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
