"""Packaging: every mapped folder with an __init__.py is listed, so wheels are complete."""

from __future__ import annotations

import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent


def test_every_package_folder_is_listed() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    found = set()
    for package, folder in config["package-dir"].items():
        for init in (ROOT / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / folder).parts
            if "__pycache__" not in relative:
                found.add(".".join((package, *relative)))
    missing = found - listed
    assert not missing, f"add these to [tool.setuptools] packages: {sorted(missing)}"


def test_the_lua_library_ships_as_package_data() -> None:
    from flowkit.store.functions import FILES

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "*.lua" in config["package-data"]["flowkit.store.library"]
    shipped = {p.stem for p in (ROOT / "flowkit" / "store" / "library").glob("*.lua")}
    assert shipped == set(FILES), "every library file is loaded, and only those"


def test_the_dashboard_is_part_of_a_plain_install() -> None:
    """`pip install flowkit` then `flowkit dashboard start`: its pieces are dependencies."""
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {d.split(">")[0].split("=")[0].split(";")[0].strip().lower() for d in dependencies}
    assert {"starlette", "uvicorn", "jinja2"} <= names


def test_a_missing_dashboard_piece_is_one_line_naming_the_install_command() -> None:
    """An environment installed with --no-deps: the CLI says what to install (exit 2)."""
    import subprocess

    for missing in ("uvicorn", "starlette"):
        code = (f"import sys; sys.modules[{missing!r}] = None; "
                "sys.argv = ['flowkit', 'dashboard', 'start', '--redis-url', 'redis://x:1']; "
                "from flowkit.cli import main; main()")
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=60)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2 and len(lines) == 1, done.stderr
        assert "pip install" in lines[0] and missing in lines[0]
