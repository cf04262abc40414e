"""``@flow`` and :class:`Flow`: the driver-side function that submits and waits on tasks."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, Generic, ParamSpec, TypeVar, overload

from flowkit.errors import ConfigurationError

P = ParamSpec("P")
R = TypeVar("R")


class Flow(Generic[P, R]):
    """A function whose call is a flow run: validated parameters, tracked state, task futures."""

    def __init__(self, fn: Callable[P, R], *, name: str | None = None,
                 log_prints: bool = False, validate_parameters: bool = True,
                 timeout_seconds: float | None = None, description: str | None = None,
                 tags: list[str] | None = None, retries: int = 0,
                 retry_delay_seconds: Any = 0.0) -> None:
        if timeout_seconds is not None and timeout_seconds <= 0:
            raise ConfigurationError("flow timeout_seconds must be positive")
        if retries < 0:
            raise ConfigurationError("flow retries must not be negative")
        self.retries = retries
        self.retry_delay_seconds = retry_delay_seconds
        self.fn = fn
        self.name = name or fn.__name__
        self.log_prints = log_prints
        self.validate_parameters = validate_parameters
        self.timeout_seconds = timeout_seconds
        self.description = description or inspect.getdoc(fn)
        self.tags = list(tags or [])
        self.__doc__ = fn.__doc__
        self.__wrapped__ = fn
        self._signature = inspect.signature(fn)
        self._model: Any = None

    def __repr__(self) -> str:
        return f"Flow({self.name!r})"

    def with_options(self, **changes: Any) -> Flow[P, R]:
        """A copy of this flow with some options changed."""
        current = dict(name=self.name, log_prints=self.log_prints,
                       validate_parameters=self.validate_parameters,
                       timeout_seconds=self.timeout_seconds, description=self.description,
                       tags=self.tags, retries=self.retries,
                       retry_delay_seconds=self.retry_delay_seconds)
        return Flow(self.fn, **{**current, **changes})

    # -- parameters -------------------------------------------------------------------------
    def validate(self, *args: Any, **kwargs: Any) -> inspect.BoundArguments:
        """Bind and validate arguments against the type hints.

        Raises:
            TypeError: unknown or duplicated argument names.
            pydantic.ValidationError: a value does not fit its type hint (after coercion).
        """
        bound = self._signature.bind_partial(*args, **kwargs)
        if not self.validate_parameters:
            bound.apply_defaults()
            return bound
        model = self._parameter_model()
        plain = {name: value for name, value in bound.arguments.items()
                 if self._signature.parameters[name].kind not in (
                     inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)}
        validated = model.model_validate(plain)
        for name in model.model_fields:
            if name in plain or self._signature.parameters[name].default is not inspect._empty:
                bound.arguments[name] = getattr(validated, name)
        return bound

    def _parameter_model(self) -> Any:
        if self._model is None:
            from pydantic import ConfigDict, create_model

            fields: dict[str, Any] = {}
            hints = _type_hints(self.fn)
            for name, param in self._signature.parameters.items():
                if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                    continue
                default = ... if param.default is inspect._empty else param.default
                fields[name] = (hints.get(name, Any), default)
            self._model = create_model(
                f"{self.name}_parameters",
                __config__=ConfigDict(arbitrary_types_allowed=True), **fields)
        return self._model

    # -- running ----------------------------------------------------------------------------
    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the flow: validate parameters, record the run, execute, return its value.

        Raises:
            pydantic.ValidationError: invalid parameters (nothing is recorded or queued).
            Exception: the flow's own exception, or that of a task whose failure it did not
                handle.
        """
        from flowkit.flow_engine import run_bound

        return run_bound(self, self.validate(*args, **kwargs))  # type: ignore[no-any-return]


def _type_hints(fn: Callable[..., Any]) -> dict[str, Any]:
    import typing

    try:
        return typing.get_type_hints(fn)
    except Exception:
        return {n: p.annotation for n, p in inspect.signature(fn).parameters.items()
                if p.annotation is not inspect._empty and not isinstance(p.annotation, str)}


@overload
def flow(__fn: Callable[P, R]) -> Flow[P, R]: ...


@overload
def flow(*, name: str | None = None, log_prints: bool = False,
         validate_parameters: bool = True, timeout_seconds: float | None = None,
         description: str | None = None, tags: list[str] | None = None, retries: int = 0,
         retry_delay_seconds: Any = 0.0) -> Callable[[Callable[P, R]], Flow[P, R]]: ...


def flow(__fn: Callable[P, R] | None = None, **options: Any
         ) -> Flow[P, R] | Callable[[Callable[P, R]], Flow[P, R]]:
    """Make a function a flow; works as ``@flow`` and ``@flow(name=..., log_prints=True)``.

    Args:
        name: the flow's name (default: the function's name).
        log_prints: send ``print`` output of the flow and its tasks to the run log.
        validate_parameters: validate and coerce arguments with pydantic from type hints.
        timeout_seconds: fail the flow run (TIMED_OUT) after this long.
    """
    allowed = {"name", "log_prints", "validate_parameters", "timeout_seconds", "description",
               "tags", "retries", "retry_delay_seconds"}
    unknown = set(options) - allowed
    if unknown:
        raise ConfigurationError(f"unknown flow option(s) {sorted(unknown)}; valid options are "
                                 f"{sorted(allowed)}")

    def decorate(fn: Callable[P, R]) -> Flow[P, R]:
        return Flow(fn, **options)

    return decorate(__fn) if __fn is not None else decorate
