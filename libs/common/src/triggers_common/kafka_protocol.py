"""Kafka requests aiokafka does not define, for transactions v2 (KIP-890): Produce v12, EndTxn v5, and
ApiVersions v3 to read which features the cluster has finalized. Encoded with aiokafka's own types."""

from __future__ import annotations

from io import BytesIO
from typing import Any

from aiokafka.protocol.api import Request, RequestStruct, Response, ResponseHeader_v0
from aiokafka.protocol.types import (
    Boolean,
    CompactArray,
    CompactBytes,
    CompactString,
    Int16,
    Int32,
    Int64,
    Schema,
    TaggedFields,
)

PRODUCE_V2 = 12
"""The first Produce version that adds a partition to the producer's transaction by itself."""
END_TXN_V2 = 5
"""The first EndTxn version that answers with the producer epoch of the next transaction."""


class ProduceResponse_v12(Response):
    API_KEY = 0
    API_VERSION = PRODUCE_V2
    SCHEMA = Schema(
        (
            "responses",
            CompactArray(
                ("name", CompactString("utf-8")),
                (
                    "partitions",
                    CompactArray(
                        ("index", Int32),
                        ("error_code", Int16),
                        ("base_offset", Int64),
                        ("log_append_time_ms", Int64),
                        ("log_start_offset", Int64),
                        (
                            "record_errors",
                            CompactArray(
                                ("batch_index", Int32), ("message", CompactString("utf-8")), ("tags", TaggedFields)
                            ),
                        ),
                        ("error_message", CompactString("utf-8")),
                        ("tags", TaggedFields),
                    ),
                ),
                ("tags", TaggedFields),
            ),
        ),
        ("throttle_time_ms", Int32),
        ("tags", TaggedFields),
    )


class ProduceRequest_v12(RequestStruct):
    API_KEY = 0
    API_VERSION = PRODUCE_V2
    FLEXIBLE_VERSION = True
    RESPONSE_TYPE = ProduceResponse_v12
    SCHEMA = Schema(
        ("transactional_id", CompactString("utf-8")),
        ("acks", Int16),
        ("timeout_ms", Int32),
        (
            "topics",
            CompactArray(
                ("name", CompactString("utf-8")),
                ("partitions", CompactArray(("index", Int32), ("records", CompactBytes), ("tags", TaggedFields))),
                ("tags", TaggedFields),
            ),
        ),
        ("tags", TaggedFields),
    )


class TransactionalProduce(Request[ProduceRequest_v12]):
    """Produce v12: appends to a transaction that it begins, or extends, by itself."""

    API_KEY = 0

    def __init__(self, transactional_id: str, timeout_ms: int, topic: str, batches: dict[int, bytearray]) -> None:
        self._fields = (transactional_id, timeout_ms, topic, batches)

    def build(self, request_struct_class: type[ProduceRequest_v12]) -> ProduceRequest_v12:
        transactional_id, timeout_ms, topic, batches = self._fields
        partitions: list[Any] = [(partition, bytes(batch), {}) for partition, batch in batches.items()]
        return request_struct_class(transactional_id, -1, timeout_ms, [(topic, partitions, {})], {})


def produce_errors(response: Any) -> dict[int, int]:
    """Each partition's error code from a Produce response of any version (v12 renamed ``topics``)."""
    topics = response.responses if hasattr(response, "responses") else response.topics
    return {answer[0]: answer[1] for _, partitions, *_ in topics for answer in partitions}


class EndTxnResponse_v5(Response):
    API_KEY = 26
    API_VERSION = END_TXN_V2
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        ("error_code", Int16),
        ("producer_id", Int64),
        ("producer_epoch", Int16),
        ("tags", TaggedFields),
    )


class EndTxnRequest_v5(RequestStruct):
    API_KEY = 26
    API_VERSION = END_TXN_V2
    FLEXIBLE_VERSION = True
    RESPONSE_TYPE = EndTxnResponse_v5
    SCHEMA = Schema(
        ("transactional_id", CompactString("utf-8")),
        ("producer_id", Int64),
        ("producer_epoch", Int16),
        ("committed", Boolean),
        ("tags", TaggedFields),
    )


class CommitTransaction(Request[EndTxnRequest_v5]):
    """EndTxn v5 (commit): the broker bumps the epoch, and answers with the producer id and epoch to go on with."""

    API_KEY = 26

    def __init__(self, transactional_id: str, producer_id: int, producer_epoch: int) -> None:
        self._fields = (transactional_id, producer_id, producer_epoch)

    def build(self, request_struct_class: type[EndTxnRequest_v5]) -> EndTxnRequest_v5:
        return request_struct_class(*self._fields, True, {})


class ApiVersionsResponse_v3(Response):
    API_KEY = 18
    API_VERSION = 3
    SCHEMA = Schema(
        ("error_code", Int16),
        (
            "api_keys",
            CompactArray(("api_key", Int16), ("min_version", Int16), ("max_version", Int16), ("tags", TaggedFields)),
        ),
        ("throttle_time_ms", Int32),
        ("tags", TaggedFields),
    )


class ApiVersionsRequest_v3(RequestStruct):
    API_KEY = 18
    API_VERSION = 3
    FLEXIBLE_VERSION = True
    RESPONSE_TYPE = ApiVersionsResponse_v3
    SCHEMA = Schema(
        ("client_software_name", CompactString("utf-8")),
        ("client_software_version", CompactString("utf-8")),
        ("tags", TaggedFields),
    )

    def parse_response_header(self, read_buffer: BytesIO | bytes) -> Any:
        return ResponseHeader_v0.decode(read_buffer)  # ApiVersions answers with header v0 in every version


class ApiVersions(Request[ApiVersionsRequest_v3]):
    API_KEY = 18

    def build(self, request_struct_class: type[ApiVersionsRequest_v3]) -> ApiVersionsRequest_v3:
        return request_struct_class("triggers", "1", {})


_FINALIZED_FEATURES_TAG = 2
_FEATURES = CompactArray(
    ("name", CompactString("utf-8")), ("max_version_level", Int16), ("min_version_level", Int16), ("tags", TaggedFields)
)


def finalized_level(response: Any, feature: str) -> int:
    """The level the cluster has finalized for ``feature`` (0 when it has not), from an ApiVersions v3 answer."""
    raw = response.tags.get(_FINALIZED_FEATURES_TAG)
    if raw is None:
        return 0
    for name, max_level, *_ in _FEATURES.decode(BytesIO(raw)) or []:
        if name == feature:
            return int(max_level)
    return 0
