"""Pool behaviour (least-loaded, bounds, failover, health) against FAKE servers."""

from __future__ import annotations

import asyncio

import pytest

from comfy.errors import ExecutionFailed, ModelMissing, ServerBusy, ServersUnavailable, ValidationFailed
from comfy.pool import ComfyPool, PoolConfig
from tests.unit.comfy.conftest import FAST_CLIENT, FAST_JOB, eventually, save_graph
from tests.unit.comfy.fake_server import FakeComfy


@pytest.fixture
async def fakes():
    servers = [FakeComfy(), FakeComfy()]
    for s in servers:
        await s.start()
    yield servers
    for s in servers:
        await s.stop()


def make_pool(urls, **config) -> ComfyPool:
    return ComfyPool(urls, config=PoolConfig(**{"down_for": 0.2, "backoff": 0.01, **config}),
                     job_config=FAST_JOB, client_config=FAST_CLIENT)


async def server_of(client, result):
    return client.url


async def test_least_loaded_spreads_jobs_and_bounds_in_flight(fakes):
    pool = make_pool([f.url for f in fakes], max_in_flight=1)
    await pool.start()
    peak = 0

    async def finish(client, result):
        nonlocal peak
        peak = max(peak, max(s.in_flight for s in pool.servers))
        return client.url

    slow = save_graph({"2": {"class_type": "Slow", "inputs": {"seconds": 0.1}}}, "2")
    used = await asyncio.gather(*(pool.run(slow, finish=finish, deadline_s=5) for _ in range(4)))
    assert sorted(set(used)) == sorted(f.url for f in fakes)
    assert peak == 1  # never two jobs on one server
    assert all(len(f.submissions) == 2 for f in fakes)
    await pool.aclose()


async def test_dead_server_is_marked_down_and_jobs_fail_over(fakes):
    dead = FakeComfy()
    await dead.start()
    url = dead.url
    await dead.stop()  # nothing listens there any more
    pool = make_pool([url, fakes[0].url])
    await pool.start()
    assert [s["healthy"] for s in pool.status()] == [False, True]
    result = await pool.run(save_graph(), finish=server_of, deadline_s=5)
    assert result == fakes[0].url
    await pool.aclose()


async def test_down_server_is_probed_again_later(fakes):
    pool = make_pool([fakes[0].url], down_for=0.1)
    await pool.start()
    server = pool.servers[0]
    pool._mark_down(server, RuntimeError("test"))
    assert pool.status()[0]["healthy"] is False
    assert await pool.run(save_graph(), finish=server_of, deadline_s=5) == fakes[0].url
    assert pool.status()[0]["healthy"] is True
    await pool.aclose()


async def test_no_server_before_the_deadline_is_a_clear_transient_error():
    dead = FakeComfy()
    await dead.start()
    url = dead.url
    await dead.stop()
    pool = make_pool([url])
    await pool.start()
    with pytest.raises(ServerBusy, match="down"):  # at its deadline; the guard only catches a hang
        await asyncio.wait_for(pool.run(save_graph(), finish=server_of, deadline_s=0.5), 60)
    await pool.aclose()


async def test_missing_model_tries_another_server_then_is_final(fakes):
    fakes[1].models.add("m.bin")
    graph = save_graph({"2": {"class_type": "Loader", "inputs": {"model_name": "m.bin"}}})
    pool = make_pool([f.url for f in fakes])
    await pool.start()
    assert await pool.run(graph, finish=server_of, deadline_s=5) == fakes[1].url
    fakes[1].models.clear()
    with pytest.raises(ValidationFailed, match="no ComfyUI server can run it") as caught:
        await pool.run(graph, finish=server_of, deadline_s=5)
    assert caught.value.final and isinstance(caught.value, ModelMissing)  # still told apart from a broken graph
    await pool.aclose()


async def test_every_server_down_is_an_outage_in_seconds_not_at_the_deadline():
    from agents.runtime import is_outage

    dead = FakeComfy()
    await dead.start()
    url = dead.url
    await dead.stop()
    pool = make_pool([url], unavailable_after=0.5, max_down=0.2)
    await pool.start()
    with pytest.raises(ServersUnavailable, match="no ComfyUI server answers") as caught:
        # Long before the 600 s deadline: the guard fails the test at 60 s.
        await asyncio.wait_for(pool.run(save_graph(), finish=server_of, deadline_s=600), 60)
    assert is_outage(caught.value)  # the agent waits it out instead of dead-lettering the shot
    await pool.aclose()


async def test_out_of_memory_gets_one_retry_elsewhere_then_is_final(fakes):
    pool = make_pool([f.url for f in fakes])
    await pool.start()
    with pytest.raises(ExecutionFailed, match="out of memory twice") as caught:
        await pool.run(save_graph({"2": {"class_type": "Oom", "inputs": {}}}, "2"), finish=server_of, deadline_s=5)
    assert caught.value.final
    assert len(fakes[0].submissions) == 1 and len(fakes[1].submissions) == 1
    await pool.aclose()


async def test_ambiguous_submit_on_a_vanished_server_is_cancelled_when_it_returns(fakes):
    victim, other = fakes
    victim.behaviour.post_mode = "drop_after_enqueue"
    pool = make_pool([victim.url, other.url], down_for=0.05)
    await pool.start()
    real = pool.servers[0].client.locate

    async def flaky(prompt_id):  # the lookup fails: the submit stays ambiguous
        from comfy.errors import TransportError
        raise TransportError("unreachable")

    pool.servers[0].client.locate = flaky  # type: ignore[method-assign]
    assert await pool.run(save_graph({"2": {"class_type": "Slow", "inputs": {"seconds": 2}}}, "2"),
                          finish=server_of, deadline_s=10) == other.url
    assert pool.servers[0].orphans == set(victim.submissions)
    pool.servers[0].client.locate = real  # type: ignore[method-assign]
    await pool._probe(pool.servers[0])  # it answers again: the orphan is cancelled
    await eventually(lambda: victim.submissions[0] in victim.interrupts and not pool.servers[0].orphans,
                     "the orphan's cancel")
    await pool.aclose()
