"""A worker whose signing key cannot open its queues' envelopes says so at start and takes no
work there; workers with the drivers' key take it all. Real drivers write the signed probes,
real ``flowkit worker start`` processes read them."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from flowkit.errors import EnvelopeError
from flowkit.serializers import SigningKey, build_envelope, open_envelope, seal
from flowkit.store import keys, probes, task_runs
from flowkit.store.workers import live_workers_for

from conftest import TEST_SECRET, TESTS_DIR, wait_until
from tasks_for_tests import square

WRONG_SECRET = "not-the-drivers-key-0123456789"
RIGHT_ID = SigningKey(TEST_SECRET.encode()).key_id
WRONG_ID = SigningKey(WRONG_SECRET.encode()).key_id


def test_probe_is_written_once_a_minute_and_opens_only_with_its_key(client) -> None:  # type: ignore[no-untyped-def]
    right, wrong = SigningKey(TEST_SECRET.encode()), SigningKey(WRONG_SECRET.encode())
    assert probes.refresh_probe(client, right, "q1", now=100.0)
    assert not probes.refresh_probe(client, right, "q1", now=130.0)  # throttled
    assert client.ttl(keys.probe("q1")) > 0
    check = probes.check_probes(client, wrong, ["q1", "q2"])
    assert check.servable == ["q2"]  # no probe yet: nothing is known, it is served
    assert [(r.queue, r.sealed_by, r.mine) for r in check.refused] == [("q1", RIGHT_ID, WRONG_ID)]
    assert probes.check_probes(client, right, ["q1", "q2"]).servable == ["q1", "q2"]
    stray = SigningKey(b"a-driver-with-a-stray-key-012345")
    assert probes.refresh_probe(client, stray, "q1", now=131.0)  # another connection
    # ...does not make the right workers leave q1; the wrong one hears of both keys.
    assert probes.check_probes(client, right, ["q1"]).servable == ["q1"]
    refused = probes.check_probes(client, wrong, ["q1"]).refused[0]
    assert refused.sealed_by == ", ".join(sorted([RIGHT_ID, stray.key_id]))
    client.hset(keys.probe("q2"), RIGHT_ID, seal(right, b"flowkit-probe\0q1"))  # q1's, copied
    assert probes.check_probes(client, right, ["q2"]).servable == []
    client.delete(keys.probe("q1"))
    assert probes.refresh_probe(client, right, "q1", now=161.0)  # a minute later: rewritten
    assert client.exists(keys.probe("q1"))


def test_wrong_key_worker_leaves_the_queue_to_the_right_one(workers, client) -> None:  # type: ignore[no-untyped-def]
    futures = square.map(range(40))  # the submit writes the default queue's probe
    assert client.exists(keys.probe("default"))
    wrong = workers.start("default", "spare", concurrency=2, name="wrong-key",
                          env={"FLOWKIT_SECRET_KEY": WRONG_SECRET})
    workers.wait_registered(client, "spare")
    log = workers.output(wrong)
    assert f"queue 'default': its drivers sign tasks with key {RIGHT_ID}" in log, log
    assert f"this worker has key {WRONG_ID}" in log and "FLOWKIT_SECRET_KEY" in log
    assert live_workers_for(client, "default") == 0 and client.llen(keys.queue("default")) == 40
    workers.start("default", concurrency=2, name="right-key")
    assert [f.result(timeout=30) for f in futures] == [i * i for i in range(40)]
    ran_on = {task_runs.get_task_run(client, f.task_run_id)["worker"]  # type: ignore[index]
              for f in futures}
    assert ran_on == {"right-key"}
    assert wrong.poll() is None  # still serving the queue it can open


def test_worker_with_no_servable_queue_exits_2(workers, client) -> None:  # type: ignore[no-untyped-def]
    probes.refresh_probe(client, SigningKey(TEST_SECRET.encode()), "default")
    wrong = workers.start("default", concurrency=1, env={"FLOWKIT_SECRET_KEY": WRONG_SECRET})
    assert wrong.wait(timeout=20) == 2
    log = workers.output(wrong)
    assert f"key {WRONG_ID} opens none of its queues' probes (drivers use key {RIGHT_ID})" in log
    assert "Traceback" not in log and live_workers_for(client, "default") == 0


@pytest.mark.slow
def test_running_worker_leaves_a_queue_when_its_probe_appears(workers, client) -> None:  # type: ignore[no-untyped-def]
    wrong = workers.start("default", "spare", concurrency=2, name="early-wrong",
                          env={"FLOWKIT_SECRET_KEY": WRONG_SECRET})
    workers.wait_registered(client, "default")  # no probe yet: it serves both queues
    probes.refresh_probe(client, SigningKey(TEST_SECRET.encode()), "default")
    wait_until(lambda: "queue 'default': its drivers sign" in workers.output(wrong),
               timeout=10, message="the running worker to see the new probe")
    wait_until(lambda: live_workers_for(client, "default") == 0, timeout=5,
               message="the worker to leave queue 'default'")
    # Its executors finish what they hold and start again without the queue.
    wait_until(lambda: workers.output(wrong).count("restarting to serve spare") >= 2,
               timeout=10, message="both executors restarted")
    assert "exited with exit code 0" not in workers.output(wrong)  # asked to: not a death
    futures = square.map(range(20))
    workers.start("default", concurrency=1, name="late-right")
    assert [f.result(timeout=30) for f in futures] == [i * i for i in range(20)]
    assert {task_runs.get_task_run(client, f.task_run_id)["worker"]  # type: ignore[index]
            for f in futures} == {"late-right"}
    assert wrong.poll() is None and live_workers_for(client, "spare") == 1


def test_envelope_that_fails_to_open_names_both_keys_and_what_to_do() -> None:
    right, wrong = SigningKey(TEST_SECRET.encode()), SigningKey(WRONG_SECRET.encode())
    head = build_envelope(right, task_name="t", task_run_id="r1", fn_digest="d", body=b"body")
    with pytest.raises(EnvelopeError) as caught:
        open_envelope(wrong, head, b"body")
    message = str(caught.value)
    assert f"signed with key {RIGHT_ID} and worker host {socket.gethostname()!r} has key " \
           f"{WRONG_ID}" in message and "the same FLOWKIT_SECRET_KEY" in message
    with pytest.raises(EnvelopeError, match=f"names key {RIGHT_ID}, which worker host .* has "
                                            "too, so it was changed after it was signed"):
        open_envelope(right, head, b"bodX")


@pytest.mark.slow
def test_run_failed_by_a_wrong_key_records_both_keys_and_the_worker_stops(workers, client) -> None:  # type: ignore[no-untyped-def]
    # Started before any driver used queue "edge": no probe, so it serves it at first.
    wrong = workers.start("edge", concurrency=1, env={"FLOWKIT_SECRET_KEY": WRONG_SECRET})
    workers.wait_registered(client, "edge")
    future = square.with_options(queue="edge").submit(3)
    with pytest.raises(EnvelopeError):
        future.result(timeout=15)
    row = task_runs.get_task_run(client, future.task_run_id)
    assert row is not None and row["state"] == "failed"
    assert f"signed with key {RIGHT_ID}" in row["error_message"]
    assert f"has key {WRONG_ID}" in row["error_message"]
    assert "FLOWKIT_SECRET_KEY" in row["error_message"]
    # The submit wrote the probe: the worker sees it, leaves its only queue and stops.
    assert wrong.wait(timeout=20) == 0
    log = workers.output(wrong)
    assert "queue 'edge': its drivers sign tasks with key" in log
    assert "no queue left that this worker's key can serve; stopping" in log


@pytest.mark.slow
def test_refused_queue_is_served_once_a_probe_of_the_workers_key_appears(workers, client) -> None:  # type: ignore[no-untyped-def]
    probes.refresh_probe(client, SigningKey(TEST_SECRET.encode()), "default")
    other = workers.start("default", "spare", concurrency=1, name="other-key",
                          env={"FLOWKIT_SECRET_KEY": WRONG_SECRET})
    workers.wait_registered(client, "spare")
    assert live_workers_for(client, "default") == 0
    # A driver with this worker's key starts using the queue: the worker joins it.
    probes.refresh_probe(client, SigningKey(WRONG_SECRET.encode()), "default")
    workers.wait_registered(client, "default")
    assert f"queue 'default' now has a probe of this worker's key {WRONG_ID}" in \
        workers.output(other)
    # ...and its restarted executors take that driver's tasks from it.
    script = "from tasks_for_tests import square; print(square.submit(4).result(timeout=20))"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, cwd=TESTS_DIR,
                          env={**os.environ, "FLOWKIT_SECRET_KEY": WRONG_SECRET,
                               "PYTHONPATH": str(TESTS_DIR)})
    assert done.stdout.strip() == "16", done.stdout + done.stderr
    assert other.poll() is None
