"""Cache keys: deterministic hashes of task inputs and source, combined by policies.

Pure: no Redis and no I/O, except that ``inspect`` reads a function's source file.

The policy names and their algebra follow Prefect's ``cache_policies`` (``DEFAULT = INPUTS +
TASK_SOURCE + RUN_ID``, ``INPUTS - "conn"``) so that Prefect code keeps working. The hashing is
flowkit's own: a key must come out equal for equal inputs in every process on every machine, so
nothing here uses ``hash()`` (salted by PYTHONHASHSEED), ``id()``, pickle bytes or a ``repr``
that may contain an address. A value with no deterministic encoding raises
:class:`~flowkit.errors.CacheKeyError` naming where it sits and what to do, because a silent
fallback would give keys that never hit, or worse, hit for different inputs.

Where equal-comparing values of different types could behave differently (``1``, ``1.0``,
``True``; a list and a tuple; bytes and bytearray) they hash differently: a needless miss costs
one run, a wrong hit returns a wrong result.
"""

from __future__ import annotations

import types
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from flowkit._hashing import (
    ENCODING_VERSION,
    _callable_name,
    _hash_argument,
    _Hasher,
    _text,
    _type_name,
    stable_hash,
    task_source_hash,
)
from flowkit._hashing import MAX_DEPTH as MAX_DEPTH  # re-exported: part of the policy surface
from flowkit.errors import CacheKeyError, ConfigurationError

__all__ = ["CacheContext", "CacheKey", "CachePolicy", "CompoundPolicy", "Inputs", "TaskSource",
           "RunId", "FlowParameters", "NoCache", "CacheKeyFnPolicy", "INPUTS", "TASK_SOURCE",
           "RUN_ID", "FLOW_PARAMETERS", "NO_CACHE", "DEFAULT", "stable_hash",
           "task_source_hash", "task_input_hash", "resolve_policy"]


@dataclass(frozen=True)
class CacheContext:
    """What a cache policy or a ``cache_key_fn`` learns about the task run being keyed."""

    task_name: str
    fn: Callable[..., Any]
    flow_run_id: str = ""
    task_run_id: str = ""
    flow_parameters: dict[str, Any] = field(default_factory=dict)

    @property
    def task(self) -> types.SimpleNamespace:
        """Prefect's ``context.task``: ``.name`` and ``.fn``, for Prefect-style key functions."""
        return types.SimpleNamespace(name=self.task_name, fn=self.fn)

    @property
    def task_run(self) -> types.SimpleNamespace:
        """Prefect's ``context.task_run``: ``.id`` and ``.flow_run_id``."""
        return types.SimpleNamespace(id=self.task_run_id, flow_run_id=self.flow_run_id)


@dataclass(frozen=True)
class CacheKey:
    """A cache key and the labelled parts it was made of, for ``flowkit cache explain``.

    Attributes:
        key: hex SHA-256 over the parts sorted by label, so the order in which policies were
            added does not matter.
        parts: label -> hash (``task_source``, ``inputs.<name>``, ``flow_run_id``,
            ``flow_parameters``), or ``cache_key_fn`` -> the string the user's function returned.
    """

    key: str
    parts: dict[str, str]

    @classmethod
    def from_parts(cls, parts: dict[str, str]) -> CacheKey:
        """Combine labelled parts into a key."""
        hasher = _Hasher(prefix=ENCODING_VERSION + b"\0key\0")
        hasher.count(b"parts", len(parts))
        for label, value in sorted(parts.items()):
            hasher.frame(b"label", _text(label))
            hasher.frame(b"value", _text(value))
        return cls(hasher.hexdigest(), dict(parts))

    def explain(self) -> list[tuple[str, str]]:
        """The (label, hash) parts in the order the policies produced them."""
        return list(self.parts.items())


# -- policies --------------------------------------------------------------------------------------
def _names(names: str | Iterable[str]) -> tuple[str, ...]:
    if isinstance(names, str):
        return (names,)
    items = tuple(names) if isinstance(names, (list, tuple, set, frozenset)) else (None,)
    if not all(isinstance(name, str) for name in items):
        raise ConfigurationError(f"only parameter names (str) can be subtracted from a cache "
                                 f"policy, not {names!r}")
    return items


class CachePolicy(ABC):
    """Turns a task run's context and bound parameters into a cache key.

    Policies combine with ``+`` (every part of both) and drop parameters with ``- "name"``
    (or a list of names), as in Prefect: ``INPUTS - "conn" + TASK_SOURCE``.
    """

    @abstractmethod
    def compute_key(self, context: CacheContext,
                    parameters: dict[str, Any]) -> CacheKey | None:
        """The key for one task run, or None to run it without the cache.

        Args:
            context: the task and run being keyed.
            parameters: the call's arguments bound to parameter names.
        """

    def __add__(self, other: CachePolicy) -> CachePolicy:
        if not isinstance(other, CachePolicy):
            return NotImplemented
        if isinstance(self, NoCache) or isinstance(other, NoCache):
            return NO_CACHE
        members: list[CachePolicy] = []
        for policy in (*_members(self), *_members(other)):
            if policy not in members:
                members.append(policy)
        return members[0] if len(members) == 1 else CompoundPolicy(tuple(members))

    def __sub__(self, names: str | Iterable[str]) -> CachePolicy:
        """Without the given parameters; a policy that hashes no parameters stays as it is."""
        _names(names)
        return self


def _members(policy: CachePolicy) -> tuple[CachePolicy, ...]:
    return policy.policies if isinstance(policy, CompoundPolicy) else (policy,)


@dataclass(frozen=True, repr=False)
class Inputs(CachePolicy):
    """Each parameter hashed separately (parts ``inputs.<name>``), except those in ``exclude``."""

    exclude: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "exclude", tuple(sorted(set(_names(self.exclude)))))

    def compute_key(self, context: CacheContext,
                    parameters: dict[str, Any]) -> CacheKey | None:
        return CacheKey.from_parts({f"inputs.{name}": _hash_argument(name, value)
                                    for name, value in parameters.items()
                                    if name not in self.exclude})

    def __sub__(self, names: str | Iterable[str]) -> CachePolicy:
        return Inputs(self.exclude + _names(names))

    def __repr__(self) -> str:
        return "INPUTS" + "".join(f" - {name!r}" for name in self.exclude)


@dataclass(frozen=True, repr=False)
class TaskSource(CachePolicy):
    """The task function's source (part ``task_source``): editing the body invalidates it."""

    def compute_key(self, context: CacheContext,
                    parameters: dict[str, Any]) -> CacheKey | None:
        return CacheKey.from_parts({"task_source": task_source_hash(context.fn)})

    def __repr__(self) -> str:
        return "TASK_SOURCE"


@dataclass(frozen=True, repr=False)
class RunId(CachePolicy):
    """The flow run (part ``flow_run_id``): results are reused only within one flow run.

    Falls back to the task run id as Prefect does; with neither id it returns None, because a
    key meant to stay inside one run must not be shared by all runs.
    """

    def compute_key(self, context: CacheContext,
                    parameters: dict[str, Any]) -> CacheKey | None:
        run_id = context.flow_run_id or context.task_run_id
        if not run_id:
            return None
        return CacheKey.from_parts({"flow_run_id": stable_hash(run_id, path="flow_run_id")})

    def __repr__(self) -> str:
        return "RUN_ID"


@dataclass(frozen=True, repr=False)
class FlowParameters(CachePolicy):
    """The parameters of the enclosing flow run (part ``flow_parameters``)."""

    def compute_key(self, context: CacheContext,
                    parameters: dict[str, Any]) -> CacheKey | None:
        digest = stable_hash(context.flow_parameters, path="flow_parameters")
        return CacheKey.from_parts({"flow_parameters": digest})

    def __repr__(self) -> str:
        return "FLOW_PARAMETERS"


@dataclass(frozen=True, repr=False)
class NoCache(CachePolicy):
    """Never cache; adding it to any policy gives ``NO_CACHE`` again."""

    def compute_key(self, context: CacheContext,
                    parameters: dict[str, Any]) -> CacheKey | None:
        return None

    def __repr__(self) -> str:
        return "NO_CACHE"


@dataclass(frozen=True, repr=False)
class CacheKeyFnPolicy(CachePolicy):
    """A user's ``cache_key_fn(context, parameters) -> str | None`` (None: do not cache).

    Exceptions the function raises propagate unchanged.
    """

    fn: Callable[..., str | None]

    def compute_key(self, context: CacheContext,
                    parameters: dict[str, Any]) -> CacheKey | None:
        result = self.fn(context, parameters)
        if result is None:
            return None
        if not isinstance(result, str):
            raise CacheKeyError(f"cache_key_fn {_callable_name(self.fn)} returned "
                                f"{type(result).__name__}, expected a str (or None to run "
                                f"without the cache)")
        return CacheKey.from_parts({"cache_key_fn": result})

    def __repr__(self) -> str:
        return f"CacheKeyFnPolicy({_callable_name(self.fn)})"


@dataclass(frozen=True, repr=False)
class CompoundPolicy(CachePolicy):
    """Several policies: the key covers every member's parts.

    If any member returns None (do not cache), the whole policy returns None. Subtracting a
    parameter name applies to the ``Inputs`` members.
    """

    policies: tuple[CachePolicy, ...]

    def compute_key(self, context: CacheContext,
                    parameters: dict[str, Any]) -> CacheKey | None:
        parts: dict[str, str] = {}
        for policy in self.policies:
            key = policy.compute_key(context, parameters)
            if key is None:
                return None
            for label, value in key.parts.items():
                unique, n = label, 2
                while parts.get(unique, value) != value:  # e.g. two cache_key_fn members
                    unique, n = f"{label}#{n}", n + 1
                parts[unique] = value
        return CacheKey.from_parts(parts)

    def __sub__(self, names: str | Iterable[str]) -> CachePolicy:
        excluded = _names(names)
        return CompoundPolicy(tuple(p - excluded if isinstance(p, Inputs) else p
                                    for p in self.policies))

    def __repr__(self) -> str:
        return " + ".join(map(repr, self.policies))


#: Every parameter of the call.
INPUTS = Inputs()
#: The task function's source text.
TASK_SOURCE = TaskSource()
#: The flow run: reuse results only within one run.
RUN_ID = RunId()
#: The enclosing flow run's parameters.
FLOW_PARAMETERS = FlowParameters()
#: Never cache.
NO_CACHE = NoCache()
#: Prefect's default policy. flowkit caches nothing unless a task asks, see resolve_policy.
DEFAULT = INPUTS + TASK_SOURCE + RUN_ID


def resolve_policy(cache_policy: Any,
                   cache_key_fn: Callable[..., str | None] | None) -> CachePolicy | None:
    """The policy in effect for a task's ``cache_policy`` and ``cache_key_fn`` options.

    Unlike Prefect, flowkit caches nothing by default: with neither option this returns None.

    Returns:
        ``CacheKeyFnPolicy(cache_key_fn)`` when a key function is given, the policy itself when
        one is given, None (caching off) when neither is.

    Raises:
        ConfigurationError: both options are given, ``cache_key_fn`` is not callable, or
            ``cache_policy`` is not a :class:`CachePolicy`.
    """
    if cache_key_fn is not None:
        if cache_policy is not None:
            raise ConfigurationError(
                f"a task takes cache_policy or cache_key_fn, not both (got {cache_policy!r} "
                f"and {_callable_name(cache_key_fn)}): pick one; a cache_key_fn can hash "
                f"whatever else it needs with flowkit.caching.stable_hash")
        if not callable(cache_key_fn):
            raise ConfigurationError(f"cache_key_fn must be callable as fn(context, parameters)"
                                     f", not {_type_name(cache_key_fn)}")
        return CacheKeyFnPolicy(cache_key_fn)
    if cache_policy is None or isinstance(cache_policy, CachePolicy):
        return cache_policy
    raise ConfigurationError(f"cache_policy must be a flowkit.caching policy such as INPUTS, "
                             f"TASK_SOURCE, DEFAULT or NO_CACHE (combine with + and -), not "
                             f"{_type_name(cache_policy)}")


def task_input_hash(context: CacheContext, arguments: dict[str, Any]) -> str | None:
    """Prefect's ``task_input_hash`` as a ``cache_key_fn``: task name, source and arguments.

    Raises:
        CacheKeyError: an argument cannot be hashed (Prefect returns None here; flowkit says
            which argument and why instead of silently never caching).
    """
    parts = {f"inputs.{name}": _hash_argument(name, value) for name, value in arguments.items()}
    parts["task"] = stable_hash(context.task_name)
    parts["task_source"] = task_source_hash(context.fn)
    return CacheKey.from_parts(parts).key
