"""Task registration: names, payload decoding, context detection, loading task modules."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from sasfleet.agent.context import StepContext
from sasfleet.agent.registry import Registry, TaskDef, load_registry
from sasfleet.shared.errors import ConfigError

EXAMPLE_TASKS = {"echo", "sleep", "fail", "reserve_stock", "charge_card", "ship"}


class Order(msgspec.Struct, frozen=True):
    order_id: str
    amount_cents: int = 0


async def _lease_ok() -> bool:
    return True


def context(**overrides: Any) -> StepContext:
    values: dict[str, Any] = dict(
        job_id="j1",
        step=0,
        task="t",
        attempt=1,
        fencing_token=4,
        idempotency_key="j1:0",
        agent_id="agent-1",
    )
    return StepContext(**{**values, **overrides}, _lease_check=_lease_ok)


def only(registry: Registry) -> TaskDef:
    (task,) = registry.tasks.values()
    return task


# --- registration ---------------------------------------------------------------------------


def test_task_name_defaults_to_the_function_name() -> None:
    reg = Registry()

    @reg.task()
    async def reserve(order: Order) -> None: ...

    assert list(reg.tasks) == ["reserve"]
    assert reg.tasks["reserve"].fn is reserve


def test_explicit_name_wins_and_the_decorator_returns_the_function() -> None:
    reg = Registry()

    def handler(payload: Any) -> Any:
        return payload

    assert reg.task("billing.charge")(handler) is handler
    assert list(reg.tasks) == ["billing.charge"]
    assert reg.tasks["billing.charge"].fn(5) == 5


def test_registering_a_name_twice_raises_config_error() -> None:
    reg = Registry()

    @reg.task()
    def ship(payload: Any) -> None: ...

    with pytest.raises(ConfigError, match="'ship' is registered twice"):
        reg.task("ship")(lambda payload: None)
    assert reg.tasks["ship"].fn is ship


def test_sync_and_async_handlers_are_told_apart() -> None:
    reg = Registry()

    @reg.task()
    async def a(payload: Any) -> None: ...

    @reg.task()
    def b(payload: Any) -> None: ...

    assert (reg.tasks["a"].is_async, reg.tasks["b"].is_async) == (True, False)


def test_two_payload_parameters_are_a_config_error() -> None:
    reg = Registry()
    with pytest.raises(ConfigError, match="one payload parameter"):

        @reg.task()
        def bad(a: int, b: int) -> None: ...


# --- payload decoding -----------------------------------------------------------------------


def test_struct_payload_is_decoded_and_validated() -> None:
    reg = Registry()

    @reg.task()
    async def charge(order: Order) -> None: ...

    decoder = only(reg).decoder
    assert decoder.decode(b'{"order_id": "o-1", "amount_cents": 250}') == Order("o-1", 250)
    with pytest.raises(msgspec.ValidationError, match="order_id"):
        decoder.decode(b'{"amount_cents": 250}')
    with pytest.raises(msgspec.ValidationError, match="Expected `int`"):
        decoder.decode(b'{"order_id": "o-1", "amount_cents": "many"}')


def test_builtin_annotation_is_validated_too() -> None:
    reg = Registry()

    @reg.task()
    def count(n: int) -> int:
        return n

    assert only(reg).decoder.decode(b"41") == 41
    with pytest.raises(msgspec.ValidationError):
        only(reg).decoder.decode(b'"41"')


@pytest.mark.parametrize("annotated", [True, False])
def test_any_or_missing_annotation_accepts_any_json(annotated: bool) -> None:
    reg = Registry()
    if annotated:

        def t(payload: Any) -> Any:
            return payload

        reg.task()(t)
    else:
        reg.task("t")(lambda payload: payload)
    assert only(reg).decoder.decode(b'{"x": [1, null]}') == {"x": [1, None]}


# --- context detection and call arguments ---------------------------------------------------


def test_context_parameter_is_found_by_annotation_not_position() -> None:
    reg = Registry()

    @reg.task()
    async def charge(ctx: StepContext, order: Order) -> None: ...

    task = only(reg)
    assert (task.payload_param, task.context_param) == ("order", "ctx")


def test_handler_with_only_a_context_takes_no_payload() -> None:
    reg = Registry()

    @reg.task()
    async def tick(context: StepContext) -> None: ...

    task = only(reg)
    assert (task.payload_param, task.context_param) == (None, "context")
    ctx = context()
    assert task.arguments({"ignored": 1}, ctx) == {"context": ctx}


def test_arguments_pass_payload_and_context_by_parameter_name() -> None:
    reg = Registry()

    @reg.task()
    async def charge(order: Order, ctx: StepContext) -> None: ...

    ctx, order = context(fencing_token=9), Order("o-9")
    assert only(reg).arguments(order, ctx) == {"order": order, "ctx": ctx}


def test_handler_without_parameters_gets_no_arguments() -> None:
    reg = Registry()

    @reg.task()
    def ping() -> str:
        return "pong"

    task = only(reg)
    assert (task.payload_param, task.context_param) == (None, None)
    assert task.arguments({"x": 1}, context()) == {}


async def test_context_reports_lease_from_its_check() -> None:
    assert await context().lease_is_current() is True


# --- loading task modules -------------------------------------------------------------------


@pytest.mark.parametrize("module", ["sasfleet.examples.tasks", "sasfleet.examples.tasks:tasks"])
def test_load_registry_finds_the_example_tasks(module: str) -> None:
    reg = load_registry(module)
    assert set(reg.tasks) >= EXAMPLE_TASKS
    assert reg.tasks["sleep"].decoder.decode(b'{"seconds": 0.5}').seconds == 0.5
    assert reg.tasks["charge_card"].context_param == "ctx"
    assert reg.tasks["echo"].context_param is None


@pytest.mark.parametrize(
    ("module", "message"),
    [
        ("sasfleet.examples.no_such_module", "cannot import task module"),
        ("sasfleet.examples.tasks:ORDER_STEPS", "is not a sasfleet.Registry"),
        ("sasfleet.examples.tasks:missing", "is not a sasfleet.Registry"),
        ("sasfleet.examples", "registers no tasks"),
    ],
)
def test_load_registry_rejects_what_is_not_a_task_module(module: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_registry(module)
