"""Cache keys: deterministic across processes and hash seeds, policies with Prefect's algebra."""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import decimal
import enum
import functools
import importlib
import json
import math
import os
import pathlib
import pickle
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable
from typing import Any, NamedTuple

import pydantic
import pytest

from flowkit.caching import (
    DEFAULT,
    FLOW_PARAMETERS,
    INPUTS,
    MAX_DEPTH,
    NO_CACHE,
    RUN_ID,
    TASK_SOURCE,
    CacheContext,
    CacheKey,
    CacheKeyFnPolicy,
    CachePolicy,
    CompoundPolicy,
    Inputs,
    resolve_policy,
    stable_hash,
    task_input_hash,
    task_source_hash,
)
from flowkit.errors import CacheKeyError, ConfigurationError

SAMPLES_MODULE = '''
from __future__ import annotations

import dataclasses, datetime as dt, decimal, enum, pathlib, uuid
from typing import NamedTuple

import pydantic

from flowkit.caching import stable_hash


class Point(pydantic.BaseModel):
    x: int
    tags: set[str]
    meta: dict[str, float]


@dataclasses.dataclass(frozen=True)
class Config:
    name: str
    sizes: tuple[int, ...]
    extra: dict[str, object]


class Color(enum.Enum):
    RED = "red"


class Pair(NamedTuple):
    left: int
    right: str


def samples() -> dict[str, object]:
    forward = {f"k{i}": i for i in range(50)}
    backward = {f"k{i}": i for i in reversed(range(50))}
    return {
        "strings": {"alpha", "beta", "gamma", "delta", "epsilon"},
        "dict_forward": forward,
        "dict_backward": backward,
        "frozenset_of_tuples": frozenset({(1, "a"), (2, "b"), (3, "c")}),
        "model": Point(x=1, tags={"p", "q", "r"}, meta={"b": 2.5, "a": -0.0}),
        "dataclass": Config("c", (1, 2, 3), {"z": None, "y": [1.5, {"x"}]}),
        "bytes": b"\\x00\\xffpayload",
        "floats": [0.1, -0.0, 1e308, float("inf"), float("nan"), 2 ** -1074],
        "nested": {"a": [{"b": ({1, 2}, frozenset({"x"}))}], ("t", 1): {None: True}},
        "misc": [Color.RED, Pair(1, "r"), dt.datetime(2024, 5, 1, 12, tzinfo=dt.timezone.utc),
                 dt.timedelta(days=1, microseconds=3), decimal.Decimal("1.10"),
                 uuid.UUID(int=7), pathlib.PurePosixPath("/data/x"), range(0, 10, 2),
                 10 ** 400, 3 - 4j, bytearray(b"ba")],
    }


def digests() -> dict[str, str]:
    return {name: stable_hash(value) for name, value in samples().items()}
'''


def run_python(code: str, *, seed: str, cwd: pathlib.Path) -> str:
    """Run ``code`` in a fresh interpreter with PYTHONHASHSEED=seed and return its stdout."""
    env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONDONTWRITEBYTECODE": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(cwd), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def import_from(directory: pathlib.Path, name: str) -> Any:
    sys.path.insert(0, str(directory))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(directory))


@pytest.fixture
def samples_module(tmp_path: pathlib.Path) -> Any:
    (tmp_path / "flowkit_cache_samples.py").write_text(SAMPLES_MODULE)
    module = import_from(tmp_path, "flowkit_cache_samples")
    yield module
    sys.modules.pop("flowkit_cache_samples", None)


def ctx(fn: Callable[..., Any] | None = None, **fields: Any) -> CacheContext:
    return CacheContext(task_name="t", fn=fn or sample_task, **fields)


def sample_task(x: int, y: int) -> int:
    return x + y


def other_task(x: int, y: int) -> int:
    return x * y


def prefect_style_key(context: Any, parameters: dict[str, Any]) -> str:
    return str(context.task.name) + str(sorted(parameters.items()))


# -- stable_hash --------------------------------------------------------------------------------
def test_digests_equal_across_processes_and_hash_seeds(tmp_path: pathlib.Path,
                                                       samples_module: Any) -> None:
    code = "import json, flowkit_cache_samples as s; print(json.dumps(s.digests()))"
    first = json.loads(run_python(code, seed="0", cwd=tmp_path))
    second = json.loads(run_python(code, seed="12345", cwd=tmp_path))
    here = samples_module.digests()
    assert first == second == here
    assert here["dict_forward"] == here["dict_backward"]
    assert len(set(here.values())) == len(here) - 1


@pytest.mark.parametrize(("value", "digest"), [
    (None, "6f866ae6cd5adcb643e7a9ea905f12aeaff52636b881ee4a1a2d69b3f603de4b"),
    (1, "6e6b6cdfcf834a3d5bcdb6dd81a7e6b5c3e341a890975ffc1007ecbe2c61a731"),
    ("a", "9976f94dedf444568fff32a9a4503355dde4170451c8495befbb36f5dc49e4ca"),
    ([1, "a", None, 1.5, b"x"], "eb14dee4e03ed6a81154052640bf27369f931f6592cc28f7429c7e4c490e16e0"),
    ({"b": 2, "a": (True, -0.0)},
     "5547f59fec6aad7d9108701a0fcf53936754a8afa4c49e8180e1c9b4ff0105e9"),
    ({1, 2, 3}, "a2dd46c4daf8c467b013a5337f8ed360c031f9b3e0d39bfe39647c30456838d9"),
])
def test_digests_are_pinned(value: Any, digest: str) -> None:
    # Keys outlive upgrades in Redis: changing the encoding must come with a new ENCODING_VERSION.
    assert stable_hash(value) == digest


def test_equal_looking_values_of_different_types_hash_apart() -> None:
    values = [1, 1.0, True, "1", b"1", bytearray(b"1"), [1], (1,), {1}, frozenset({1}),
              {1: None}, None, 0, 0.0, -0.0, False, "", b"", [], (), set(), {}, 1 + 0j,
              decimal.Decimal(1), [1, 2], (1, 2), [[1], [2]], [[1, 2]], ["ab"], ["a", "b"],
              ("a", "bc"), ("ab", "c"), {"a": "b"}, {"b": "a"}, collections.OrderedDict(a="b")]
    digests = [stable_hash(v) for v in values]
    assert len(set(digests)) == len(values)


def test_floats_nan_and_signed_zero() -> None:
    assert stable_hash(float("nan")) == stable_hash(-float("nan")) == stable_hash(math.nan)
    assert stable_hash(0.0) != stable_hash(-0.0)
    assert stable_hash(0.1 + 0.2) != stable_hash(0.3)
    assert stable_hash(float("inf")) != stable_hash(float("-inf"))


def test_unordered_containers_ignore_order_ordered_ones_do_not() -> None:
    assert stable_hash({"a": 1, "b": 2}) == stable_hash({"b": 2, "a": 1})
    assert stable_hash({3, 1, 2}) == stable_hash({2, 3, 1})
    assert stable_hash({"a": 1, "b": 2}) != stable_hash({"a": 2, "b": 1})
    assert stable_hash([1, 2]) != stable_hash([2, 1])
    ordered = collections.OrderedDict
    assert stable_hash(ordered(a=1, b=2)) != stable_hash(ordered(b=2, a=1))


class Shade(enum.Enum):
    DARK = 1


class IntShade(enum.IntEnum):
    DARK = 1


class Span(NamedTuple):
    start: int
    end: int


@dataclasses.dataclass
class Box:
    width: int
    items: list[Any]


@dataclasses.dataclass
class Crate:
    width: int
    items: list[Any]


class Model(pydantic.BaseModel):
    name: str
    weights: dict[str, float]


class Tagged:
    def __init__(self, tag: str) -> None:
        self.tag = tag

    def __flowkit_hash__(self) -> str:
        return self.tag


class BadTagged:
    def __flowkit_hash__(self) -> int:
        return 3


class UserId(str):
    pass


def test_supported_types_hash_by_value_and_type() -> None:
    utc = dt.timezone.utc
    assert stable_hash(Shade.DARK) != stable_hash(1) != stable_hash(IntShade.DARK)
    assert stable_hash(Span(1, 2)) != stable_hash((1, 2))
    assert stable_hash(Box(1, [2])) == stable_hash(Box(1, [2])) != stable_hash(Crate(1, [2]))
    assert stable_hash(Box(1, [2])) != stable_hash(Box(1, [3]))
    assert (stable_hash(Model(name="m", weights={"a": 1, "b": 2}))
            == stable_hash(Model(name="m", weights={"b": 2, "a": 1})))
    assert stable_hash(Model(name="m", weights={})) != stable_hash(Model(name="n", weights={}))
    assert stable_hash(dt.datetime(2024, 1, 1)) != stable_hash(dt.datetime(2024, 1, 1, tzinfo=utc))
    assert stable_hash(dt.date(2024, 1, 1)) != stable_hash(dt.datetime(2024, 1, 1))
    assert stable_hash(dt.timedelta(seconds=1)) == stable_hash(dt.timedelta(microseconds=10**6))
    assert stable_hash(decimal.Decimal("1.5")) != stable_hash(decimal.Decimal("-1.5"))
    assert stable_hash(uuid.UUID(int=1)) != stable_hash(uuid.UUID(int=2))
    assert stable_hash(pathlib.Path("a/b")) == stable_hash(pathlib.PurePosixPath("a/b"))
    assert stable_hash(pathlib.PurePosixPath("a")) != stable_hash(pathlib.PureWindowsPath("a"))
    assert stable_hash(range(3)) != stable_hash([0, 1, 2])
    assert stable_hash(memoryview(b"ab")) != stable_hash(b"ab")
    assert stable_hash(UserId("u")) != stable_hash("u")
    assert stable_hash(collections.defaultdict(int, a=1)) != stable_hash({"a": 1})
    assert stable_hash(int) != stable_hash(float)
    assert stable_hash(Tagged("a")) == stable_hash(Tagged("a")) != stable_hash(Tagged("b"))


def test_functions_as_values_hash_by_name_source_and_closure() -> None:
    def make_adder(k: int) -> Callable[[int], int]:
        return lambda x: x + k

    assert stable_hash(sample_task) == stable_hash(sample_task) != stable_hash(other_task)
    assert stable_hash(make_adder(1)) == stable_hash(make_adder(1))
    assert stable_hash(make_adder(1)) != stable_hash(make_adder(2))
    assert stable_hash(functools.partial(sample_task, 1)) != stable_hash(sample_task)
    assert stable_hash(len) != stable_hash(max)


def test_unhashable_nested_value_error_names_path_and_type() -> None:
    with pytest.raises(CacheKeyError) as info:
        stable_hash([1, {"lock": threading.Lock()}])
    message = str(info.value)
    assert "value[1]['lock']" in message and "_thread.lock" in message
    assert "__flowkit_hash__" in message and "cache_key_fn" in message

    with pytest.raises(CacheKeyError) as info:
        INPUTS.compute_key(ctx(), {"config": Box(1, [0, 1, threading.Lock()]), "y": 2})
    message = str(info.value)
    assert "inputs['config'].items[2]" in message
    assert "cache_policy=INPUTS - 'config'" in message


@pytest.mark.parametrize("make", [object, threading.Lock, threading.Event, socket.socket,
                                  lambda: open(os.devnull), lambda: iter([1])],
                         ids=["object", "lock", "event", "socket", "file", "iterator"])
def test_objects_known_by_address_or_live_state_raise(make: Callable[[], Any]) -> None:
    value = make()
    try:
        with pytest.raises(CacheKeyError, match=r"cannot hash value\['x'\]"):
            stable_hash({"x": value})
    finally:
        if hasattr(value, "close"):
            value.close()


def test_escape_hatch_must_return_str_or_bytes() -> None:
    with pytest.raises(CacheKeyError, match="__flowkit_hash__ returned int"):
        stable_hash(BadTagged())


def test_cycles_and_deep_nesting_raise_cache_key_error() -> None:
    loop: list[Any] = [1]
    loop.append(loop)
    with pytest.raises(CacheKeyError, match="contains itself"):
        stable_hash(loop)
    deep: list[Any] = []
    for _ in range(MAX_DEPTH + 5):
        deep = [deep]
    with pytest.raises(CacheKeyError, match="nested more than"):
        stable_hash(deep)
    shared = [1, 2]
    assert stable_hash([shared, shared]) == stable_hash([[1, 2], [1, 2]])  # shared is no cycle


def test_numpy_arrays_hash_by_dtype_shape_and_data() -> None:
    np = pytest.importorskip("numpy")
    array = np.arange(12, dtype=np.float64).reshape(3, 4)
    assert stable_hash(array) == stable_hash(np.asfortranarray(array))
    assert stable_hash(array) != stable_hash(array.astype(np.float32))
    assert stable_hash(array) != stable_hash(array.reshape(4, 3))
    assert stable_hash(np.float64(1.0)) != stable_hash(1.0)
    assert stable_hash(np.array(["a", None], dtype=object)) == stable_hash(
        np.array(["a", None], dtype=object))


# -- task source --------------------------------------------------------------------------------
def test_task_source_differs_by_body_and_unwraps_wrappers() -> None:
    assert task_source_hash(sample_task) != task_source_hash(other_task)

    @functools.wraps(sample_task)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return sample_task(*args, **kwargs)

    assert task_source_hash(wrapper) == task_source_hash(sample_task)


def test_task_source_equal_across_processes_and_changes_with_body(tmp_path: pathlib.Path) -> None:
    source = "def step(x):\n    return x + {}\n"
    code = ("import flowkit_cache_task as m; from flowkit.caching import task_source_hash; "
            "print(task_source_hash(m.step))")
    (tmp_path / "flowkit_cache_task.py").write_text(source.format(1))
    first = run_python(code, seed="0", cwd=tmp_path)
    assert run_python(code, seed="12345", cwd=tmp_path) == first
    (tmp_path / "flowkit_cache_task.py").write_text(source.format(2))
    assert run_python(code, seed="0", cwd=tmp_path) != first


def test_task_source_without_source_file_hashes_code_object(tmp_path: pathlib.Path) -> None:
    template = ("from flowkit.caching import task_source_hash\n"
                "ns = {{}}\n"
                "exec('def f(x):\\n    return [i * {} for i in range(x)]', ns)\n"
                "print(task_source_hash(ns['f']))\n")
    first = run_python(template.format(2), seed="0", cwd=tmp_path)
    assert run_python(template.format(2), seed="12345", cwd=tmp_path) == first
    assert run_python(template.format(3), seed="0", cwd=tmp_path) != first


# -- policies -------------------------------------------------------------------------------------
def test_inputs_minus_name_ignores_that_parameter() -> None:
    policy = INPUTS - "x"
    a = policy.compute_key(ctx(), {"x": 1, "y": 2})
    b = policy.compute_key(ctx(), {"x": threading.Lock(), "y": 2})
    c = policy.compute_key(ctx(), {"x": 1, "y": 3})
    assert a is not None and b is not None and c is not None
    assert a.key == b.key != c.key
    assert list(a.parts) == ["inputs.y"]
    assert a.parts["inputs.y"] == stable_hash(2)
    both = INPUTS - ["x", "y"]
    assert both == INPUTS - "y" - "x" and repr(both) == "INPUTS - 'x' - 'y'"


def test_compound_key_lists_parts_and_ignores_member_order() -> None:
    context = ctx(flow_run_id="run-1")
    key = DEFAULT.compute_key(context, {"x": 1, "y": 2})
    assert key is not None
    labels = [label for label, _ in key.explain()]
    assert labels == ["inputs.x", "inputs.y", "task_source", "flow_run_id"]
    assert dict(key.explain())["task_source"] == task_source_hash(sample_task)
    swapped = (RUN_ID + TASK_SOURCE + INPUTS).compute_key(context, {"y": 2, "x": 1})
    assert swapped is not None and swapped.key == key.key
    assert CacheKey.from_parts(key.parts).key == key.key


def test_compound_subtraction_applies_to_inputs_members() -> None:
    policy = DEFAULT - "x"
    assert isinstance(policy, CompoundPolicy)
    assert repr(policy) == "INPUTS - 'x' + TASK_SOURCE + RUN_ID"
    a = policy.compute_key(ctx(flow_run_id="r"), {"x": 1, "y": 2})
    b = policy.compute_key(ctx(flow_run_id="r"), {"x": 9, "y": 2})
    assert a is not None and b is not None and a.key == b.key
    assert TASK_SOURCE - "x" == TASK_SOURCE


def test_task_source_and_run_id_parts() -> None:
    params = {"x": 1, "y": 2}
    same = TASK_SOURCE.compute_key(ctx(sample_task), params)
    other = TASK_SOURCE.compute_key(ctx(other_task), params)
    assert same is not None and other is not None and same.key != other.key
    run1 = RUN_ID.compute_key(ctx(flow_run_id="r1"), params)
    run1_again = RUN_ID.compute_key(ctx(flow_run_id="r1", task_run_id="t9"), params)
    run2 = RUN_ID.compute_key(ctx(flow_run_id="r2"), params)
    assert run1 is not None and run1_again is not None and run2 is not None
    assert run1.key == run1_again.key != run2.key
    assert RUN_ID.compute_key(ctx(), params) is None  # no run to scope the key to
    flow_a = FLOW_PARAMETERS.compute_key(ctx(flow_parameters={"n": 1}), params)
    flow_b = FLOW_PARAMETERS.compute_key(ctx(flow_parameters={"n": 2}), params)
    assert flow_a is not None and flow_b is not None and flow_a.key != flow_b.key


def test_no_cache_wins_over_everything() -> None:
    assert NO_CACHE.compute_key(ctx(), {"x": 1}) is None
    assert NO_CACHE + INPUTS == NO_CACHE and INPUTS + NO_CACHE == NO_CACHE
    assert (NO_CACHE + DEFAULT).compute_key(ctx(flow_run_id="r"), {}) is None
    assert (INPUTS + RUN_ID).compute_key(ctx(), {"x": 1}) is None  # one member said None


def test_cache_key_fn_policy() -> None:
    policy = CacheKeyFnPolicy(prefect_style_key)
    key = policy.compute_key(ctx(), {"x": 1})
    assert key is not None and key.parts == {"cache_key_fn": "t[('x', 1)]"}
    assert CacheKeyFnPolicy(lambda c, p: None).compute_key(ctx(), {}) is None

    def returns_int(context: CacheContext, parameters: dict[str, Any]) -> Any:
        return 5

    with pytest.raises(CacheKeyError, match="returns_int returned int"):
        CacheKeyFnPolicy(returns_int).compute_key(ctx(), {})
    assert ctx(task_run_id="tr", flow_run_id="fr").task_run.flow_run_id == "fr"


def test_task_input_hash_as_cache_key_fn() -> None:
    policy = CacheKeyFnPolicy(task_input_hash)
    a = policy.compute_key(ctx(sample_task), {"x": 1})
    assert a is not None
    assert a == policy.compute_key(ctx(sample_task), {"x": 1})
    assert a != policy.compute_key(ctx(sample_task), {"x": 2})
    assert a != policy.compute_key(ctx(other_task), {"x": 1})


def test_resolve_policy_rules() -> None:
    assert resolve_policy(None, None) is None
    assert resolve_policy(DEFAULT, None) is DEFAULT
    assert resolve_policy(NO_CACHE, None) is NO_CACHE
    assert resolve_policy(None, prefect_style_key) == CacheKeyFnPolicy(prefect_style_key)
    with pytest.raises(ConfigurationError, match="not both"):
        resolve_policy(INPUTS, prefect_style_key)
    with pytest.raises(ConfigurationError, match="builtins.str"):
        resolve_policy("INPUTS", None)
    with pytest.raises(ConfigurationError, match="callable"):
        resolve_policy(None, "key")  # type: ignore[arg-type]


@pytest.mark.parametrize("policy", [INPUTS, TASK_SOURCE, RUN_ID, FLOW_PARAMETERS, NO_CACHE,
                                    DEFAULT, INPUTS - "conn" + TASK_SOURCE,
                                    CacheKeyFnPolicy(prefect_style_key),
                                    INPUTS + CacheKeyFnPolicy(prefect_style_key)])
def test_policies_pickle_round_trip(policy: CachePolicy) -> None:
    copy = pickle.loads(pickle.dumps(policy))
    assert copy == policy and repr(copy) == repr(policy)


def test_policy_reprs_and_immutability() -> None:
    assert repr(DEFAULT) == "INPUTS + TASK_SOURCE + RUN_ID"
    assert repr(INPUTS - "conn" + TASK_SOURCE) == "INPUTS - 'conn' + TASK_SOURCE"
    assert repr(NO_CACHE + INPUTS) == "NO_CACHE"
    assert repr(CacheKeyFnPolicy(prefect_style_key)) == (
        "CacheKeyFnPolicy(test_caching.prefect_style_key)")
    assert INPUTS + INPUTS == INPUTS and Inputs(exclude=("a",)) == INPUTS - "a"
    with pytest.raises(dataclasses.FrozenInstanceError):
        INPUTS.exclude = ("x",)  # type: ignore[misc]
    with pytest.raises(ConfigurationError):
        INPUTS - 3  # type: ignore[operator]
