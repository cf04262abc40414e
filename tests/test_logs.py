"""Log capture: buffered in the executor, written in batches, complete when a future resolves;
the driver's echo is rate-limited."""

from __future__ import annotations

import time

import pytest

from flowkit._rate import EchoGate, TokenBucket, summary_line
from flowkit.store import keys
from flowkit.store.logs import LogBuffer, log_counts, read_logs

from conftest import wait_until
from tasks_for_tests import chatty, print_lines, print_then_exit_hard

RECORD = {"ts": "1.0", "level": "INFO", "message": "m", "task_run_id": "t1", "name": "x"}


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_buffered_lines_cost_no_round_trip_until_a_flush(client) -> None:
    buffer = LogBuffer(client, max_lines=10_000, flush_seconds=60)
    started = time.perf_counter()
    for i in range(1000):
        buffer.add("fr", "", {**RECORD, "message": f"line {i}"})
    per_line = (time.perf_counter() - started) / 1000
    assert client.xlen(keys.logs("fr")) == 0  # nothing sent yet
    assert per_line < 100e-6, f"{per_line * 1e6:.1f} us per buffered line"
    assert buffer.flush() == 1000
    lines = read_logs(client, "fr")
    assert [f["message"] for _, f in lines] == [f"line {i}" for i in range(1000)]
    buffer.close()


def test_a_full_buffer_is_written_by_the_adder(client) -> None:
    buffer = LogBuffer(client, max_lines=10, flush_seconds=60)
    for i in range(25):
        buffer.add("fr", "", {**RECORD, "message": str(i)})
    assert client.xlen(keys.logs("fr")) == 20
    buffer.close()
    assert client.xlen(keys.logs("fr")) == 25


def test_a_lone_line_is_written_within_the_flush_interval(client) -> None:
    buffer = LogBuffer(client, flush_seconds=0.05)
    started = time.monotonic()
    buffer.add("fr", "", RECORD)
    wait_until(lambda: client.xlen(keys.logs("fr")) == 1, timeout=2, message="flushed line")
    assert time.monotonic() - started < 1.0
    buffer.close()


def test_copies_to_the_reply_stream_are_rate_limited_and_counted(client) -> None:
    clock = FakeClock()
    buffer = LogBuffer(client, flush_seconds=60, forward=TokenBucket(5, clock=clock))
    for i in range(12):
        buffer.add("fr", "reply:x", {**RECORD, "message": str(i)})
    buffer.flush()
    assert client.xlen(keys.logs("fr")) == 12  # the run's own stream gets every line
    replies = [f for _, f in client.xrange("reply:x")]
    assert [f[b"kind"] for f in replies] == [b"log"] * 5 + [b"log_skipped"]
    assert replies[-1][b"count"] == b"7" and replies[-1][b"flow_run_id"] == b"fr"
    buffer.close()


def test_task_prints_are_complete_and_in_order_when_the_future_resolves(worker, client) -> None:
    future = print_lines.submit(5000)
    assert future.result(timeout=60) == 5000
    flow_run_id = client.hget(keys.task_run(future.task_run_id), "flow_run_id").decode()
    messages = [f["message"] for _, f in read_logs(client, flow_run_id)]
    assert messages == [f"line {i}" for i in range(5000)]
    assert log_counts(client, flow_run_id).written == 5000


def test_run_logger_lines_are_stored_before_the_outcome(worker, client) -> None:
    future = chatty.submit(3)
    assert future.result(timeout=30) == 3
    flow_run_id = client.hget(keys.task_run(future.task_run_id), "flow_run_id").decode()
    messages = [f["message"] for _, f in read_logs(client, flow_run_id)]
    assert messages == ["line 1 of 3", "line 2 of 3", "line 3 of 3", "printed 3"]


def test_echo_gate_admits_the_rate_then_sums_up_what_it_left_out() -> None:
    clock = FakeClock()
    gate = EchoGate(TokenBucket(200, clock=clock), summary_seconds=2.0)
    admitted = [gate.admit("fr")[0] for _ in range(1000)]
    assert admitted.count(True) == 200 and admitted[:200] == [True] * 200
    clock.now += 0.5  # 100 tokens back: the next line is echoed, after the summary
    ok, summaries = gate.admit("fr")
    assert ok and summaries == [("fr", 800)]
    gate.left_out("fr", 5)
    assert gate.drain() == [("fr", 5)] and gate.drain() == []
    assert summary_line("fr", 5) == "flowkit: 5 log lines not echoed; see `flowkit run logs fr`"


@pytest.mark.slow
def test_a_chatty_task_does_not_flood_the_driver(worker, client, capfd) -> None:
    started = time.perf_counter()
    assert print_lines.submit(100_000).result(timeout=120) == 100_000
    elapsed = time.perf_counter() - started
    err = capfd.readouterr().err
    echoed = [line for line in err.splitlines() if " - line " in line]
    summaries = [line for line in err.splitlines() if "log lines not echoed" in line]
    assert 0 < len(echoed) <= 200 + 200 * elapsed + 1, len(echoed)
    assert summaries, err[-500:]
    left_out = sum(int(line.split("flowkit: ")[1].split()[0]) for line in summaries)
    assert len(echoed) + left_out == 100_000
    print(f"100,000 printed lines: {elapsed:.2f} s, {elapsed / 100_000 * 1e6:.1f} us per line")


def test_lines_printed_before_an_executor_dies_are_kept(worker, client) -> None:
    # The buffer writes within FLUSH_SECONDS (50 ms): a line printed 0.5 s before the process
    # dies is in Redis although the attempt's outcome is never recorded by that executor.
    future = print_then_exit_hard.submit(0.5)
    flow_run_id = wait_until(lambda: client.hget(keys.task_run(future.task_run_id),
                                                 "flow_run_id"), timeout=10).decode()
    lines = wait_until(lambda: read_logs(client, flow_run_id), timeout=15,
                       message="the line printed before the crash")
    assert lines[0][1]["message"].endswith("before the crash")
    assert lines[0][1]["task_run_id"] == future.task_run_id
    future.cancel()
