"""server/broadcast.py on its own: plain asyncio, no server."""
from __future__ import annotations

import asyncio

import pytest

from server.broadcast import Broadcaster


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


def test_a_subscriber_hears_its_keys_in_order_and_nobody_else_does():
    async def main():
        b = Broadcaster()
        with b.subscribe(1, 2) as one, b.subscribe(2) as two:
            b.publish(1, "a")
            b.publish(2, "b")
            b.publish(3, "nobody listens")
            assert [await one.get(), await one.get()] == ["a", "b"]
            assert await two.get() == "b" and two.empty()
        assert not b and 1 not in b and b.keys() == set()
    run(main())


def test_get_waits_for_the_next_event_without_polling():
    async def main():
        b = Broadcaster()
        with b.subscribe("k") as sub:
            reader = asyncio.ensure_future(sub.get())
            await asyncio.sleep(0)
            assert not reader.done()
            b.publish("k", 7)
            assert await reader == 7
            with pytest.raises(asyncio.TimeoutError):
                await sub.get(timeout=0.01)
            assert await sub.wait(0) is False
    run(main())


def test_a_limited_subscription_drops_beyond_its_limit_and_says_so():
    async def main():
        b = Broadcaster()
        with b.subscribe("k", limit=2) as sub:
            for i in range(5):
                b.publish("k", i)
            assert sub.overflowed and sub.drain() == [0, 1] and sub.empty()
    run(main())


def test_a_signal_coalesces_and_clear_forgets_what_was_heard():
    async def main():
        b = Broadcaster()
        with b.subscribe("k", limit=1) as woken:
            b.publish("k")
            b.publish("k")
            assert len(woken) == 1
            woken.clear()
            assert await woken.wait(0) is False
            b.publish("k")
            assert await woken.wait() is True
    run(main())


def test_publish_last_ends_the_key_for_its_subscribers_only():
    async def main():
        b = Broadcaster()
        with b.subscribe(1, 2) as sub:
            b.publish_last(1, "end of 1")
            assert sub.keys == {2} and 1 not in b and 2 in b
            b.publish(1, "after the end")  # nobody listens to 1 any more
            assert sub.drain() == ["end of 1"]
            sub.ignore(2)
            assert not b
    run(main())


def test_a_callback_subscriber_is_called_at_once_and_its_failure_stops_nobody():
    async def main():
        b = Broadcaster()
        heard = []

        def broken(event):
            raise RuntimeError("a subscriber's bug")
        with b.subscribe("k", call=broken), b.subscribe("k", call=heard.append), b.subscribe("k") as queued:
            b.publish("k", 1)
            assert heard == [1] and queued.drain() == [1]
    run(main())


def test_a_subscriber_may_leave_while_it_hears():
    async def main():
        b = Broadcaster()
        subs = []

        def leave(event):
            subs[0].close()
        subs.append(b.subscribe("k", call=leave))
        with b.subscribe("k") as other:
            b.publish("k", "x")
            assert other.drain() == ["x"] and b.topics["k"] == {other}
    run(main())


def test_a_reader_cancelled_while_waiting_leaves_cleanly():
    async def main():
        b = Broadcaster()

        async def reader():
            with b.subscribe("k") as sub:
                return await sub.get()
        task = asyncio.ensure_future(reader())
        await asyncio.sleep(0)
        assert "k" in b
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not b
        b.publish("k", "to nobody")
    run(main())


def test_matching_keys():
    async def main():
        b = Broadcaster()
        with b.subscribe((1, "x"), (1, "y"), (2, "x")):
            assert sorted(b.matching(lambda k: k[0] == 1)) == [(1, "x"), (1, "y")]
    run(main())
