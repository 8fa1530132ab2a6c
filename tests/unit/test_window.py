"""OrderedWindow: bounded concurrency, per-key order, in-order acknowledgement per partition."""

import asyncio

import pytest

from agents.window import OrderedWindow


class Probe:
    def __init__(self) -> None:
        self.acked: list[str] = []
        self.started: list[str] = []
        self.running = 0
        self.most = 0
        self.gates: dict[str, asyncio.Event] = {}

    def work(self, name: str):
        gate = self.gates.setdefault(name, asyncio.Event())

        async def run() -> None:
            self.started.append(name)
            self.running += 1
            self.most = max(self.most, self.running)
            try:
                await gate.wait()
            finally:
                self.running -= 1

        return run

    def finish(self, name: str) -> None:
        self.gates.setdefault(name, asyncio.Event()).set()


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_at_most_limit_run_at_once_and_submit_waits_for_a_slot():
    probe = Probe()
    window = OrderedWindow(2, probe.acked.append)
    await window.submit("a", 0, "k1", probe.work("a"))
    await window.submit("b", 0, "k2", probe.work("b"))
    third = asyncio.ensure_future(window.submit("c", 0, "k3", probe.work("c")))
    await settle()
    assert probe.started == ["a", "b"] and not third.done(), "the third waits for a slot"
    probe.finish("b")
    await settle()
    assert third.done() and probe.started == ["a", "b", "c"] and probe.most == 2
    probe.finish("a")
    probe.finish("c")
    await window.drain()


async def test_acknowledged_in_offset_order_per_partition_never_past_unfinished_work():
    probe = Probe()
    window = OrderedWindow(4, probe.acked.append)
    for name in ("p0-1", "p0-2", "p0-3"):
        await window.submit(name, 0, name, probe.work(name))
    await window.submit("p1-1", 1, "p1-1", probe.work("p1-1"))
    probe.finish("p0-3")
    probe.finish("p0-2")
    probe.finish("p1-1")
    await settle()
    assert probe.acked == ["p1-1"], "p0-2 and p0-3 are done but p0-1 is not: nothing of partition 0 is acked"
    probe.finish("p0-1")
    await window.drain()
    assert probe.acked == ["p1-1", "p0-1", "p0-2", "p0-3"]


async def test_one_key_runs_in_order_other_keys_in_parallel():
    probe = Probe()
    window = OrderedWindow(4, probe.acked.append)
    await window.submit("shot1-attempt1", 0, "scene/1", probe.work("shot1-attempt1"))
    await window.submit("shot1-attempt2", 1, "scene/1", probe.work("shot1-attempt2"))
    await window.submit("shot2", 2, "scene/2", probe.work("shot2"))
    await settle()
    assert probe.started == ["shot1-attempt1", "shot2"], "the second attempt waits for the first"
    probe.finish("shot1-attempt1")
    await settle()
    assert probe.started[-1] == "shot1-attempt2"
    probe.finish("shot1-attempt2")
    probe.finish("shot2")
    await window.drain()


async def test_close_cancels_work_in_flight_and_acknowledges_none_of_it():
    probe = Probe()
    window = OrderedWindow(3, probe.acked.append)
    for name in ("a", "b", "c"):
        await window.submit(name, 0, name, probe.work(name))
    probe.finish("a")
    await settle()
    await window.close()
    assert probe.acked == ["a"] and window.in_flight == 0


def test_a_limit_under_one_is_refused():
    with pytest.raises(ValueError, match="at least 1"):
        OrderedWindow(0, print)
