"""Signed envelopes for task calls, and sealed results.

An envelope is a head, ``MAGIC | header length | header JSON | HMAC-SHA256``, and a body,
stored as two fields so a large body is never copied to be joined to its head. The header names the
flowkit, Python and cloudpickle versions, the task and its run, and the digest of the task
function, which is stored once in Redis (``flowkit:fn:<digest>``) instead of in every call. The
body is ``cloudpickle((args, kwargs))``. Workers check the signature and the versions before they
unpickle anything; results are sealed with the same key so drivers never unpickle unsigned bytes.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import os
import pickle
import platform
import re
import secrets
import socket
import struct
import types
from collections import ChainMap
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import cloudpickle

from flowkit._version import __version__
from flowkit.errors import ConfigurationError, EnvelopeError, SerializationError

MAGIC = b"FK1"
#: Sealed results start with this (the seal's version), then the sealing key's id.
SEAL_MAGIC = b"FKS1"
_KEY_ID_SIZE = 12
_MAC_SIZE = 32
_LEN = struct.Struct(">I")
PYTHON_VERSION = ".".join(platform.python_version_tuple()[:2])
CLOUDPICKLE_VERSION = cloudpickle.__version__
_STOCK_CODE_REDUCE = cloudpickle.Pickler.dispatch_table[types.CodeType]
_ANONYMOUS_FILENAME = "<dynamic-code>"


def _reduce_code_keeping_filename(code: types.CodeType) -> Any:
    """cloudpickle's code reducer, but with the real file name put back.

    cloudpickle 3.1.3 replaced ``co_filename`` of by-value code with ``<dynamic-code>`` to make
    payloads independent of where a function was defined. A remote traceback then no longer says
    which file failed, which matters more to our users than byte-identical payloads across
    checkouts; so the file name travels again (a no-op with cloudpickle versions that kept it).
    """
    constructor, args = _STOCK_CODE_REDUCE(code)
    return constructor, tuple(code.co_filename if arg == _ANONYMOUS_FILENAME else arg
                              for arg in args)


class _Pickler(cloudpickle.Pickler):  # type: ignore[misc]  # cloudpickle ships no types
    """cloudpickle's pickler with tracebacks that name the user's files (see above)."""

    dispatch_table = ChainMap({types.CodeType: _reduce_code_keeping_filename},
                              cloudpickle.Pickler.dispatch_table)


def _dumps(obj: Any) -> bytes:
    with io.BytesIO() as buffer:
        _Pickler(buffer, protocol=cloudpickle.DEFAULT_PROTOCOL).dump(obj)
        return buffer.getvalue()


@dataclass(frozen=True)
class SigningKey:
    """The HMAC key shared by drivers and workers, with a short id to tell keys apart."""

    secret: bytes

    @cached_property  # (once per key: a map signs a million envelopes)
    def key_id(self) -> str:
        return hashlib.sha256(b"flowkit-key-id" + self.secret).hexdigest()[:12]

    @cached_property
    def _pads(self) -> tuple[hashlib._Hash, hashlib._Hash]:
        """HMAC-SHA256's inner and outer hashes with the padded key already fed in (RFC
        2104): signing copies them instead of setting the key up again, twice as fast."""
        secret = self.secret if len(self.secret) <= 64 else hashlib.sha256(self.secret).digest()
        padded = secret.ljust(64, b"\0")
        return (hashlib.sha256(bytes(b ^ 0x36 for b in padded)),
                hashlib.sha256(bytes(b ^ 0x5C for b in padded)))

    def sign(self, *parts: bytes) -> bytes:
        inner_pad, outer_pad = self._pads
        inner = inner_pad.copy()
        for part in parts:
            inner.update(part)
        outer = outer_pad.copy()
        outer.update(inner.digest())
        return outer.digest()


def load_signing_key(secret: str | None, home: Path) -> SigningKey:
    """The key from ``FLOWKIT_SECRET_KEY``, else the one in ``home`` (created on first use)."""
    if secret:
        return SigningKey(secret.encode())
    path = home / "secret_key"
    try:
        return SigningKey(path.read_bytes().strip())
    except FileNotFoundError:
        pass
    home.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_bytes(secrets.token_hex(32).encode())
    os.chmod(tmp, 0o600)
    try:
        os.link(tmp, path)  # atomic: the first process to create the key wins
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    return SigningKey(path.read_bytes().strip())


def dumps_function(fn: Callable[..., Any]) -> tuple[str, bytes]:
    """Pickle a task function by value where needed; return (digest, bytes)."""
    try:
        blob = _dumps(fn)
    except Exception as exc:
        raise SerializationError(
            f"task function {getattr(fn, '__qualname__', fn)!r} cannot be pickled: {exc}. "
            "Define it at module level and avoid capturing open files, locks or connections."
        ) from exc
    return hashlib.sha256(blob).hexdigest(), blob


#: Values the standard pickler writes exactly as cloudpickle does (no code, no classes).
_PLAIN = frozenset({int, float, str, bytes, bool, type(None)})


def plain_options(options: dict[str, Any]) -> bool:
    """Whether execution options hold only plain values (no callables, no classes)."""
    return all(type(v) in _PLAIN or type(v) is list and all(type(x) in _PLAIN for x in v)
               for v in options.values())


def dumps_call(task_name: str, args: tuple[Any, ...], kwargs: dict[str, Any],
               names: list[str], options: dict[str, Any],
               options_plain: bool | None = None) -> bytes:
    """Pickle a call (arguments and execution options); on failure name what cannot travel.
    Plain calls skip cloudpickle's per-call Pickler setup (a map's calls are mostly plain);
    ``options_plain``: :func:`plain_options`, when the caller knows it already."""
    if options_plain is None:
        options_plain = plain_options(options)
    if (options_plain and all(type(a) in _PLAIN for a in args)
            and all(type(v) in _PLAIN for v in kwargs.values())):
        return pickle.dumps((args, kwargs, options), protocol=cloudpickle.DEFAULT_PROTOCOL)
    try:
        return _dumps((args, kwargs, options))
    except Exception as exc:
        culprit = _find_unpicklable(args, kwargs, names)
        raise SerializationError(
            f"task {task_name!r}: {culprit} cannot be pickled ({type(exc).__name__}: "
            f"{exc}). Pass plain data the worker can rebuild it from (a path, a URL, a config) "
            "instead; nothing was queued.") from exc


def _find_unpicklable(args: tuple[Any, ...], kwargs: dict[str, Any], names: list[str]) -> str:
    labelled = [(names[i] if i < len(names) else f"#{i}", v) for i, v in enumerate(args)]
    labelled += list(kwargs.items())
    for label, value in labelled:
        try:
            _dumps(value)
        except Exception:
            return (f"argument {label!r} (type {type(value).__module__}."
                    f"{type(value).__qualname__})")
    return "an option (a retry_delay_seconds or retry condition callable?)"


def build_envelope(key: SigningKey, *, task_name: str, task_run_id: str, fn_digest: str,
                   body: bytes) -> bytes:
    """The signed head of an envelope for a pickled call (the HMAC covers header and body)."""
    header = json.dumps({
        "flowkit": __version__, "python": PYTHON_VERSION, "cloudpickle": CLOUDPICKLE_VERSION,
        "task": task_name, "task_run_id": task_run_id, "fn": fn_digest, "size": len(body),
        "key_id": key.key_id,
    }, separators=(",", ":")).encode()
    return b"".join((MAGIC, _LEN.pack(len(header)), header, key.sign(header, body)))


class EnvelopeHeads:
    """Builds the signed heads of many envelopes of one task and function, byte for byte
    what :func:`build_envelope` writes, with the JSON encoded once (not once per call)."""

    def __init__(self, key: SigningKey, task_name: str, fn_digest: str) -> None:
        marker = "\x00id\x00"
        text = json.dumps({
            "flowkit": __version__, "python": PYTHON_VERSION, "cloudpickle": CLOUDPICKLE_VERSION,
            "task": task_name, "task_run_id": marker, "fn": fn_digest, "size": 0,
            "key_id": key.key_id}, separators=(",", ":"))
        head, tail = text.split(json.dumps(marker))
        middle, end = tail.split('"size":0')
        self.key, self.parts = key, (head.encode(), (middle + '"size":').encode(), end.encode())

    def build(self, task_run_id: str, body: bytes) -> bytes:
        head, middle, end = self.parts
        plain = task_run_id.isascii() and task_run_id.isalnum()  # (flowkit's own ids are hex)
        quoted = b'"' + task_run_id.encode() + b'"' if plain else json.dumps(task_run_id).encode()
        header = b"".join((head, quoted, middle, str(len(body)).encode(), end))
        return b"".join((MAGIC, _LEN.pack(len(header)), header, self.key.sign(header, body)))


@dataclass(frozen=True)
class OpenedEnvelope:
    """A verified envelope: its header and the still-pickled call body."""

    header: dict[str, Any]
    body: bytes


def open_envelope(key: SigningKey, head: bytes, body: bytes) -> OpenedEnvelope:
    """Verify signature and versions; raise :class:`EnvelopeError` naming what differs."""
    start = len(MAGIC) + _LEN.size
    if not head.startswith(MAGIC) or len(head) < start:
        raise EnvelopeError("task payload is not a flowkit envelope (bad magic bytes)")
    (size,) = _LEN.unpack_from(head, len(MAGIC))
    header_bytes = head[start:start + size]
    mac = head[start + size:start + size + _MAC_SIZE]
    try:
        header = json.loads(header_bytes)
    except ValueError:
        raise EnvelopeError("task envelope header is not valid JSON") from None
    if not hmac.compare_digest(mac, key.sign(header_bytes, body)):
        raise EnvelopeError(_bad_signature("task envelope", "signed", header.get("key_id"), key,
                                           f"worker host {socket.gethostname()!r}"))
    mismatches = [f"{what} {header.get(field)} on the driver but {mine} on this worker"
                  for what, field, mine in (("Python", "python", PYTHON_VERSION),
                                            ("cloudpickle", "cloudpickle", CLOUDPICKLE_VERSION))
                  if header.get(field) != mine]
    if mismatches:
        raise EnvelopeError("cannot run task: " + "; ".join(mismatches)
                            + ". Install the same versions on drivers and workers.")
    return OpenedEnvelope(header, body)


def _bad_signature(what: str, verb: str, signed_with: object, key: SigningKey,
                   holder: str) -> str:
    """Why ``what`` does not verify, naming the key ids on both sides, and what to do."""
    if signed_with == key.key_id:
        return (f"{what} signature does not verify: it names key {key.key_id}, which {holder} "
                f"has too, so it was changed after it was {verb} (or cut short); nothing of it "
                "was used. Submit it again; if it recurs, something rewrites flowkit's keys in "
                "Redis")
    why = (f"it was {verb} with key {signed_with} and {holder} has key {key.key_id}"
           if signed_with else f"it names no key, and {holder} has key {key.key_id}")
    return (f"{what} signature does not verify: {why}; nothing of it was used. Give drivers "
            "and workers the same FLOWKIT_SECRET_KEY (a worker started with another key "
            "refuses the queues whose drivers' probe it cannot open).")


def seal(key: SigningKey, payload: bytes) -> bytes:
    """Seal a pickled result (or exception) so readers can trust it before unpickling:
    ``SEAL_MAGIC | key id | HMAC(magic, key id, payload) | payload``. The version and the key
    id are covered by the HMAC; the key id tells a reader which key sealed it."""
    head = SEAL_MAGIC + key.key_id.encode()
    return head + key.sign(head, payload) + payload


def unseal(key: SigningKey, data: bytes) -> bytes:
    """Check and strip a result's seal.

    Raises:
        EnvelopeError: the seal does not verify with ``key``, naming both key ids when they
            differ.
    """
    if not data.startswith(SEAL_MAGIC):  # sealed by flowkit 0.1 (mac | payload)
        mac, payload = data[:_MAC_SIZE], data[_MAC_SIZE:]
        if hmac.compare_digest(mac, key.sign(payload)):
            return payload
        raise EnvelopeError(f"result signature does not verify: the worker that wrote it has a "
                            f"different FLOWKIT_SECRET_KEY than this process (key "
                            f"{key.key_id}); give drivers and workers the same key")
    start = len(SEAL_MAGIC) + _KEY_ID_SIZE
    head, mac = data[:start], data[start:start + _MAC_SIZE]
    payload = data[start + _MAC_SIZE:]
    if not hmac.compare_digest(mac, key.sign(head, payload)):
        raise EnvelopeError(_bad_signature("result", "sealed", sealed_by(data), key,
                                           "this process"))
    return payload


def sealed_by(data: bytes) -> str | None:
    """The id of the key that sealed ``data`` (None: not a flowkit seal). Unverified: for
    naming the key in a message, never for trusting the payload."""
    if not data.startswith(SEAL_MAGIC) or len(data) < len(SEAL_MAGIC) + _KEY_ID_SIZE:
        return None
    return data[len(SEAL_MAGIC):len(SEAL_MAGIC) + _KEY_ID_SIZE].decode("ascii", "replace")


#: A pickle of protocol 4 or 5 in one frame: PROTO n, then FRAME and its 8-byte length.
_FRAMED = re.compile(rb"\x80[\x04\x05]\x95", re.DOTALL)
_FRAME_HEADER = 9


def dumps_result(value: Any) -> bytes:
    """Pickle a return value; the error names its type. A small pickle leaves out its one
    frame header (9 bytes; framing is optional for readers, and helps only with streams):
    most results are small, and a task run's record keeps a sealed result of up to 64 bytes
    inside it (an int's fits then; with the header, one of 65,536 or more took a key of its
    own, twice the memory)."""
    try:
        data = _dumps(value)
    except Exception as exc:
        raise SerializationError(
            f"return value of type {type(value).__module__}.{type(value).__qualname__} cannot be "
            f"pickled ({type(exc).__name__}: {exc}); return plain data instead") from exc
    if len(data) < 256 and _FRAMED.match(data) and \
            int.from_bytes(data[3:11], "little") == len(data) - 2 - _FRAME_HEADER:
        return data[:2] + data[2 + _FRAME_HEADER:]
    return data


def loads(data: bytes) -> Any:
    """Unpickle verified bytes."""
    return cloudpickle.loads(data)


def json_preview(value: Any, limit: int = 2000) -> str:
    """A JSON preview of parameters for humans and the dashboard (truncated, secrets masked)."""
    def mask(obj: Any, depth: int = 0) -> Any:
        if depth > 4:
            return "…"
        if isinstance(obj, dict):
            return {str(k): ("***" if _is_secret_name(str(k)) else mask(v, depth + 1))
                    for k, v in list(obj.items())[:50]}
        if isinstance(obj, (list, tuple, set, frozenset)):
            return [mask(v, depth + 1) for v in list(obj)[:50]]
        if isinstance(obj, (str, int, float, bool)) or obj is None:
            return obj if not isinstance(obj, str) or len(obj) < 200 else obj[:200] + "…"
        if type(obj).__name__ == "SecretStr":
            return "***"
        if isinstance(obj, (bytes, bytearray)):
            return f"<{len(obj)} bytes>"
        return repr(obj)[:200]
    text = json.dumps(mask(value), default=str)
    return text if len(text) <= limit else text[:limit] + "…"


def is_secret_name(name: str) -> bool:
    """Whether a parameter of this name is masked in previews."""
    return _is_secret_name(name)


def _is_secret_name(name: str) -> bool:
    lowered = name.lower()
    return any(word in lowered for word in ("password", "secret", "token", "api_key", "apikey"))


def check_env_key(secret: str | None) -> None:
    """Reject an obviously weak explicit key."""
    if secret is not None and len(secret) < 16:
        raise ConfigurationError("FLOWKIT_SECRET_KEY must be at least 16 characters long")
