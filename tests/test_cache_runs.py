"""Caching by input hash against real workers: hits, misses, single flight, expiry, CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from flowkit import task
from flowkit.caching import INPUTS
from flowkit.cli import cli
from flowkit.errors import CacheKeyError
from flowkit.states import RunState
from flowkit.store import task_runs

from conftest import TESTS_DIR
from tasks_for_tests import cached_count


def _executions(marker: Path) -> int:
    return len(marker.read_text().split()) if marker.exists() else 0


def test_second_identical_call_is_answered_from_the_cache(worker, client, tmp_path) -> None:
    marker = str(tmp_path / "m")
    first = cached_count.submit(marker, {"a": 1})
    assert first.result(timeout=10) == "execution 1"
    second = cached_count.submit(marker, {"a": 1})
    assert second.result(timeout=10) == "execution 1"
    assert second.state is RunState.CACHED and first.state is RunState.COMPLETED
    assert _executions(Path(marker)) == 1
    assert cached_count.submit(marker, {"a": 2}).result(timeout=10) == "execution 2"
    record = task_runs.get_task_run(client, second.task_run_id)
    assert record["cache_hit"] == "1" and record["cache_key"] == first.cache_key
    assert [h["state"] for h in task_runs.get_history(client, second.task_run_id)] == ["cached"]


DRIVER = textwrap.dedent('''
    import sys
    sys.path.insert(0, sys.argv[1])
    from tasks_for_tests import cached_count
    marker, order = sys.argv[2], sys.argv[3]
    items = [("b", 2), ("a", 1), ("c", 3)]
    if order == "reversed":
        items.reverse()
    payload = {"tags": set(name for name, _ in items), "weights": dict(items),
               "blob": b"\\x00\\x01", "ratio": 0.1, "nested": [frozenset({(1, "x"), (2, "y")})]}
    future = cached_count.submit(marker, payload)
    print(future.result(timeout=30), future.state.value)
''')


def test_cache_hit_from_a_second_driver_with_another_hash_seed(worker, client,
                                                               tmp_path) -> None:
    marker = str(tmp_path / "m")
    outputs = []
    for seed, order in (("1", "forward"), ("98765", "reversed")):
        done = subprocess.run([sys.executable, "-c", DRIVER, str(TESTS_DIR), marker, order],
                              capture_output=True, text=True, timeout=60,
                              env={**os.environ, "PYTHONHASHSEED": seed})
        assert done.returncode == 0, done.stderr
        outputs.append(done.stdout.split())
    assert outputs == [["execution", "1", "completed"], ["execution", "1", "cached"]]
    assert _executions(Path(marker)) == 1


def test_concurrent_identical_calls_execute_once_across_drivers(workers, client,
                                                                tmp_path) -> None:
    workers.start("default", concurrency=2)
    workers.wait_registered(client)
    marker = str(tmp_path / "m")
    script = textwrap.dedent('''
        import sys
        sys.path.insert(0, sys.argv[1])
        from tasks_for_tests import cached_count
        future = cached_count.submit(sys.argv[2], "same input", delay=1.0)
        print(future.result(timeout=30), future.state.value)
    ''')
    drivers = [subprocess.Popen([sys.executable, "-c", script, str(TESTS_DIR), marker],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for _ in range(3)]
    results = [d.communicate(timeout=60) for d in drivers]
    assert all(d.returncode == 0 for d in drivers), results
    states = sorted(out.split()[-1] for out, _ in results)
    assert states == ["cached", "cached", "completed"]
    assert {" ".join(out.split()[:2]) for out, _ in results} == {"execution 1"}
    assert _executions(Path(marker)) == 1


def test_identical_calls_in_one_map_execute_once(worker, client, tmp_path) -> None:
    marker = str(tmp_path / "m")
    futures = cached_count.map([marker] * 5, ["x"] * 5)
    assert [f.result(timeout=15) for f in futures] == ["execution 1"] * 5
    assert _executions(Path(marker)) == 1
    assert sorted(f.state.value for f in futures) == ["cached"] * 4 + ["completed"]


def test_a_failed_leader_hands_over_to_a_waiting_call(worker, client, tmp_path) -> None:
    @task(cache_policy=INPUTS)
    def fails_first_time(marker: str) -> str:
        with open(marker, "a") as f:
            f.write("x\n")
        time.sleep(0.3)
        if len(open(marker).read().split()) == 1:
            raise RuntimeError("first execution fails")
        return "second execution"

    marker = str(tmp_path / "m")
    leader, waiter = fails_first_time.map([marker, marker])
    with pytest.raises(RuntimeError, match="first execution fails"):
        leader.result(timeout=15)
    assert waiter.result(timeout=15) == "second execution"
    assert waiter.state is RunState.COMPLETED
    assert fails_first_time.submit(marker).state is RunState.CACHED  # the waiter's result


def test_excluded_argument_does_not_change_the_key(worker, client, tmp_path) -> None:
    @task(cache_policy=INPUTS - "verbose")
    def lookup(marker: str, key: str, verbose: bool = False) -> str:
        with open(marker, "a") as f:
            f.write("x\n")
        return key.upper()

    marker = str(tmp_path / "m")
    assert lookup.submit(marker, "k", verbose=False).result(timeout=10) == "K"
    again = lookup.submit(marker, "k", verbose=True)
    assert again.result(timeout=10) == "K" and again.state is RunState.CACHED
    assert _executions(Path(marker)) == 1


def test_expiration_and_refresh(worker, client, tmp_path) -> None:
    marker = str(tmp_path / "m")
    short = cached_count.with_options(cache_expiration=0.5)
    assert short.submit(marker, 1).result(timeout=10) == "execution 1"
    assert short.submit(marker, 1).state is RunState.CACHED
    time.sleep(0.7)
    assert short.submit(marker, 1).result(timeout=10) == "execution 2"
    refreshed = cached_count.with_options(refresh_cache=True).submit(marker, 1)
    assert refreshed.result(timeout=10) == "execution 3"
    assert refreshed.state is RunState.COMPLETED
    assert cached_count.submit(marker, 1).result(timeout=10) == "execution 3"


def test_cache_key_fn(worker, client, tmp_path) -> None:
    @task(cache_key_fn=lambda context, parameters: f"{context.task.name}:{parameters['n'] % 2}")
    def parity(marker: str, n: int) -> int:
        with open(marker, "a") as f:
            f.write("x\n")
        return n

    marker = str(tmp_path / "m")
    assert parity.submit(marker, 1).result(timeout=10) == 1
    assert parity.submit(marker, 3).result(timeout=10) == 1  # same key: odd
    assert parity.submit(marker, 2).result(timeout=10) == 2
    assert _executions(Path(marker)) == 2


def test_unhashable_input_is_a_clear_error_and_nothing_is_queued(client) -> None:
    from tasks_for_tests import Opaque

    with pytest.raises(CacheKeyError, match="payload") as info:
        cached_count.submit("m", {"config": [1, Opaque()]})
    assert "tasks_for_tests.Opaque" in str(info.value) and "cache_key_fn" in str(info.value)
    assert client.llen("rq:queue:default") == 0


def test_cli_explains_and_clears(worker, client, tmp_path) -> None:
    marker = str(tmp_path / "m")
    first = cached_count.submit(marker, [1, 2])
    first.result(timeout=10)
    hit = cached_count.submit(marker, [1, 2])
    hit.result(timeout=10)
    result = CliRunner().invoke(cli, ["cache", "explain", hit.task_run_id, "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["hit"] is True and info["stored"] is True and info["cache_key"] == hit.cache_key
    assert set(info["parts"]) == {"task", "task_source", "inputs.marker", "inputs.payload",
                                  "inputs.delay"}
    from flowkit.caching import stable_hash

    assert info["parts"]["inputs.payload"] == stable_hash([1, 2])
    result = CliRunner().invoke(cli, ["cache", "clear", "--task", "cached_count", "--json"])
    assert json.loads(result.output) == {"deleted": 1, "task": "cached_count"}
    assert cached_count.submit(marker, [1, 2]).result(timeout=10) == "execution 2"
