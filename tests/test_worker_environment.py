"""What an attempt meets on a worker: a module only the driver has (in the pickled function,
its arguments or the task body) fails the run with the module, the worker's host and a hint,
as the future raises it and as ``flowkit run show`` shows it. Real worker processes that do not
have the driver's module on their path."""

from __future__ import annotations

import socket
import textwrap
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from flowkit import flow, task
from flowkit.cli import cli
from flowkit.errors import MissingModule
from flowkit.store import flow_runs, task_runs

HINT = "install it on the workers"


@pytest.fixture
def driver_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A module on the driver's sys.path only (the workers run in tests/ without it)."""
    folder = tmp_path / "driver_path"
    folder.mkdir()
    (folder / "driver_only_mod.py").write_text(textwrap.dedent("""
        from flowkit import task

        class Box:
            def __init__(self, value):
                self.value = value

        def _times(x, n):
            return x * n

        @task
        def triple(x):  # by value (the module's name is the Task), but _times by reference
            return _times(x, 3)
    """))
    (folder / "driver_only_body.py").write_text("VALUE = 41\n")
    monkeypatch.syspath_prepend(str(folder))
    import driver_only_mod

    yield driver_only_mod
    import sys

    sys.modules.pop("driver_only_mod", None)
    sys.modules.pop("driver_only_body", None)


@task
def unbox(box: Any) -> int:
    return int(box.value)


@task
def imports_in_body() -> int:
    import driver_only_body  # type: ignore[import-not-found]  # on the driver's path only

    return int(driver_only_body.VALUE) + 1


@flow(name="env-missing")
def missing_everywhere(mod: Any) -> list[str]:
    futures = [mod.triple.submit(2), unbox.submit(mod.Box(5)), imports_in_body.submit()]
    messages = []
    for future in futures:
        with pytest.raises(MissingModule) as caught:
            future.result(timeout=20)
        messages.append(str(caught.value))
        assert isinstance(caught.value, ModuleNotFoundError)
    return messages


def test_missing_module_names_module_host_and_hint(worker, client, driver_only) -> None:  # type: ignore[no-untyped-def]
    host = socket.gethostname()
    messages = missing_everywhere(driver_only)
    expected = [("driver_only_mod", "to unpickle the task function", "register_pickle_by_value"),
                ("driver_only_mod", "to unpickle the task's arguments",
                 "register_pickle_by_value(driver_only_mod)"),
                ("driver_only_body", "in its body", "PYTHONPATH")]
    for message, (module, where, ship) in zip(messages, expected):
        assert f"needs module {module!r} {where}" in message, message
        assert f"worker host {host!r}" in message and HINT in message and ship in message
    run = flow_runs.list_flow_runs(client, limit=1)[0]
    rows = task_runs.get_task_runs(client, run["id"])
    assert [r["state"] for r in rows] == ["failed"] * 3
    assert {r["error_type"] for r in rows} == {"flowkit.errors.MissingModule"}
    assert [r["error_message"] for r in rows] == messages
    out = CliRunner().invoke(cli, ["run", "show", run["id"]], catch_exceptions=False,
                             terminal_width=400).output
    flat = " ".join(out.split())
    for module in ("driver_only_mod", "driver_only_body"):
        assert f"needs module {module!r}" in flat and HINT in flat, out
