"""A task sees the globals of its driver as they are at each submit, not at the first one."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import pytest

SCRIPT = textwrap.dedent('''
    import flowkit
    from flowkit import task

    OFFSET = 1

    def shift(x):
        return x + OFFSET

    @task
    def shifted(x: int) -> int:
        return shift(x)

    first = shifted.submit(0).result(timeout=30)
    OFFSET = 100
    second = shifted.submit(1).result(timeout=30)
    mapped = [f.result(timeout=30) for f in shifted.map([2, 3])]
    print(first, second, mapped)
''')


def test_a_script_that_changes_a_global_between_submits_gets_the_new_value(
        worker, client, tmp_path) -> None:
    script = tmp_path / "changing_globals.py"
    script.write_text(SCRIPT)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=60, env={**os.environ})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "1 101 [102, 103]"
    # Two distinct function blobs (before and after the change), each stored once.
    assert len(client.keys("flowkit:fn:*")) == 2


def test_one_pickle_per_submit_and_one_blob_per_distinct_function(client) -> None:
    """Equal globals give equal blobs (one digest); a changed global gives a new digest."""
    from flowkit import serializers

    namespace: dict[str, object] = {"OFFSET": 1}
    exec("def fn(x):\n    return x + OFFSET\n", namespace)
    fn = namespace["fn"]
    fn.__module__ = "__main__"  # type: ignore[attr-defined]
    first = serializers.dumps_function(fn)  # type: ignore[arg-type]
    again = serializers.dumps_function(fn)  # type: ignore[arg-type]
    namespace["OFFSET"] = 100
    changed = serializers.dumps_function(fn)  # type: ignore[arg-type]
    assert first[0] == again[0]
    assert changed[0] != first[0]


@pytest.mark.slow
def test_a_notebook_cell_that_changes_a_global_reruns_with_the_new_value(
        worker, client, tmp_path) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    cells = ["from flowkit import task\nOFFSET = 1\n@task\ndef shifted(x: int) -> int:\n"
             "    return x + OFFSET",
             "print(shifted.submit(0).result(timeout=30))",
             "OFFSET = 100",
             "print(shifted.submit(1).result(timeout=30))"]
    book = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    started = time.monotonic()
    nbclient.NotebookClient(book, timeout=60, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = ["".join(o.get("text", "") for o in cell.outputs) for cell in book.cells]
    assert outputs[1].strip() == "1"
    assert outputs[3].strip() == "101"
    assert time.monotonic() - started < 60
    # One ad-hoc run per cell that submitted, each ended when its task run did.
    from flowkit.store.flow_runs import list_flow_runs

    from conftest import wait_until

    runs = wait_until(lambda: [r for r in list_flow_runs(client) if r["state"] == "completed"]
                      if len(list_flow_runs(client)) == 2 else None, timeout=10,
                      message="two cell runs")
    assert sorted(r["name"] for r in runs) == ["adhoc: cell 2", "adhoc: cell 4"]
    assert [r["n_completed"] for r in runs] == ["1", "1"]
