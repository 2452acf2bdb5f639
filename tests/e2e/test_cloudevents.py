"""CloudEvents in, sent by the official CloudEvents Python SDK, in structured and binary mode."""

from __future__ import annotations

import httpx
import pytest
from cloudevents.v1.conversion import to_binary, to_structured
from cloudevents.v1.http import CloudEvent

pytestmark = pytest.mark.e2e


def cloud_event(**attributes: str) -> CloudEvent:
    base = {"type": "com.example.order.created", "source": "/shop/orders", "id": "ce-1", "subject": "order-42"}
    return CloudEvent({**base, **attributes}, {"order_id": 42, "total": 19.99})


@pytest.mark.parametrize("mode", [to_structured, to_binary], ids=["structured", "binary"])
async def test_cloudevent_is_ingested_and_mapped(client: httpx.AsyncClient, tenant_key: str, mode: object) -> None:
    headers, body = mode(cloud_event(id=f"ce-{mode.__name__}"))  # type: ignore[operator]
    response = await client.post("/v1/events", content=body, headers={**headers, "X-API-Key": tenant_key})
    assert response.status_code == 201, response.text
    event = (await client.get(f"/v1/events/{response.json()['event_id']}", headers={"X-API-Key": tenant_key})).json()
    assert event["source"] == "/shop/orders"
    assert event["event_type"] == "com.example.order.created"
    assert event["payload"] == {"order_id": 42, "total": 19.99}
    assert event["metadata"]["idempotency_key"] == f"ce-{mode.__name__}"
    assert event["metadata"]["cloudevents"]["subject"] == "order-42"

    # the CloudEvent id is the idempotency key: the same event sent again is not a second event
    again = await client.post("/v1/events", content=body, headers={**headers, "X-API-Key": tenant_key})
    assert again.json()["event_id"] == response.json()["event_id"]
    assert again.headers["idempotent-replayed"] == "true"


async def test_bad_cloudevents(client: httpx.AsyncClient) -> None:
    structured = {"Content-Type": "application/cloudevents+json"}
    cases = [
        (b'{"specversion":"0.3","id":"1","source":"s","type":"t","data":{"a":1}}', "body.specversion"),
        (b'{"specversion":"1.0","source":"s","type":"t","data":{"a":1}}', "body.id"),
        (b'{"specversion":"1.0","id":"1","source":"s","type":"t"}', "body.data"),
        (b'{"specversion":"1.0","id":"1","source":"s","type":" ","data":{"a":1}}', "body.type"),
    ]
    for body, field in cases:
        response = await client.post("/v1/events", content=body, headers=structured)
        assert response.status_code == 400, body
        assert field in {e["field"] for e in response.json()["error"]["details"]["validation_errors"]}
    assert (await client.post("/v1/events", content=b"{", headers=structured)).status_code == 400
    b64 = b'{"specversion":"1.0","id":"1","source":"s","type":"t","data_base64":"AAAA"}'
    assert (await client.post("/v1/events", content=b64, headers=structured)).status_code == 415

    binary = {"ce-specversion": "1.0", "ce-id": "b-1", "ce-source": "s"}  # no ce-type
    missing = await client.post("/v1/events", content=b'{"a":1}', headers=binary)
    assert missing.status_code == 400
    assert missing.json()["error"]["details"]["validation_errors"][0]["field"] == "header.type"
    xml = await client.post(
        "/v1/events", content=b"<a/>", headers={**binary, "ce-type": "t", "Content-Type": "application/xml"}
    )
    assert xml.status_code == 415
