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
