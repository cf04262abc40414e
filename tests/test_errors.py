"""Bad input gets a clear flowkit error, and nothing is lost or half-queued."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import flowkit
from flowkit import serializers, task
from flowkit.errors import (
    ConfigurationError,
    EnvelopeError,
    FlowkitError,
    SerializationError,
    StoreConnectionError,
    TaskFailed,
)
from flowkit.store.connection import connect

from conftest import TEST_SECRET, wait_until
from tasks_for_tests import identity


def test_all_errors_derive_from_flowkit_error() -> None:
    for name in ("ConfigurationError", "SerializationError", "StoreConnectionError", "TaskFailed",
                 "TaskTimeout", "UpstreamFailed", "CancelledRun", "FlowTimeout", "Retry"):
        assert issubclass(getattr(flowkit, name), flowkit.FlowkitError), name
    assert issubclass(ConfigurationError, ValueError)
    assert issubclass(flowkit.TaskTimeout, TimeoutError)


def test_unpicklable_argument_names_task_and_argument(client) -> None:
    lock = threading.Lock()
    with pytest.raises(SerializationError) as info:
        identity.submit(lock)
    message = str(info.value)
    assert "task 'identity'" in message and "argument 'x'" in message and "lock" in message
    assert "nothing was queued" in message
    assert client.llen("rq:queue:default") == 0
    assert client.keys("flowkit:taskrun:*") == []


def test_unpicklable_keyword_argument_in_map(client) -> None:
    @task
    def uses(path: str, handle: object = None) -> str:
        return path

    with socket.socket() as handle:
        with pytest.raises(SerializationError, match="argument 'handle'"):
            uses.map(["a", "b"], handle=flowkit.unmapped(handle))
    assert client.llen("rq:queue:default") == 0


def test_unpicklable_return_value_fails_the_run_naming_the_type(worker, client) -> None:
    @task
    def returns_lock() -> object:
        return threading.Lock()

    with pytest.raises(SerializationError, match="return value of type _thread.lock"):
        returns_lock.submit().result(timeout=10)


def test_unreachable_redis_error_is_fast_and_names_the_url() -> None:
    # A port that accepts connections but never answers: the worst case for timeouts.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    port = silent.getsockname()[1]
    try:
        started = time.monotonic()
        with pytest.raises(StoreConnectionError) as info:
            connect(f"redis://:hunter2@127.0.0.1:{port}/0")
        elapsed = time.monotonic() - started
    finally:
        silent.close()
    assert elapsed < 10, f"took {elapsed:.1f}s"
    message = str(info.value)
    assert f"redis://:***@127.0.0.1:{port}/0" in message and "hunter2" not in message
    assert "check that" in message


def test_malformed_url(client) -> None:
    with pytest.raises(ConfigurationError, match="malformed"):
        connect("localhost:6379")
    with pytest.raises(ConfigurationError, match="malformed"):
        connect("redis://host:port/0")


def test_driver_with_unreachable_redis_raises_flowkit_error(tmp_path) -> None:
    script = textwrap.dedent('''
        import time, flowkit
        from flowkit import task
        @task
        def f(x): return x
        t = time.monotonic()
        try:
            f.submit(1)
        except flowkit.FlowkitError as exc:
            print(type(exc).__name__, round(time.monotonic() - t, 1), exc)
    ''')
    env = {**os.environ, "FLOWKIT_REDIS_URL": "redis://127.0.0.1:1/0"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=30, env=env)
    assert done.stdout.startswith("StoreConnectionError"), done.stdout + done.stderr
    assert "redis://127.0.0.1:1/0" in done.stdout
    assert float(done.stdout.split()[1]) < 10


def test_worker_with_another_key_fails_the_run_with_a_clear_message(workers, client) -> None:
    workers.start("default", concurrency=1, env={"FLOWKIT_SECRET_KEY": "x" * 32})
    workers.wait_registered(client)
    with pytest.raises(EnvelopeError, match="signature does not verify.*same FLOWKIT_SECRET_KEY"):
        identity.submit(1).result(timeout=10)


def test_python_version_mismatch_names_both_versions(worker, client, monkeypatch) -> None:
    # Stands in for a driver on another Python: its envelope header says 3.99.
    monkeypatch.setattr(serializers, "PYTHON_VERSION", "3.99")
    with pytest.raises(EnvelopeError) as info:
        identity.submit(1).result(timeout=10)
    monkeypatch.undo()
    message = str(info.value)
    assert "Python 3.99 on the driver" in message
    assert f"{sys.version_info.major}.{sys.version_info.minor} on this worker" in message


def test_tampered_envelope_is_rejected() -> None:
    key = serializers.SigningKey(TEST_SECRET.encode())
    head = serializers.build_envelope(key, task_name="t", task_run_id="0" * 16,
                                      fn_digest="d", body=b"payload")
    assert serializers.open_envelope(key, head, b"payload").body == b"payload"
    with pytest.raises(EnvelopeError, match="signature"):
        serializers.open_envelope(key, head, b"payloaX")
    with pytest.raises(EnvelopeError, match="signature"):
        serializers.open_envelope(key, head[:-1] + b"X", b"payload")
    with pytest.raises(EnvelopeError, match="not a flowkit envelope"):
        serializers.open_envelope(key, b"garbage", b"")


def test_no_worker_on_shared_redis_driver_waits_and_says_so(workers, client) -> None:
    script = textwrap.dedent('''
        import sys
        sys.path.insert(0, sys.argv[1])
        from tasks_for_tests import add
        print(add.submit(40, 2).result(timeout=30), flush=True)
    ''')
    tests_dir = os.path.dirname(__file__)
    proc = subprocess.Popen([sys.executable, "-c", script, tests_dir], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: client.llen("rq:queue:default") == 1, timeout=15,
                   message="the task to be queued")
        time.sleep(0.5)
        assert proc.poll() is None, "the driver must wait, not fail"
        workers.start("default", concurrency=1)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert out.strip() == "42"
    assert "waiting: no worker serves queue 'default'" in err
    assert "flowkit worker start -q default" in err


def test_task_error_is_flowkit_task_failed_when_type_is_unknown() -> None:
    exc = TaskFailed("boom", exc_type="x.Y", remote_traceback="tb", attempts=2)
    assert isinstance(exc, FlowkitError) and exc.attempts == 2


def test_results_are_sealed_with_a_version_and_the_key_id() -> None:
    from flowkit.serializers import SEAL_MAGIC, SigningKey, seal, unseal

    ours, theirs = SigningKey(b"k" * 32), SigningKey(b"o" * 32)
    sealed = seal(ours, b"payload")
    assert sealed.startswith(SEAL_MAGIC + ours.key_id.encode())
    assert unseal(ours, sealed) == b"payload"
    with pytest.raises(EnvelopeError, match=f"sealed with key {ours.key_id} and this process "
                                            f"has key {theirs.key_id}"):
        unseal(theirs, sealed)
    tampered = sealed[:-1] + b"X"
    with pytest.raises(EnvelopeError, match="changed after it was sealed"):
        unseal(ours, tampered)
    forged_id = sealed.replace(ours.key_id.encode(), theirs.key_id.encode(), 1)
    with pytest.raises(EnvelopeError):  # the key id is covered by the HMAC too
        unseal(theirs, forged_id)


def test_results_sealed_by_the_previous_format_still_open() -> None:
    from flowkit.serializers import SigningKey, unseal

    key = SigningKey(b"k" * 32)
    assert unseal(key, key.sign(b"old result") + b"old result") == b"old result"
    with pytest.raises(EnvelopeError, match="different FLOWKIT_SECRET_KEY"):
        unseal(SigningKey(b"o" * 32), key.sign(b"old result") + b"old result")
