import os

from aiokafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder
from triggers_common.transactions import BATCH_BYTES, LZ4, record_batch


def records(count: int, size: int = 200) -> list[tuple[bytes | None, bytes, list[tuple[str, bytes]]]]:
    return [
        (b"tenant", b'{"i":%d,"pad":"%s"}' % (i, b"x" * size), [("ce_id", str(i).encode()), ("traceparent", b"00-a")])
        for i in range(count)
    ]


def read(batch: bytearray) -> DefaultRecordBatch:
    parsed = DefaultRecordBatch(bytes(batch))
    assert parsed.validate_crc() and parsed.magic == 2 and parsed.is_transactional
    return parsed


def test_a_batch_is_lz4_compressed_and_reads_back_as_sent() -> None:
    sent = records(500)
    batch, count = record_batch(sent, producer_id=42, epoch=3, sequence=1000)
    assert count == 500
    parsed = read(batch)
    assert parsed.compression_type == LZ4 and len(batch) < sum(len(v) for _, v, _ in sent) / 5
    assert (parsed.producer_id, parsed.producer_epoch, parsed.base_sequence) == (42, 3, 1000)
    got = [(r.key, r.value, r.headers) for r in parsed]
    assert got == [(k, v, h) for k, v, h in sent] and [r.offset for r in read(batch)] == list(range(500))
    # the same batch as aiokafka builds and compresses it, apart from the compressed bytes and the CRC
    builder = DefaultRecordBatchBuilder(2, LZ4, 1, 42, 3, 1000, BATCH_BYTES)
    for i, (k, v, h) in enumerate(sent):
        builder.append(i, None, key=k, value=v, headers=h)
    theirs = DefaultRecordBatch(bytes(builder.build()))
    for field in ("attributes", "last_offset_delta", "producer_id", "producer_epoch", "base_sequence", "base_offset"):
        assert getattr(parsed, field) == getattr(theirs, field), field
    assert [(r.key, r.value, r.headers) for r in theirs] == got


def test_a_batch_holds_what_fits_and_an_incompressible_one_goes_as_it_is() -> None:
    big = records(2000)
    batch, count = record_batch(big, producer_id=1, epoch=0, sequence=0)
    assert 0 < count < 2000 and sum(len(v) for _, v, _ in big[:count]) <= BATCH_BYTES
    assert [r.value for r in read(batch)] == [v for _, v, _ in big[:count]]
    noise = [(None, os.urandom(1024), [])]
    batch, count = record_batch(noise, producer_id=1, epoch=0, sequence=0)
    parsed = read(batch)
    assert count == 1 and parsed.compression_type == 0 and [r.value for r in parsed] == [noise[0][1]]
