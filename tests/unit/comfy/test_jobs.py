"""The job protocol against the FAKE server: what ComfyUI 0.3.75 cannot be made to show."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from comfy.client import ComfyClient
from comfy.errors import (
    AmbiguousSubmit,
    Disposition,
    ExecutionFailed,
    IdsNotHonoured,
    JobTimeout,
    ModelMissing,
    OutOfMemory,
    ValidationFailed,
)
from comfy.jobs import run_job
from comfy.outputs import fetch, output_files
from tests.unit.comfy.conftest import FAST_CLIENT, FAST_JOB, eventually, save_graph


def soon(seconds: float = 5.0) -> float:
    return time.monotonic() + seconds


async def test_happy_path_reports_progress_and_returns_history(fake, client):
    events = []
    result = await run_job(client, save_graph({"2": {"class_type": "Slow", "inputs": {"seconds": 0.1}}}, "2"),
                           deadline=soon(), on_progress=events.append, config=FAST_JOB)
    kinds = [e.kind for e in events]
    assert kinds[0] == "queued" and "started" in kinds and kinds[-1] == "finished"
    steps = [(e.value, e.max) for e in events if e.kind == "progress"]
    assert steps[-1] == (10, 10) and all(e.node == "2" for e in events if e.kind == "progress")
    assert events[-1].fraction == 1.0
    assert fake.submissions == [result.prompt_id]
    assert [f.filename for f in output_files(result.history)] == ["t_00000_.png"]
    assert (await fetch(client, output_files(result.history)))[0] == fake.output_bytes
    assert result.server_ms is not None and result.server_ms >= 0


async def test_prompt_ids_are_canonical_uuids_accepted_by_a_strict_server(fake, client):
    fake.behaviour.strict_uuid = True
    result = await run_job(client, save_graph(), deadline=soon(), config=FAST_JOB)
    assert str(uuid.UUID(result.prompt_id)) == result.prompt_id


async def test_a_server_that_replaces_prompt_ids_is_refused(fake, client):
    fake.behaviour.accept_prompt_ids = False
    with pytest.raises(IdsNotHonoured, match="does not honour client ids") as caught:
        await run_job(client, save_graph(), deadline=soon(), config=FAST_JOB)
    assert caught.value.disposition is Disposition.OTHER_SERVER  # not retried on the same server
    # The stray prompt is removed again, and stopped, had it started.
    await eventually(lambda: fake.deleted_queue == fake.submissions and fake.interrupts == fake.submissions,
                     "the stray prompt's removal")


async def test_newer_jobs_api_tells_unknown_from_unfinished(fake, client):
    fake.behaviour.jobs_api = True
    fake.behaviour.silent_ws = True  # force the polling path
    result = await run_job(client, save_graph({"2": {"class_type": "Slow", "inputs": {"seconds": 0.15}}}, "2"),
                           deadline=soon(), config=FAST_JOB)
    assert "GET /api/jobs/{id}" in fake.requests
    assert "GET /queue" not in fake.requests  # one call answers where /queue + /history took two
    assert result.history["status"]["status_str"] == "success"


async def test_silent_websocket_falls_back_to_polling(fake, client):
    fake.behaviour.silent_ws = True
    result = await run_job(client, save_graph(), deadline=soon(), config=FAST_JOB)
    assert result.history["outputs"]
    assert "GET /queue" in fake.requests  # it polled: no event ever came


async def test_status_chatter_from_other_clients_does_not_postpone_polling(fake, client):
    fake.behaviour.silent_ws = True  # none of our prompt's events arrive...
    fake.behaviour.status_chatter = 0.02  # ...but queue status broadcasts keep coming
    result = await run_job(client, save_graph(), deadline=soon(), config=FAST_JOB)
    assert result.history["outputs"] and "GET /queue" in fake.requests  # polled despite the chatter


async def test_websocket_dropping_mid_job_reconnects_and_the_job_completes(fake, client):
    fake.behaviour.drop_ws_after = "execution_start"
    events = []
    result = await run_job(client, save_graph({"2": {"class_type": "Slow", "inputs": {"seconds": 0.3}}}, "2"),
                           deadline=soon(), on_progress=events.append, config=FAST_JOB)
    assert result.history["status"]["status_str"] == "success"
    assert client.socket.connections >= 2  # it came back
    assert fake.submissions == [result.prompt_id]


async def test_history_written_after_success_is_read_with_retries(fake, client):
    fake.behaviour.history_lag = 0.2
    fake.behaviour.no_done_signal = True  # an older server: only execution_success
    result = await run_job(client, save_graph(), deadline=soon(), config=FAST_JOB)
    assert fake.requests.count("GET /history") >= 2
    assert result.history["outputs"]


@pytest.mark.parametrize("mode", ["drop_after_enqueue", "hang_after_enqueue", "error_500_after_enqueue"])
async def test_ambiguous_submit_that_was_queued_is_followed_not_resent(fake, client, mode):
    fake.behaviour.post_mode = mode
    result = await run_job(client, save_graph(), deadline=soon(), config=FAST_JOB)
    assert fake.submissions == [result.prompt_id]  # exactly one render
    assert fake.requests.count("POST /prompt") == 1


async def test_ambiguous_submit_that_never_arrived_is_sent_once_more(fake, client):
    fake.behaviour.post_mode = "drop_before_enqueue"
    result = await run_job(client, save_graph(), deadline=soon(), config=FAST_JOB)
    assert fake.requests.count("POST /prompt") == 2
    assert fake.submissions == [result.prompt_id]


async def test_ambiguous_submit_to_an_unreachable_server_is_reported(fake):
    fake.behaviour.post_mode = "drop_after_enqueue"
    c = ComfyClient(fake.url, config=FAST_CLIENT)
    real_locate = c.locate

    async def unreachable(prompt_id):
        await fake.stop()
        return await real_locate(prompt_id)

    c.locate = unreachable  # type: ignore[method-assign]
    with pytest.raises(AmbiguousSubmit) as caught:
        await run_job(c, save_graph(), deadline=soon(), config=FAST_JOB)
    assert caught.value.prompt_id == fake.submissions[0]
    await c.aclose()


async def test_validation_error_is_final_with_the_reason(fake, client):
    with pytest.raises(ValidationFailed) as caught:
        await run_job(client, save_graph({"2": {"class_type": "Invalid", "inputs": {}}}), deadline=soon(), config=FAST_JOB)
    assert caught.value.final and "Required input is missing" in str(caught.value)
    assert not isinstance(caught.value, ModelMissing)


async def test_missing_model_is_not_final(fake, client):
    with pytest.raises(ModelMissing) as caught:
        await run_job(client, save_graph({"2": {"class_type": "Loader", "inputs": {"model_name": "x.bin"}}}),
                      deadline=soon(), config=FAST_JOB)
    assert not caught.value.final and "x.bin" in str(caught.value)


async def test_node_error_and_oom_are_classified(fake, client):
    with pytest.raises(ExecutionFailed) as failed:
        await run_job(client, save_graph({"2": {"class_type": "Fail", "inputs": {}}}, "2"), deadline=soon(), config=FAST_JOB)
    assert failed.value.final and not isinstance(failed.value, OutOfMemory) and "boom" in str(failed.value)
    with pytest.raises(OutOfMemory) as oom:
        await run_job(client, save_graph({"2": {"class_type": "Oom", "inputs": {}}}, "2"), deadline=soon(), config=FAST_JOB)
    assert not oom.value.final
    await eventually(lambda: set(fake.deleted_history) >= set(fake.submissions), "failed prompts' history clean-up")


async def test_deadline_interrupts_and_dequeues(fake, client):
    with pytest.raises(JobTimeout):  # the 5 s render is cut off at the 0.3 s deadline
        await run_job(client, save_graph({"2": {"class_type": "Slow", "inputs": {"seconds": 5}}}, "2"),
                      deadline=soon(0.3), config=FAST_JOB)
    pid = fake.submissions[0]
    await eventually(lambda: pid in fake.interrupts and pid in fake.deleted_queue and fake.running is None
                     and pid in fake.deleted_history, "the interrupt, dequeue and history clean-up")


async def test_a_cancelled_caller_cancels_the_prompt_on_the_server(fake, client):
    task = asyncio.create_task(run_job(client, save_graph({"2": {"class_type": "Slow", "inputs": {"seconds": 5}}}, "2"),
                                       deadline=soon(), config=FAST_JOB))
    await eventually(lambda: fake.running is not None, "the prompt started")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await eventually(lambda: fake.submissions[0] in fake.interrupts and fake.running is None, "the prompt's cancel")


async def test_queue_position_is_reported_while_waiting(fake, client):
    slow = save_graph({"2": {"class_type": "Slow", "inputs": {"seconds": 0.4}}}, "2")
    first = asyncio.create_task(run_job(client, slow, deadline=soon(), config=FAST_JOB))
    await eventually(lambda: fake.submissions, "the first prompt queued")
    events = []
    await run_job(client, save_graph(), deadline=soon(), on_progress=events.append, config=FAST_JOB)
    await first
    positions = [e.queue_position for e in events if e.kind == "queued" and e.queue_position is not None]
    assert positions and positions[0] >= 1
