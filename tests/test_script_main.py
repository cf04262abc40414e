"""A user script: tasks defined in ``__main__`` travel by value to workers elsewhere."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent('''
    import json, os
    from flowkit import flow, task

    OFFSET = 100

    class QuotaExceeded(Exception):
        pass

    def helper(x):
        return x + OFFSET

    @task
    def shifted(x: int) -> dict:
        return {"value": helper(x), "pid": os.getpid(), "cwd": os.getcwd()}

    @task
    def over_quota(n: int) -> None:
        raise QuotaExceeded(f"quota {n} exceeded")

    @flow
    def main_flow(n: int) -> list:
        return [f.result() for f in shifted.map(range(n))]

    if __name__ == "__main__":
        rows = main_flow(n=6)
        try:
            over_quota.submit(7).result()
            caught = "nothing"
        except QuotaExceeded as exc:
            caught = f"QuotaExceeded: {exc}"
            remote = exc.remote_traceback
        print(json.dumps({"rows": rows, "caught": caught, "remote": remote,
                          "driver_pid": os.getpid()}))
''')


def test_main_module_tasks_run_on_workers_started_elsewhere(workers, client, tmp_path) -> None:
    script_dir = tmp_path / "project"
    worker_dir = tmp_path / "elsewhere"
    script_dir.mkdir()
    worker_dir.mkdir()
    (script_dir / "my_flow.py").write_text(SCRIPT)
    # Workers run in another directory with nothing of the script importable.
    env = {"PYTHONPATH": ""}
    workers.start("default", concurrency=2, cwd=worker_dir, env=env)
    workers.start("default", concurrency=1, cwd=worker_dir, env=env)
    workers.wait_registered(client, count=2)

    done = subprocess.run([sys.executable, "my_flow.py"], cwd=script_dir, capture_output=True,
                          text=True, timeout=60, env={**os.environ})
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert [r["value"] for r in out["rows"]] == [100 + i for i in range(6)]
    assert {r["cwd"] for r in out["rows"]} == {str(worker_dir)}
    assert out["caught"] == "QuotaExceeded: quota 7 exceeded"
    # The worker never saw my_flow.py, yet its traceback names the user's file and line.
    assert f'File "{script_dir / "my_flow.py"}", line 19, in over_quota' in out["remote"]
    assert out["driver_pid"] not in {r["pid"] for r in out["rows"]}


def test_calls_outside_a_flow_are_recorded_in_an_adhoc_run(worker, client, tmp_path) -> None:
    from flowkit.store.flow_runs import list_flow_runs
    from flowkit.store.task_runs import get_task_runs

    script = tmp_path / "notebook_like.py"
    script.write_text(textwrap.dedent('''
        from flowkit import task

        @task
        def double(x: int) -> int:
            return 2 * x

        print(sum(f.result() for f in double.map(range(4))))
    '''))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=60, env={**os.environ})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "12"
    [run] = list_flow_runs(client)
    assert run["name"] == "adhoc: notebook_like.py" and run["kind"] == "adhoc"
    assert run["state"] == "completed" and run["n_completed"] == "4"
    assert sorted(t["parameters"] for t in get_task_runs(client, run["id"])) == [
        '{"x": 0}', '{"x": 1}', '{"x": 2}', '{"x": 3}']
