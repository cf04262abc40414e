"""The Lua scripts shipped in ``flowkit/store/scripts``, loaded once per client.

redis-py's ``Script`` objects check ``SCRIPT EXISTS`` on every pipeline execute (one more round
trip per task); here each script is loaded once and called with EVALSHA, and a NOSCRIPT reply
(the server restarted) reloads it.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from typing import TYPE_CHECKING, Any, Callable, Sequence

if TYPE_CHECKING:
    import redis


@lru_cache(maxsize=None)
def source(name: str) -> str:
    """The text of ``scripts/<name>.lua``, with ``-- @include <file>`` lines replaced by that
    file, itself expanded, each file once (Lua scripts cannot call each other, so shared
    functions are pasted in)."""
    folder = resources.files("flowkit.store.scripts")
    included: set[str] = set()

    def expand(file: str) -> list[str]:
        out: list[str] = []
        for line in folder.joinpath(file).read_text().splitlines():
            if not line.startswith("-- @include "):
                out.append(line)
            elif (part := line.split()[-1]) not in included:
                included.add(part)
                out += expand(part)
        return out

    return "\n".join(expand(f"{name}.lua")) + "\n"


def _shas(client: redis.Redis) -> dict[str, str]:
    return client.__dict__.setdefault("_flowkit_script_shas", {})  # type: ignore[no-any-return]


def sha(client: redis.Redis, name: str) -> str:
    """The SHA1 of a script, loading it into the server the first time."""
    shas = _shas(client)
    if name not in shas:
        shas[name] = client.script_load(source(name))
    return shas[name]


def forget(client: redis.Redis) -> None:
    """Forget loaded scripts (after NOSCRIPT: the server restarted or was flushed)."""
    _shas(client).clear()


def execute(client: redis.Redis, build: Callable[[Any], None]) -> list[Any]:
    """Build a pipeline with ``build(pipe)`` and execute it; after NOSCRIPT (the server
    restarted and lost its scripts) reload them and run the pipeline once more.

    Safe to repeat: the scripts are fenced (finish), idempotent (release) or take nothing
    when there is nothing to take (claim, enqueue after a failed attempt wrote nothing).
    """
    import redis as redis_lib

    for attempt in (1, 2):
        pipe = client.pipeline(transaction=False)
        build(pipe)
        try:
            return pipe.execute()
        except redis_lib.exceptions.NoScriptError:
            if attempt == 2:
                raise
            forget(client)
    raise AssertionError("unreachable")


def run(client: redis.Redis, name: str, keys: Sequence[Any], args: Sequence[Any],
        pipe: Any = None) -> Any:
    """EVALSHA a script on ``client``, or queue it on ``pipe`` (a pipeline of ``client``)."""
    import redis as redis_lib

    if pipe is not None:
        return pipe.evalsha(sha(client, name), len(keys), *keys, *args)
    try:
        return client.evalsha(sha(client, name), len(keys), *keys, *args)
    except redis_lib.exceptions.NoScriptError:
        forget(client)
        return client.evalsha(sha(client, name), len(keys), *keys, *args)
