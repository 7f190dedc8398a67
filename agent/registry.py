"""Task registration: a decorator records handlers and how to decode their payloads."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec

from sasfleet.agent.context import StepContext
from sasfleet.shared.errors import ConfigError
from sasfleet.shared.messages.submit import RetrySpec

_ANY = msgspec.json.Decoder()


@dataclass(frozen=True, slots=True)
class TaskDef:
    """A registered handler."""

    name: str
    fn: Callable[..., Any]
    is_async: bool
    payload_param: str | None
    context_param: str | None
    decoder: msgspec.json.Decoder[Any]
    max_attempts: int | None = None
    retry: RetrySpec | None = None

    def arguments(self, payload: Any, context: StepContext) -> dict[str, Any]:
        """Keyword arguments for one call of the handler."""
        kwargs: dict[str, Any] = {}
        if self.payload_param:
            kwargs[self.payload_param] = payload
        if self.context_param:
            kwargs[self.context_param] = context
        return kwargs


class Registry:
    """The tasks of one module. ``@registry.task()`` registers a function under its name.

    The payload is the handler's first parameter; its annotation (a msgspec Struct, a
    dataclass, ``dict``, ``int``...) is validated when the payload is decoded. A parameter
    annotated :class:`StepContext` receives the attempt's context.
    """

    def __init__(self) -> None:
        self.tasks: dict[str, TaskDef] = {}

    def task(
        self,
        name: str | None = None,
        *,
        max_attempts: int | None = None,
        retry: RetrySpec | None = None,
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Register a handler; ``max_attempts`` and ``retry`` are the task's defaults (a
        step's own choices win over them, and they win over the fleet's)."""

        def register(fn: Callable[..., Any]) -> Callable[..., Any]:
            task_name = name or fn.__name__
            if task_name in self.tasks:
                raise ConfigError(f"task {task_name!r} is registered twice")
            self.tasks[task_name] = dataclasses.replace(
                _task_def(task_name, fn), max_attempts=max_attempts, retry=retry
            )
            return fn

        return register


def _task_def(name: str, fn: Callable[..., Any]) -> TaskDef:
    hints = typing.get_type_hints(fn)
    params = list(inspect.signature(fn).parameters.values())
    context_params = [p.name for p in params if hints.get(p.name) is StepContext]
    payload_params = [p.name for p in params if hints.get(p.name) is not StepContext]
    if len(payload_params) > 1 or len(context_params) > 1:
        raise ConfigError(f"task {name!r}: a handler takes one payload parameter (and a context)")
    decoder = _ANY
    if payload_params:
        annotation = hints.get(payload_params[0], Any)
        if annotation is not Any:
            decoder = msgspec.json.Decoder(annotation)
    return TaskDef(
        name,
        fn,
        inspect.iscoroutinefunction(fn),
        payload_params[0] if payload_params else None,
        context_params[0] if context_params else None,
        decoder,
    )


def load_registry(module_name: str) -> Registry:
    """Import ``module`` (or ``module:attribute``) and merge every Registry it defines."""
    module_path, _, attribute = module_name.partition(":")
    try:
        module = importlib.import_module(module_path)
    except ImportError as exc:
        raise ConfigError(f"cannot import task module {module_path!r}: {exc}") from exc
    if attribute:
        found = [getattr(module, attribute, None)]
    else:
        found = [v for v in vars(module).values() if isinstance(v, Registry)]
    merged = Registry()
    for registry in found:
        if not isinstance(registry, Registry):
            raise ConfigError(f"{module_name!r} is not a sasfleet.Registry")
        for task in registry.tasks.values():
            if task.name in merged.tasks:
                raise ConfigError(f"task {task.name!r} is registered twice in {module_name!r}")
            merged.tasks[task.name] = task
    if not merged.tasks:
        raise ConfigError(f"{module_name!r} registers no tasks")
    return merged
