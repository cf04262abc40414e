"""Ctrl-C (a real SIGINT) or a notebook interrupt cancels the work its call started."""

from __future__ import annotations

import re
import signal
import time

import pytest

from driver_processes import SLOW_TASK_SCRIPT, DriverProcess
from flowkit.store import flow_runs, task_runs

from conftest import wait_until

MESSAGE = re.compile(r"flowkit: interrupted: cancelled (\d+) queued and (\d+) running task runs")

WAITING_SCRIPT = SLOW_TASK_SCRIPT + '''
futures = slow.map(range(30))
try:  # the id is printed inside: the test's Ctrl-C comes after it, so inside the try
    print(futures[0].flow_run_id, flush=True)
    [f.result() for f in futures]
except KeyboardInterrupt:
    print("interrupted", flush=True)
'''

FLOW_SCRIPT = SLOW_TASK_SCRIPT + '''
@flow
def big() -> None:
    print(flow_run_ctx.get().flow_run_id, flush=True)
    for f in slow.map(range(30)):
        f.result()

try:
    big()
except KeyboardInterrupt:
    print("interrupted", flush=True)
'''


def _states(client, flow_run_id: str) -> list[str]:
    return [t["state"] for t in task_runs.get_task_runs(client, flow_run_id)]


def _when_running(client, flow_run_id: str, count: int) -> bool:
    run = flow_runs.get_flow_run(client, flow_run_id)
    return bool(run and int(run["n_running"]) >= count)


AS_COMPLETED_SCRIPT = WAITING_SCRIPT.replace(
    "[f.result() for f in futures]",
    "import flowkit.futures\n    [f.result() for f in flowkit.futures.as_completed(futures)]")

#: Ctrl-C while the script does something else: the uncaught KeyboardInterrupt ends it.
SLEEPING_SCRIPT = SLOW_TASK_SCRIPT + '''
futures = slow.map(range(30))
try:
    print(futures[0].flow_run_id, flush=True)
    time.sleep(60)
finally:
    print("interrupted", flush=True)
'''


@pytest.mark.slow
@pytest.mark.parametrize("script", [WAITING_SCRIPT, AS_COMPLETED_SCRIPT, FLOW_SCRIPT,
                                    SLEEPING_SCRIPT],
                         ids=["waiting", "as_completed", "in_flow", "uncaught_in_script"])
def test_ctrl_c_cancels_the_queued_and_running_work_of_the_call(
        workers, client, tmp_path, script) -> None:
    workers.start("default", concurrency=2)
    workers.wait_registered(client)
    driver = DriverProcess(tmp_path, script)
    try:
        flow_run_id = driver.read_line()
        wait_until(lambda: _when_running(client, flow_run_id, 2), timeout=20,
                   message="two tasks running")
        driver.proc.send_signal(signal.SIGINT)
        interrupted = time.monotonic()
        assert driver.read_line(timeout=10) == "interrupted"
        took = time.monotonic() - interrupted
        code = driver.wait(15)
        assert code == (-signal.SIGINT if script is SLEEPING_SCRIPT else 0), driver.stderr()
    finally:
        driver.kill()
    print(f"interrupt to KeyboardInterrupt handled: {took:.2f} s")
    assert took < 3.0, took
    found = MESSAGE.search(driver.stderr())
    assert found, driver.stderr()
    assert (int(found[1]), int(found[2])) == (28, 2)
    # The running two are killed by their supervisor within a second or so.
    states = wait_until(lambda: (s := _states(client, flow_run_id)) and
                        set(s) == {"cancelled"} and s, timeout=10, message="all cancelled")
    print(f"interrupt to all 30 task runs cancelled: {time.monotonic() - interrupted:.2f} s")
    assert len(states) == 30
    run = flow_runs.get_flow_run(client, flow_run_id)
    assert run["state"] == "cancelled"
    assert int(run["n_cancelled"]) == 30


@pytest.mark.slow
def test_ctrl_c_during_a_map_still_submitting_queues_nothing_after_it(
        workers, client, tmp_path) -> None:
    script = '''
import signal, threading, os, time
from flowkit import task
from flowkit import tasks as task_module

@task
def noop(i: int) -> int:
    return i

sent = []
real_submit = task_module._ChunkSender.send
def send_then_interrupt(self, specs, upstreams, last=False):
    real_submit(self, specs, upstreams, last)
    sent.append(len(specs))
    if len(sent) == 3:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)  # the interrupt lands here, mid-map
task_module._ChunkSender.send = send_then_interrupt
try:
    noop.map(range(20000))
except KeyboardInterrupt:
    print("interrupted", sum(sent), flush=True)
'''
    driver = DriverProcess(tmp_path, script)
    try:
        line = driver.read_line(timeout=30)
        assert driver.wait(15) == 0
    finally:
        driver.kill()
    assert line.startswith("interrupted ")
    queued_before = int(line.split()[1])
    [run] = flow_runs.list_flow_runs(client)
    # Only the chunks sent before the interrupt exist, and every one of them is cancelled.
    assert int(run["n_total"]) == queued_before < 20000
    assert int(run["n_cancelled"]) == queued_before
    assert MESSAGE.search(driver.stderr())[1] == str(queued_before)
    time.sleep(0.5)
    assert int(flow_runs.get_flow_run(client, run["id"])["n_total"]) == queued_before
    assert run["state"] == "cancelled"


@pytest.mark.slow
def test_interrupting_a_notebook_cell_cancels_that_cells_work(workers, client, tmp_path) -> None:
    nbformat = pytest.importorskip("nbformat")
    pytest.importorskip("nbclient")
    from jupyter_client.manager import start_new_kernel

    workers.start("default", concurrency=2)
    workers.wait_registered(client)
    manager, kernel = start_new_kernel(kernel_name="python3", cwd=str(tmp_path))
    try:
        def run(code: str, timeout: float = 30) -> dict:
            msg_id = kernel.execute(code)
            reply = kernel.get_shell_msg(timeout=timeout)
            while reply["parent_header"].get("msg_id") != msg_id:
                reply = kernel.get_shell_msg(timeout=timeout)
            return reply["content"]

        assert run("import time\nfrom flowkit import task\n@task\ndef slow(i: int) -> int:\n"
                   "    time.sleep(60)\n    return i")["status"] == "ok"
        msg_id = kernel.execute("futures = slow.map(range(30))\n[f.result() for f in futures]")
        [flow_run_id] = wait_until(lambda: [r["id"] for r in flow_runs.list_flow_runs(client)],
                                   timeout=20, message="the cell's run")
        wait_until(lambda: _when_running(client, flow_run_id, 2), timeout=20,
                   message="two tasks running")
        manager.interrupt_kernel()
        reply = kernel.get_shell_msg(timeout=15)
        while reply["parent_header"].get("msg_id") != msg_id:
            reply = kernel.get_shell_msg(timeout=15)
        assert reply["content"]["status"] == "error"
        assert reply["content"]["ename"] == "KeyboardInterrupt"
        states = wait_until(lambda: (s := _states(client, flow_run_id)) and
                            set(s) == {"cancelled"} and s, timeout=10, message="all cancelled")
        assert len(states) == 30
        # The next cell runs at once, with nothing of the last one left queued.
        started = time.monotonic()
        answer = run("print(sum(f.cancelled() for f in futures))")
        assert answer["status"] == "ok", (answer.get("ename"), answer.get("evalue"),
                                          answer.get("traceback"))
        assert time.monotonic() - started < 5
        assert flow_runs.get_flow_run(client, flow_run_id)["state"] == "cancelled"
        del nbformat
    finally:
        kernel.stop_channels()
        manager.shutdown_kernel(now=True)
