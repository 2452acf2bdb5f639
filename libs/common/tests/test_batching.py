import asyncio

import pytest
from triggers_common.batching import Coalescer


class Recorder:
    """A batch function that records each batch and holds it until released."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.release = asyncio.Event()

    async def __call__(self, items: list[int]) -> list[int]:
        self.batches.append(items)
        await self.release.wait()
        if any(i < 0 for i in items):
            raise ValueError("negative")
        return [i * 10 for i in items]


async def test_calls_that_arrive_while_batches_run_share_the_next_batch() -> None:
    run = Recorder()
    coalescer = Coalescer(run, max_in_flight=1)
    first = asyncio.create_task(coalescer.run([1]))
    await asyncio.sleep(0)  # let the first batch start
    later = [asyncio.create_task(coalescer.run(items)) for items in ([2, 3], [4], [5, 6, 7])]
    await asyncio.sleep(0)
    assert run.batches == [[1]]
    run.release.set()
    assert await first == [10]
    assert [await t for t in later] == [[20, 30], [40], [50, 60, 70]]
    assert run.batches == [[1], [2, 3, 4, 5, 6, 7]]


async def test_a_batch_never_exceeds_max_batch_but_never_splits_a_call() -> None:
    run = Recorder()
    run.release.set()
    coalescer = Coalescer(run, max_batch=3, max_in_flight=1)
    results = await asyncio.gather(*(coalescer.run(items) for items in ([1], [2, 3], [4, 5, 6, 7], [8])))
    assert results == [[10], [20, 30], [40, 50, 60, 70], [80]]
    assert run.batches == [[1], [2, 3], [4, 5, 6, 7], [8]]


async def test_a_failed_batch_fails_each_of_its_calls_and_the_next_batch_still_runs() -> None:
    run = Recorder()
    coalescer = Coalescer(run, max_in_flight=1)
    blocker = asyncio.create_task(coalescer.run([0]))
    await asyncio.sleep(0)
    doomed = [asyncio.create_task(coalescer.run(items)) for items in ([1], [-1])]
    await asyncio.sleep(0)
    run.release.set()
    assert await blocker == [0]
    for task in doomed:
        with pytest.raises(ValueError, match="negative"):
            await task
    assert await coalescer.run([2]) == [20]


async def test_no_items_run_no_batch() -> None:
    run = Recorder()
    assert await Coalescer(run).run([]) == []
    assert run.batches == []
