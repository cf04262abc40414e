"""Deterministic hashing for cache keys: equal inputs give equal hex digests in every
process on every machine (no ``hash()``, ``id()``, pickle bytes or address-bearing ``repr``).

A value with no deterministic encoding raises :class:`~flowkit.errors.CacheKeyError` naming
where it sits and what to do. Where equal-comparing values of different types could behave
differently (``1``, ``1.0``, ``True``; a list and a tuple) they hash differently: a needless
miss costs one run, a wrong hit returns a wrong result.
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
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any, cast

from flowkit.errors import CacheKeyError

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
            h.frame(b"data", memoryview(cast(Any, flat)))  # numpy arrays are buffers
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
        # The method itself, to hash its code (callable() would only say that it exists).
        call = getattr(type(target), "__call__", None)  # noqa: B004
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
