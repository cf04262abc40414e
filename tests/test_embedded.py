"""The embedded default: no configuration, a local server and local workers, history kept."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from flowkit.embedded import free_port, read_info

from conftest import wait_until

SCRIPT = textwrap.dedent('''
    import os
    from flowkit import flow, task

    @task
    def cube(x: int) -> int:
        return x ** 3

    @flow
    def cubes(n: int) -> list:
        return [f.result() for f in cube.map(range(n))]

    if __name__ == "__main__":
        print(cubes(5))
''')


def _clean_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWKIT_")}
    return {**env, "FLOWKIT_HOME": str(home), "FLOWKIT_SERVER_PORT": str(free_port()), **extra}


def _flowkit(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "flowkit", *args], capture_output=True,
                          text=True, timeout=60, env=env)


@pytest.fixture
def home(tmp_path: Path):  # type: ignore[no-untyped-def]
    home = tmp_path / "home"
    yield home
    _flowkit(_clean_env(home), "server", "stop")


def test_fresh_machine_runs_flow_and_keeps_history(home: Path, tmp_path: Path) -> None:
    env = _clean_env(home)
    (tmp_path / "my_flow.py").write_text(SCRIPT)
    first = subprocess.run([sys.executable, "my_flow.py"], cwd=tmp_path, capture_output=True,
                           text=True, timeout=90, env=env)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == "[0, 1, 8, 27, 64]"
    info = read_info(home)
    assert info is not None and (home / "data").is_dir() and (home / "secret_key").exists()
    assert oct((home / "server.json").stat().st_mode)[-3:] == "600"

    second = subprocess.run([sys.executable, "my_flow.py"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=90, env=env)
    assert second.returncode == 0, second.stderr
    assert read_info(home).pid == info.pid  # the server was reused

    # Local workers leave with their driver.
    listing = lambda: json.loads(_flowkit(env, "worker", "ls", "--json").stdout)  # noqa: E731
    wait_until(lambda: listing() == [], timeout=20, message="local workers to stop")

    # History survives a server restart (append-only file).
    assert _flowkit(env, "server", "stop").returncode == 0
    runs = json.loads(_flowkit(env, "run", "ls", "--json").stdout)
    assert [r["name"] for r in runs if r["name"] == "cubes"] == ["cubes", "cubes"]
    assert all(r["state"] == "completed" for r in runs if r["name"] == "cubes")
    assert read_info(home).pid != info.pid


def test_server_start_prints_url_for_other_machines(home: Path, tmp_path: Path) -> None:
    port = free_port()
    env = _clean_env(home)
    dashboard_port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "flowkit", "server", "start", "--host",
                               "127.0.0.1", "--port", str(port), "--dashboard-port",
                               str(dashboard_port)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = [server.stdout.readline() for _ in range(6)]  # type: ignore[union-attr]
        assert f"dashboard on http://127.0.0.1:{dashboard_port}/runs" in lines[-1]
        url = next(line.split("'")[1] for line in lines if "FLOWKIT_REDIS_URL" in line)
        key = next(line.split("'")[1] for line in lines if "FLOWKIT_SECRET_KEY" in line)
        assert f"127.0.0.1:{port}" in url and len(key) >= 32
        # "Another machine": only the URL and the key, a different home.
        remote = _clean_env(tmp_path / "other-home", FLOWKIT_REDIS_URL=url,
                            FLOWKIT_SECRET_KEY=key)
        worker = subprocess.Popen([sys.executable, "-m", "flowkit", "worker", "start", "-c", "1"],
                                  env=remote, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        (tmp_path / "my_flow.py").write_text(SCRIPT)
        done = subprocess.run([sys.executable, "my_flow.py"], cwd=tmp_path, capture_output=True,
                              text=True, timeout=60, env=remote)
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=15) == 0
        assert done.stdout.strip() == "[0, 1, 8, 27, 64]", done.stderr
        import httpx

        listing = httpx.get(f"http://127.0.0.1:{dashboard_port}/api/runs", timeout=10).json()
        assert [r["name"] for r in listing["runs"]] == ["cubes"]
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=15) == 0
        server.stdout.close()  # type: ignore[union-attr]
        server.stderr.close()  # type: ignore[union-attr]
