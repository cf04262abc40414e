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

import dataclasses
import datetime as dt
import decimal
import enum
import functools
import hashlib
import inspect
import math
import pathlib
import sys
import textwrap
import types
import uuid
import weakref
from abc import ABC, abstractmethod
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from flowkit.errors import CacheKeyError, ConfigurationError

__all__ = ["CacheContext", "CacheKey", "CachePolicy", "CompoundPolicy", "Inputs", "TaskSource",
           "RunId", "FlowParameters", "NoCache", "CacheKeyFnPolicy", "INPUTS", "TASK_SOURCE",
           "RUN_ID", "FLOW_PARAMETERS", "NO_CACHE", "DEFAULT", "stable_hash",
           "task_source_hash", "task_input_hash", "resolve_policy"]

#: Starts every digest; bump it when the encoding changes so that old cache entries stop matching.
ENCODING_VERSION = b"flowkit-cache-v1"
#: Containers nested deeper than this are refused instead of risking a RecursionError midway.
MAX_DEPTH = 100

_Encoder = Callable[["_Hasher", Any, str, int], None]


def _type_name(value: Any) -> str:
    cls = type(value)
    return f"{cls.__module__}.{cls.__qualname__}"


def _callable_name(fn: Any) -> str:
    name = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    return f"{getattr(fn, '__module__', None) or '?'}.{name}"


def _int_bytes(value: int) -> bytes:
    """Two's complement bytes: unlike ``str(int)`` it has no 4300-digit limit."""
    return int.to_bytes(value, (int.bit_length(value) + 8) // 8, "big", signed=True)


def _float_bytes(value: float) -> bytes:
    """``repr`` round-trips exactly; -0.0 stays apart from 0.0; every NaN is the same NaN."""
    return b"nan" if math.isnan(value) else float.__repr__(value).encode()


def _text(value: str) -> bytes:
    return str.encode(value, "utf-8", "surrogatepass")  # lone surrogates must not raise


def _short(path: str) -> str:
    """A path fit for a message: a value nested 100 deep would otherwise fill the screen."""
    return path if len(path) <= 160 else f"{path[:60]}...{path[-90:]}"


def _cannot(path: str, reason: str) -> CacheKeyError:
    return CacheKeyError(f"cannot hash {_short(path)} into a cache key: {reason}")


def _key_path(path: str, key: Any) -> str:
    if type(key) in (str, int, float, bool, bytes, type(None)) and len(repr(key)) <= 60:
        return f"{path}[{key!r}]"
    return f"{path}[<{_type_name(key)} key>]"


class _Hasher:
    """Feeds the canonical, type-tagged encoding of one value into a SHA-256."""

    def __init__(self, argument: str | None = None, active: dict[int, int] | None = None,
                 prefix: bytes = b"") -> None:
        self._sha = hashlib.sha256(prefix)
        self.argument = argument  #: the task parameter being hashed, for the error hint
        self.active: dict[int, int] = {} if active is None else active  #: id -> depth, on stack

    def hexdigest(self) -> str:
        return self._sha.hexdigest()

    def frame(self, tag: bytes, payload: bytes | memoryview = b"") -> None:
        """Write one self-delimiting record, so that no two encodings can run together."""
        size = payload.nbytes if isinstance(payload, memoryview) else len(payload)
        self._sha.update(len(tag).to_bytes(1, "big") + tag + size.to_bytes(8, "big"))
        self._sha.update(payload)

    def count(self, tag: bytes, n: int) -> None:
        self.frame(tag, n.to_bytes(8, "big"))

    def raw(self, data: bytes) -> None:
        self._sha.update(data)

    def sub_digest(self, value: Any, path: str, depth: int) -> bytes:
        """Digest of one element, for containers whose order must not matter."""
        child = _Hasher(self.argument, self.active)
        child.encode(value, path, depth)
        return child._sha.digest()

    def encode(self, value: Any, path: str, depth: int) -> None:
        """Encode ``value``, found at ``path``, nested ``depth`` containers deep."""
        atom = _ATOMS.get(type(value))
        if atom is not None:
            atom(self, value, path, depth)
            return
        if depth >= MAX_DEPTH:
            raise _cannot(path, f"it is nested more than {MAX_DEPTH} levels deep; {self.hint()}")
        key = id(value)
        if key in self.active:
            if isinstance(value, types.FunctionType):  # a recursive closure names itself
                self.frame(b"backref", _int_bytes(depth - self.active[key]))
                return
            raise _cannot(path, f"it contains itself (a reference cycle through a "
                                f"{_type_name(value)}); {self.hint()}")
        self.active[key] = depth
        try:
            self._encode_compound(value, path, depth)
        finally:
            del self.active[key]

    def _encode_compound(self, value: Any, path: str, depth: int) -> None:
        container = _CONTAINERS.get(type(value))
        if container is not None:
            container(self, value, path, depth)
            return
        for strategy in _STRATEGIES:
            if strategy(self, value, path, depth):
                return
        raise _cannot(path, f"its type {_type_name(value)} has no encoding that is the same in "
                            f"every process (its identity is its memory address or live "
                            f"state); {self.hint()}")

    def hint(self) -> str:
        name = repr(self.argument) if self.argument is not None else "'<argument name>'"
        return (f"exclude it with cache_policy=INPUTS - {name}, give the type a "
                f"__flowkit_hash__(self) -> str | bytes method, or pass cache_key_fn")


# -- builtin types, dispatched on their exact type ---------------------------------------------
def _sized(tag: bytes) -> _Encoder:
    def encode(h: _Hasher, value: Any, path: str, depth: int) -> None:
        h.count(tag, len(value))
        for index, item in enumerate(value):
            h.encode(item, f"{path}[{index}]", depth + 1)
    return encode


def _unordered(tag: bytes) -> _Encoder:
    def encode(h: _Hasher, value: Any, path: str, depth: int) -> None:
        digests = sorted(h.sub_digest(item, f"{path}[<element>]", depth + 1) for item in value)
        h.count(tag, len(digests))
        for digest in digests:
            h.raw(digest)
    return encode


def _encode_dict(h: _Hasher, value: Any, path: str, depth: int) -> None:
    pairs = sorted(h.sub_digest(k, f"{path}[<key>]", depth + 1)
                   + h.sub_digest(v, _key_path(path, k), depth + 1) for k, v in value.items())
    h.count(b"dict", len(pairs))
    for pair in pairs:
        h.raw(pair)


def _encode_ordered_dict(h: _Hasher, value: Any, path: str, depth: int) -> None:
    h.count(b"odict", len(value))  # OrderedDict equality depends on order, so its key does too
    for k, v in value.items():
        h.encode(k, f"{path}[<key>]", depth + 1)
        h.encode(v, _key_path(path, k), depth + 1)


def _encode_slice(h: _Hasher, value: Any, path: str, depth: int) -> None:
    h.frame(b"slice")
    for name in ("start", "stop", "step"):
        h.encode(getattr(value, name), f"{path}.{name}", depth + 1)


def _encode_memoryview(h: _Hasher, value: Any, path: str, depth: int) -> None:
    h.frame(b"memoryview", f"{value.format}:{value.shape}".encode())
    h.frame(b"data", value.tobytes())


def _encode_range(h: _Hasher, value: Any, path: str, depth: int) -> None:
    h.frame(b"range", b"")
    for number in (value.start, value.stop, value.step):
        h.frame(b"int", _int_bytes(number))


def _leaf(tag: bytes, payload: Callable[[Any], bytes]) -> _Encoder:
    def encode(h: _Hasher, value: Any, path: str, depth: int) -> None:
        h.frame(tag, payload(value))
    return encode


def _decimal_bytes(value: decimal.Decimal) -> bytes:
    sign, digits, exponent = value.as_tuple()  # str() would follow the context's capitals
    return f"{sign}|{''.join(map(str, digits))}|{exponent}".encode()


_ATOMS: dict[type, _Encoder] = {
    type(None): _leaf(b"none", lambda v: b""),
    type(Ellipsis): _leaf(b"ellipsis", lambda v: b""),
    bool: _leaf(b"bool", lambda v: b"\x01" if v else b"\x00"),
    int: _leaf(b"int", _int_bytes),
    float: _leaf(b"float", _float_bytes),
    complex: _leaf(b"complex", lambda v: _float_bytes(v.real) + b"," + _float_bytes(v.imag)),
    str: _leaf(b"str", _text),
    bytes: _leaf(b"bytes", bytes),
    bytearray: _leaf(b"bytearray", bytes),
    memoryview: _encode_memoryview,
    dt.datetime: _leaf(b"datetime", lambda v: f"{v.isoformat()}|{v.fold}".encode()),
    dt.date: _leaf(b"date", lambda v: v.isoformat().encode()),
    dt.time: _leaf(b"time", lambda v: f"{v.isoformat()}|{v.fold}".encode()),
    dt.timedelta: _leaf(b"timedelta", lambda v: _int_bytes(
        (v.days * 86_400 + v.seconds) * 1_000_000 + v.microseconds)),
    decimal.Decimal: _leaf(b"decimal", _decimal_bytes),
    uuid.UUID: _leaf(b"uuid", lambda v: v.bytes),
    range: _encode_range,
}

_CONTAINERS: dict[type, _Encoder] = {
    list: _sized(b"list"),
    tuple: _sized(b"tuple"),
    set: _unordered(b"set"),
    frozenset: _unordered(b"frozenset"),
    dict: _encode_dict,
    OrderedDict: _encode_ordered_dict,
    slice: _encode_slice,
}


# -- strategies for everything else, tried in order; each returns True when it handled value ---
def _by_flowkit_hash(h: _Hasher, value: Any, path: str, depth: int) -> bool:
    method = getattr(type(value), "__flowkit_hash__", None)  # on the type: mocks answer anything
    if method is None:
        return False
    try:
        result = method(value)
    except Exception as exc:
        raise _cannot(path, f"{_type_name(value)}.__flowkit_hash__ raised {exc!r}") from exc
    if isinstance(result, str):
        result = _text(result)
    if not isinstance(result, bytes):
        raise _cannot(path, f"{_type_name(value)}.__flowkit_hash__ returned "
                            f"{type(result).__name__}, expected str or bytes")
    h.frame(b"custom", _type_name(value).encode())
    h.frame(b"value", result)
    return True


def _by_numpy(h: _Hasher, value: Any, path: str, depth: int) -> bool:
    if type(value).__module__ not in ("numpy", "numpy.dtypes"):
        return False  # so that numpy is imported only when a numpy value is hashed
    import numpy as np

    if isinstance(value, np.dtype):
        h.frame(b"np.dtype", f"{value.str}|{value.descr}".encode())
        return True
    if isinstance(value, (np.ndarray, np.generic)):
        array = np.asarray(value)
        h.frame(b"np.array", _type_name(value).encode())
        h.frame(b"dtype", f"{array.dtype.str}|{array.dtype.descr}".encode())
        h.frame(b"shape", ",".join(map(str, array.shape)).encode())
        if array.dtype.hasobject:  # the buffer holds pointers: hash the objects themselves
            h.encode(array.tolist(), path, depth + 1)
        else:  # C order whatever the memory layout, so equal arrays hash equal
            flat = np.ascontiguousarray(array).reshape(-1).view(np.uint8)
            h.frame(b"data", memoryview(flat))
        return True
    return False


def _by_enum(h: _Hasher, value: Any, path: str, depth: int) -> bool:
    if not isinstance(value, enum.Enum):
        return False
    h.frame(b"enum", _type_name(value).encode())
    h.encode(value.value, f"{path}.value", depth + 1)
    return True


def _fields(h: _Hasher, tag: bytes, value: Any, items: Iterable[tuple[str, Any]], path: str,
            depth: int) -> None:
    pairs = list(items)
    h.frame(tag, _type_name(value).encode())
    h.count(b"fields", len(pairs))
    for name, item in pairs:
        h.frame(b"field", _text(name))
        h.encode(item, f"{path}.{name}", depth + 1)


def _by_pydantic(h: _Hasher, value: Any, path: str, depth: int) -> bool:
    pydantic = sys.modules.get("pydantic")  # not imported means no model can exist
    if pydantic is None or not isinstance(value, pydantic.BaseModel):
        return False
    try:
        data = value.model_dump(mode="python")
    except Exception as exc:
        raise _cannot(path, f"{_type_name(value)}.model_dump() raised {exc!r}") from exc
    _fields(h, b"pydantic", value, ((str(k), v) for k, v in data.items()), path, depth)
    return True


def _by_dataclass(h: _Hasher, value: Any, path: str, depth: int) -> bool:
    if isinstance(value, type) or not dataclasses.is_dataclass(value):
        return False
    # Field by field rather than asdict(): asdict deep-copies, recursing without a depth limit.
    items = ((f.name, getattr(value, f.name)) for f in dataclasses.fields(value))
    _fields(h, b"dataclass", value, items, path, depth)
    return True


def _by_namedtuple(h: _Hasher, value: Any, path: str, depth: int) -> bool:
    names = getattr(type(value), "_fields", None)
    if not isinstance(value, tuple) or not isinstance(names, tuple):
        return False
    _fields(h, b"namedtuple", value, zip(names, value), path, depth)
    return True


def _by_path(h: _Hasher, value: Any, path: str, depth: int) -> bool:
    if not isinstance(value, pathlib.PurePath):
        return False
    flavour = b"windows:" if isinstance(value, pathlib.PureWindowsPath) else b"posix:"
    h.frame(b"path", flavour + _text(str(value)))  # the path's text, never the file's contents
    return True


def _by_type(h: _Hasher, value: Any, path: str, depth: int) -> bool:
    if not isinstance(value, type):
        return False
    h.frame(b"type", _text(f"{value.__module__}.{value.__qualname__}"))
    return True


def _by_callable(h: _Hasher, value: Any, path: str, depth: int) -> bool:
    if isinstance(value, types.FunctionType):
        h.frame(b"function", _text(_callable_name(value)))
        h.frame(b"source", task_source_hash(value).encode())
        h.encode(value.__defaults__, f"{path}.__defaults__", depth + 1)
        h.encode(value.__kwdefaults__, f"{path}.__kwdefaults__", depth + 1)
        cells = value.__closure__ or ()
        h.count(b"closure", len(cells))
        for index, cell in enumerate(cells):
            try:
                contents = cell.cell_contents
            except ValueError:  # a cell not yet assigned
                h.frame(b"empty-cell")
                continue
            h.encode(contents, f"{path}.__closure__[{index}]", depth + 1)
    elif isinstance(value, types.BuiltinFunctionType):
        h.frame(b"builtin", _text(_callable_name(value)))
        owner = value.__self__
        if owner is not None and not isinstance(owner, types.ModuleType):
            h.encode(owner, f"{path}.__self__", depth + 1)
    elif isinstance(value, types.MethodType):
        h.frame(b"method")
        h.encode(value.__func__, f"{path}.__func__", depth + 1)
        h.encode(value.__self__, f"{path}.__self__", depth + 1)
    elif isinstance(value, functools.partial):
        h.frame(b"partial")
        h.encode(value.func, f"{path}.func", depth + 1)
        h.encode(value.args, f"{path}.args", depth + 1)
        h.encode(value.keywords, f"{path}.keywords", depth + 1)
    else:
        return False
    return True


def _by_builtin_subclass(h: _Hasher, value: Any, path: str, depth: int) -> bool:
    """A subclass of a builtin hashes as its base value tagged with the subclass's name."""
    for base in type(value).__mro__[1:]:
        encoder = _ATOMS.get(base) or _CONTAINERS.get(base)
        if encoder is not None:
            h.frame(b"subclass", _type_name(value).encode())
            encoder(h, value, path, depth)
            return True
    return False


_STRATEGIES: tuple[Callable[[_Hasher, Any, str, int], bool], ...] = (
    _by_flowkit_hash, _by_numpy, _by_enum, _by_pydantic, _by_dataclass, _by_namedtuple,
    _by_path, _by_type, _by_callable, _by_builtin_subclass)


def stable_hash(value: Any, *, path: str = "value") -> str:
    """Hex SHA-256 of ``value``'s canonical encoding: equal in every process and on every machine.

    Supported: None, bool, int, float, complex, str, bytes, bytearray, memoryview, list, tuple,
    set, frozenset, dict (insertion order ignored), OrderedDict (order kept), dataclasses,
    NamedTuples, pydantic models, enums, datetime/date/time/timedelta, Decimal, UUID, paths,
    range, slice, classes, functions (name, source, defaults and closure values), numpy arrays
    and scalars, subclasses of those builtins, and any object whose type defines
    ``__flowkit_hash__(self) -> str | bytes``.

    Args:
        value: what to hash.
        path: how error messages name ``value``, e.g. ``inputs['config']``.

    Raises:
        CacheKeyError: some part of ``value`` has no deterministic encoding (a lock, a socket,
            an object known only by its address), nests deeper than :data:`MAX_DEPTH`, or
            contains itself. The message names its path and type and what to do.
    """
    hasher = _Hasher(prefix=ENCODING_VERSION)
    hasher.encode(value, path, 0)
    return hasher.hexdigest()


def _hash_argument(name: str, value: Any) -> str:
    hasher = _Hasher(argument=name, prefix=ENCODING_VERSION)
    hasher.encode(value, f"inputs[{name!r}]", 0)
    return hasher.hexdigest()


# -- task source -------------------------------------------------------------------------------
#: Source hashes by function: a map of 10,000 calls must not read and tokenize the source 10,000
#: times. Weak, so that functions defined on the fly (notebooks) are not kept alive.
_SOURCE_HASHES: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()


def _unwrap(fn: Any) -> Any:
    """The function whose body runs: through functools.wraps, methods, partials, __call__."""
    target = inspect.unwrap(fn)
    while isinstance(target, (functools.partial, types.MethodType, staticmethod, classmethod)):
        inner = target.func if isinstance(target, functools.partial) else target.__func__
        target = inspect.unwrap(inner)
    if not isinstance(target, (types.FunctionType, types.BuiltinFunctionType, type)):
        call = getattr(type(target), "__call__", None)
        if isinstance(call, types.FunctionType):
            target = call
    return target


def _encode_code(h: _Hasher, code: types.CodeType) -> None:
    h.frame(b"co_code", code.co_code)
    h.frame(b"co_names", _text("\0".join(code.co_names)))
    h.count(b"co_consts", len(code.co_consts))
    for const in code.co_consts:
        if isinstance(const, types.CodeType):  # nested functions, lambdas, comprehensions
            _encode_code(h, const)
        else:
            h.encode(const, f"{code.co_name}.co_consts", 0)


def _source_digest(fn: Any, target: Any) -> str:
    try:
        source: str | None = inspect.getsource(target)
    except (OSError, TypeError):  # no file (REPL, exec), or a builtin
        source = None
    if source is not None:
        data = _text(textwrap.dedent(source))
        return hashlib.sha256(ENCODING_VERSION + b"\0source\0" + data).hexdigest()
    code = getattr(target, "__code__", None)
    if not isinstance(code, types.CodeType):
        raise CacheKeyError(f"cannot hash the source of {_callable_name(fn)}: it has neither "
                            f"source text nor a code object; leave TASK_SOURCE out of its "
                            f"cache_policy or pass cache_key_fn")
    hasher = _Hasher(prefix=ENCODING_VERSION + b"\0code\0")
    _encode_code(hasher, code)
    return hasher.hexdigest()


def task_source_hash(fn: Callable[..., Any]) -> str:
    """Hex SHA-256 of a function's source text, so that editing the body invalidates its cache.

    The source comes from :func:`inspect.getsource` (dedented, decorator lines included) after
    unwrapping ``functools.wraps`` chains, bound methods and partials. Without a source file
    (a REPL, ``exec``) the code object is hashed instead: ``co_code``, ``co_names`` and
    ``co_consts``, nested code objects included. Globals the body reads are not part of it.

    Raises:
        CacheKeyError: ``fn`` has neither source text nor a code object.
    """
    target = _unwrap(fn)
    try:
        return _SOURCE_HASHES[target]
    except (KeyError, TypeError):  # TypeError: unhashable or not weak-referenceable
        pass
    digest = _source_digest(fn, target)
    try:
        _SOURCE_HASHES[target] = digest
    except TypeError:
        pass
    return digest


# -- keys and the context a policy sees ----------------------------------------------------------
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
