"""Kafka transactions for ingest: group commit over a few lanes, each lane driven request by request.

Why not aiokafka's transactional ``AIOKafkaProducer``: ingest commits a transaction every few milliseconds,
and that producer's sender task and state machine spent about twice the client CPU per transaction of the
same requests sent directly (measured one-record transactions, three lanes taking turns: 670-770 µs against
340-400 µs, and 1.6-1.8 ms against 1.1-1.3 ms of wall time). A lane here sends the four requests of the
protocol itself (InitProducerId once, then AddPartitionsToTxn, Produce and EndTxn per transaction) through
aiokafka's client, which still owns connections, metadata and the wire format.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import aiokafka.errors as errors
import cramjam
from aiokafka.client import AIOKafkaClient, ConnectionGroup, CoordinationType
from aiokafka.errors import KafkaError
from aiokafka.protocol.produce import ProduceRequest
from aiokafka.protocol.transaction import AddPartitionsToTxnRequest, EndTxnRequest, InitProducerIdRequest
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.record.util import calc_crc32c
from aiokafka.structs import TopicPartition
from prometheus_client import Histogram

from triggers_common.kafka import PRODUCE_SECONDS, Headers, broker_unavailable, connect, partition_of
from triggers_common.kafka_protocol import (
    ApiVersions,
    CommitTransaction,
    TransactionalProduce,
    finalized_level,
    produce_errors,
)
from triggers_common.settings import Settings

Record = tuple[bytes | None, bytes, Headers]

TRANSACTION_SECONDS = Histogram(
    "triggers_kafka_transaction_seconds",
    "Time to begin, send and commit one group of events",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
TRANSACTION_REQUESTS = Histogram(
    "triggers_kafka_transaction_requests",
    "Requests committed together in one transaction (group commit)",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)

MIN_LINGER_S = 0.002
MAX_LINGER_S = 0.005
"""While other lanes commit, a free lane waits before it takes the next group: about as long as a transaction has
been taking lately, within these bounds. Under load transactions get slow, and a lane that took whoever was waiting
at once made many small ones, whose fixed cost (client, broker and every consumer's fetch) slowed them more. The
ceiling bounds what single events wait while big (bulk) transactions are committing."""
BATCH_BYTES = 256 * 1024
"""At most this much (before compression) in one partition's batch; a bigger group takes several requests."""
LZ4 = 3
_NO_COMPRESSION = 0
# Where a record batch's fields are (Kafka's RecordBatch format v2): the length counts the bytes after itself,
# the CRC-32C covers everything from the attributes on, and the records follow the 61-byte header.
_LENGTH = 8
_CRC = 17
_ATTRIBUTES = 21
_BATCH_HEADER = 61
SEQUENCE_MODULUS = 2**31
"""Kafka's producer sequence numbers wrap around to 0 after the largest int32."""
BUSY_BACKOFF_S = 0.005
"""How long to wait when the coordinator is busy: mostly CONCURRENT_TRANSACTIONS, which lasts until the previous
transaction's markers are written, a few ms."""
_BUSY = frozenset({errors.ConcurrentTransactions, errors.CoordinatorLoadInProgressError})
_MOVED = frozenset({errors.CoordinatorNotAvailableError, errors.NotCoordinatorError})
_UNREACHABLE = -100
"""Stands for a partition's error code when its leader could not be reached (whether it appended is unknown)."""


def record_batch(records: list[Record], producer_id: int, epoch: int, sequence: int) -> tuple[bytearray, int]:
    """A transactional record batch (format v2) of the first ``records`` that fit in ``BATCH_BYTES``,
    LZ4-compressed, and how many records it holds.

    aiokafka's builder lays the batch out; the compression is done here, because aiokafka compresses LZ4 at
    level 9, which LZ4 does in its slow high-compression mode: 15 times the CPU of its fast mode (0.72 against
    0.05 ms for 500 events) for 0-2 % smaller batches. Kafka's own Java client uses the fast mode by default.
    """
    builder = DefaultRecordBatchBuilder(2, _NO_COMPRESSION, 1, producer_id, epoch, sequence, BATCH_BYTES)
    count = 0
    for key, value, headers in records:
        if builder.append(count, None, key=key, value=value, headers=headers) is None:
            break  # full; the first record always fits
        count += 1
    batch = builder.build()
    compressor = cramjam.lz4.Compressor(level=0, content_checksum=False, block_linked=False)  # Kafka's framing
    compressor.compress(bytes(memoryview(batch)[_BATCH_HEADER:]))
    records_lz4 = compressor.finish()
    if len(records_lz4) >= len(batch) - _BATCH_HEADER:
        return batch, count  # nothing gained: sent as it is
    compressed = batch[:_BATCH_HEADER] + bytes(records_lz4)
    attributes = int.from_bytes(compressed[_ATTRIBUTES : _ATTRIBUTES + 2], "big") | LZ4
    compressed[_ATTRIBUTES : _ATTRIBUTES + 2] = attributes.to_bytes(2, "big")
    compressed[_LENGTH : _LENGTH + 4] = (len(compressed) - _LENGTH - 4).to_bytes(4, "big")
    compressed[_CRC : _CRC + 4] = calc_crc32c(memoryview(compressed)[_ATTRIBUTES:]).to_bytes(4, "big")
    return compressed, count


class _Pending:
    __slots__ = ("deadline", "done", "records")

    def __init__(self, records: Sequence[Record], deadline: float) -> None:
        self.records = records
        self.deadline = deadline
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()


class _Lane:
    """One transactional id and its producer id and epoch; lanes commit side by side, so one lane's round trips
    overlap another's. Each lane has a client of its own, so the broker works on the lanes' requests at once (it
    takes a connection's requests one at a time)."""

    def __init__(self, settings: Settings, topic: str, transactional_id: str, version: int | None = None) -> None:
        """``version``: the transaction protocol to use, 1 or 2; by default 2 where the cluster has it."""
        self._settings = settings
        self.version = version
        self._topic = topic
        self.transactional_id = transactional_id
        self.client: AIOKafkaClient | None = None
        self._coordinator: int | None = None
        self._producer_id = -1
        self._epoch = -1
        self._sequences: dict[int, int] = collections.defaultdict(int)

    @property
    def ready(self) -> bool:
        return self._producer_id >= 0

    def forget(self) -> None:
        """After a failure: the next :meth:`start` takes a new epoch, which aborts what this one left open."""
        self._producer_id = -1

    async def start(self, timeout_s: float) -> None:
        """Connect if needed and get a producer id and epoch. For a transactional id used before, the broker first
        aborts that holder's unfinished transaction (it answers "busy" until then) and fences it off."""
        async with asyncio.timeout(timeout_s):
            await self._start(timeout_s)

    async def _start(self, timeout_s: float) -> None:
        s = self._settings
        if self.client is None:
            self.client = await connect(
                lambda: AIOKafkaClient(
                    bootstrap_servers=s.kafka_bootstrap,
                    request_timeout_ms=max(int(s.send_timeout_s * 1000), 1000),
                    retry_backoff_ms=20,
                ),
                timeout_s,
            )
        timeout_ms = max(int(s.send_timeout_s * 2000), 10_000)
        response = await self._coordinated(InitProducerIdRequest(self.transactional_id, timeout_ms), _error_code)
        self._producer_id, self._epoch = response.producer_id, response.producer_epoch
        self._sequences.clear()
        if self.version is None:
            assert self._coordinator is not None
            versions = await self.client.send(self._coordinator, ApiVersions())
            self.version = 2 if finalized_level(versions, "transaction.version") >= 2 else 1

    async def send(self, records: list[Record]) -> None:
        """Begin a transaction and append ``records`` to it. Raises on any failure: the caller then makes the lane
        :meth:`forget` its epoch, so nothing of the transaction ever becomes visible."""
        by_partition = await self._partitioned(records)
        if self.version == 2:  # each Produce adds its partitions to the transaction
            await self._produce(by_partition)
            return
        await self._coordinated(
            AddPartitionsToTxnRequest(
                self.transactional_id, self._producer_id, self._epoch, [(self._topic, sorted(by_partition))]
            ),
            _first_partition_error,
        )
        await self._produce(by_partition)

    async def commit(self) -> None:
        """Commit what :meth:`send` appended (asking again is safe: the broker knows a repeated commit)."""
        if self.version == 2:  # the commit starts a new epoch, whose sequence numbers start at 0
            response = await self._coordinated(
                CommitTransaction(self.transactional_id, self._producer_id, self._epoch), _error_code
            )
            self._producer_id, self._epoch = response.producer_id, response.producer_epoch
            self._sequences.clear()
            return
        await self._coordinated(
            EndTxnRequest(self.transactional_id, self._producer_id, self._epoch, transaction_result=True), _error_code
        )

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()

    async def _partitioned(self, records: list[Record]) -> dict[int, list[Record]]:
        assert self.client is not None
        partitions = self.client.cluster.partitions_for_topic(self._topic)
        if partitions is None:
            partitions = await self.client._wait_on_metadata(self._topic)
        ordered = sorted(partitions)
        by_partition: dict[int, list[Record]] = collections.defaultdict(list)
        for record in records:
            by_partition[partition_of(record[0], ordered, ordered)].append(record)
        return by_partition

    async def _coordinated(self, request: Any, error_of: Callable[[Any], int]) -> Any:
        """Send a request to the transaction coordinator until it is answered without a retriable error (the
        caller bounds how long)."""
        assert self.client is not None
        delay = BUSY_BACKOFF_S
        while True:
            try:
                if self._coordinator is None:
                    self._coordinator = await self.client.coordinator_lookup(
                        CoordinationType.TRANSACTION, self.transactional_id
                    )
                response = await self.client.send(self._coordinator, request, group=ConnectionGroup.COORDINATION)
                error = errors.for_code(error_of(response))
            except KafkaError as exc:
                if not exc.retriable:
                    raise
                self._coordinator, error = None, type(exc)  # look it up again: it may have moved, or be back
            if error is errors.NoError:
                return response
            if error in _MOVED:
                self._coordinator = None
            elif error not in _BUSY and not error.retriable:
                raise error()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)

    async def _produce(self, by_partition: dict[int, list[Record]]) -> None:
        """Append every record: per request, one batch per partition (the protocol allows no more), the
        partitions' requests to their leaders at once, until all are acknowledged."""
        assert self.client is not None
        waiting = {partition: list(records) for partition, records in by_partition.items()}
        delay = BUSY_BACKOFF_S
        while waiting:
            batches = {partition: self._batch(partition, records) for partition, records in waiting.items()}
            by_leader: dict[int, list[int]] = collections.defaultdict(list)
            for partition in batches:
                leader = self.client.cluster.leader_for_partition(TopicPartition(self._topic, partition))
                if leader is None or leader < 0:
                    by_leader.clear()
                    break
                by_leader[leader].append(partition)
            answers = await asyncio.gather(
                *(self._send_batches(leader, {p: batches[p][0] for p in ps}) for leader, ps in by_leader.items())
            )
            retry = not by_leader
            for codes in answers:
                for partition, code in codes.items():
                    if code == _UNREACHABLE:
                        retry = True
                        continue
                    error = errors.for_code(code)
                    if error is errors.NoError or error is errors.DuplicateSequenceNumber:  # appended (before)
                        count = batches[partition][1]
                        self._sequences[partition] = (self._sequences[partition] + count) % SEQUENCE_MODULUS
                        del waiting[partition][:count]
                        if not waiting[partition]:
                            del waiting[partition]
                    elif error.retriable or error is errors.ConcurrentTransactions:  # the broker drops duplicates
                        retry = True
                    else:
                        raise error()
            if retry:
                await self.client.force_metadata_update()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.5)

    def _batch(self, partition: int, records: list[Record]) -> tuple[bytearray, int]:
        """The next batch of ``records`` for ``partition`` (as many as fit), and how many records it holds."""
        return record_batch(records, self._producer_id, self._epoch, self._sequences[partition])

    async def _send_batches(self, leader: int, batches: dict[int, bytearray]) -> dict[int, int]:
        """Each partition's error code (0 when acknowledged by every in-sync replica)."""
        assert self.client is not None
        timeout_ms = max(int(self._settings.send_timeout_s * 1000), 1000)
        request: ProduceRequest | TransactionalProduce
        if self.version == 2:
            request = TransactionalProduce(self.transactional_id, timeout_ms, self._topic, batches)
        else:
            request = ProduceRequest(self.transactional_id, -1, timeout_ms, [(self._topic, list(batches.items()))])
        try:
            response = await self.client.send(leader, request)
        except (errors.KafkaConnectionError, errors.NodeNotReadyError, errors.RequestTimedOutError):
            return {partition: _UNREACHABLE for partition in batches}
        return produce_errors(response)


def _error_code(response: Any) -> int:
    code: int = response.error_code
    return code


def _first_partition_error(response: Any) -> int:
    for _, partitions in response.errors:
        for _, code in partitions:
            if code:
                return int(code)
    return 0


class TransactionalProducer:
    """Sends events in Kafka transactions, so a 503 is final: what was refused never becomes visible.

    Requests are grouped: a lane that is free takes everyone waiting into one transaction (group commit),
    and while it commits the next lane collects the requests that arrive meanwhile. A transaction that
    cannot commit before its earliest request's deadline fails; the lane then takes a new epoch before its
    next transaction, which aborts the failed one (at the latest the broker aborts it after the transaction
    timeout), and read_committed consumers never see it.
    """

    def __init__(self, settings: Settings, topic: str, name: str, lanes: int = 3, version: int | None = None) -> None:
        self._settings = settings
        self._topic = topic
        instance = uuid.uuid4().hex[:12]
        self._lanes = [
            _Lane(settings, topic, f"{settings.consumer_group_prefix}-{name}-{instance}-{i}", version)
            for i in range(lanes)
        ]
        self._queue: list[_Pending] = []
        self._wakeup = asyncio.Event()
        self._idle: collections.deque[_Lane] = collections.deque()
        self._dispatcher: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()
        self._transaction_s = 0.0
        """How long a transaction has been taking lately (moving average)."""

    async def start(self) -> None:
        for lane in self._lanes:
            await lane.start(60.0)
        self._idle.extend(self._lanes)
        self._dispatcher = asyncio.create_task(self._dispatch(), name="kafka-transactions")

    async def stop(self) -> None:
        tasks = [t for t in (self._dispatcher, *self._running) if t is not None]
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for lane in self._lanes:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(lane.close(), 5)

    async def send_many(self, records: Sequence[Record]) -> None:
        """Return once ``records`` are committed; raise :class:`ServiceUnavailable` if they never will be."""
        started = time.perf_counter()
        pending = _Pending(records, time.monotonic() + self._settings.send_timeout_s)
        self._queue.append(pending)
        self._wakeup.set()
        try:
            async with asyncio.timeout(self._settings.send_timeout_s + 2.0):  # backstop; a lane answers first
                await asyncio.shield(pending.done)
        except TimeoutError as exc:
            raise broker_unavailable(self._topic, exc) from exc
        PRODUCE_SECONDS.observe(time.perf_counter() - started)

    async def _dispatch(self) -> None:
        """Hand waiting requests to the lane idle the longest. A lane that just committed goes last: its
        next transaction would be refused (CONCURRENT_TRANSACTIONS) until the broker wrote the markers."""
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue and self._idle:
                if len(self._idle) < len(self._lanes):
                    # Others are committing: the broker is the bottleneck, so gather a bigger group first.
                    await asyncio.sleep(min(max(self._transaction_s, MIN_LINGER_S), MAX_LINGER_S))
                lane = self._idle.popleft()
                group, self._queue = self._queue, []
                task = asyncio.create_task(self._run(lane, group))
                self._running.add(task)
                task.add_done_callback(self._running.discard)

    async def _run(self, lane: _Lane, group: list[_Pending]) -> None:
        try:
            await self._commit(lane, group)
        finally:
            self._idle.append(lane)
            self._wakeup.set()

    async def _commit(self, lane: _Lane, group: list[_Pending]) -> None:
        deadline = min(p.deadline for p in group)
        started = time.perf_counter()
        TRANSACTION_REQUESTS.observe(len(group))
        try:
            async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                if not lane.ready:
                    await lane.start(max(0.0, deadline - time.monotonic()))
                await lane.send([record for p in group for record in p.records])
                await lane.commit()
        except (TimeoutError, KafkaError, OSError) as exc:
            lane.forget()
            error = broker_unavailable(self._topic, exc)
            for p in group:
                if not p.done.done():
                    p.done.set_exception(error)
                    p.done.exception()
            return
        took = time.perf_counter() - started
        self._transaction_s += (took - self._transaction_s) / 10
        TRANSACTION_SECONDS.observe(took)
        for p in group:
            if not p.done.done():
                p.done.set_result(None)
