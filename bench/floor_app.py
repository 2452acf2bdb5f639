"""The floor: the least a Python endpoint on this stack can do per event, with no framework at all.

POST /v1/events reads the body, decodes it as bench/baseline_app.py does, produces it with the same producer
(acks=all, idempotent, not transactional), waits for the ack and answers 201 with a new event id. Plain ASGI
under uvicorn (uvloop, httptools), in as many processes as the gateway, each with its own socket
(triggers.workers). No auth, rate limits, idempotency keys, Kafka transactions, Postgres or consumers.

bench/run.py saturates it like the gateway, so the table shows what the machine allows any Python ingest path at
that moment: a target above the floor's throughput cannot be met on that machine. GET /ping answers once the
producer is started.
"""

from __future__ import annotations

import uuid
from typing import Any

import msgspec
from aiokafka import AIOKafkaProducer

from bench.baseline_app import TOPIC, Accepted, decoder, encoder, start_producer

Scope = dict[str, Any]
Message = dict[str, Any]

_JSON = [(b"content-type", b"application/json")]
_producer: AIOKafkaProducer | None = None


async def app(scope: Scope, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
    elif scope["type"] == "http":
        await _http(scope, receive, send)


async def _lifespan(receive: Any, send: Any) -> None:
    global _producer
    while True:
        message: Message = await receive()
        if message["type"] == "lifespan.startup":
            _producer = await start_producer()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            if _producer is not None:
                await _producer.stop()
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _http(scope: Scope, receive: Any, send: Any) -> None:
    chunks = []
    while True:
        message: Message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    body = b"".join(chunks)
    if scope["method"] == "GET" and scope["path"] == "/ping":
        await _answer(send, 200, b"ok")
        return
    if scope["method"] != "POST" or scope["path"] != "/v1/events" or _producer is None:
        await _answer(send, 404, b"{}")
        return
    try:
        decoder.decode(body)
    except msgspec.DecodeError as exc:  # ValidationError is a DecodeError
        await _answer(send, 400, encoder.encode({"error": str(exc)}))
        return
    await (await _producer.send(TOPIC, body))
    await _answer(send, 201, encoder.encode(Accepted(str(uuid.uuid4()))))


async def _answer(send: Any, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": _JSON})
    await send({"type": "http.response.body", "body": body})
