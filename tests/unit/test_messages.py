"""The message layer: the public submit contract, dispatch and event messages, the codec."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sasfleet.shared.messages import codec
from sasfleet.shared.messages.dispatch import StepDispatch
from sasfleet.shared.messages.events import ErrorInfo, JobFinished, StepRecorded
from sasfleet.shared.messages.submit import StepSpec, SubmitJob


def submit(doc: dict[str, Any]) -> SubmitJob:
    return codec.submit_decoder.decode(json.dumps(doc).encode())


# --- decoding the public submit contract ----------------------------------------------------


def test_minimal_raw_message_without_kind_tag_decodes() -> None:
    job = codec.submit_decoder.decode(b'{"task": "echo", "payload": {"x": 1}}')
    assert (job.task, job.payload, job.v) == ("echo", {"x": 1}, 1)
    assert (job.job_id, job.idempotency_key, job.steps, job.max_attempts) == (None,) * 4


def test_kind_submit_is_accepted() -> None:
    assert submit({"kind": "submit", "task": "echo"}).task == "echo"


@pytest.mark.parametrize("kind", ["dispatch", "job_finished", "Submit", ""])
def test_wrong_kind_is_rejected(kind: str) -> None:
    with pytest.raises(msgspec.ValidationError, match=r"\$\.kind"):
        submit({"kind": kind, "task": "echo"})


def test_unknown_top_level_field_is_rejected_by_name() -> None:
    with pytest.raises(msgspec.ValidationError, match="unknown field `tsak`"):
        submit({"task": "echo", "tsak": "echo"})


def test_unknown_field_inside_a_step_is_rejected() -> None:
    with pytest.raises(msgspec.ValidationError, match="unknown field `retries`"):
        submit({"steps": [{"task": "a", "retries": 3}]})


def test_step_specs_expands_the_one_step_shorthand_with_its_options() -> None:
    job = submit(
        {"task": "echo", "payload": [1], "pool": "p1", "max_attempts": 5, "timeout_s": 2.5}
    )
    assert job.step_specs() == [
        StepSpec(task="echo", payload=[1], pool="p1", max_attempts=5, timeout_s=2.5)
    ]


def test_step_specs_returns_the_given_steps_in_order() -> None:
    job = submit({"steps": [{"task": "a", "payload": 1}, {"task": "b", "max_attempts": 2}]})
    assert job.step_specs() == [StepSpec(task="a", payload=1), StepSpec(task="b", max_attempts=2)]


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"task": "a", "steps": [{"task": "b"}]}, "not at the top level"),
        ({"payload": {"x": 1}, "steps": [{"task": "b"}]}, "not at the top level"),
        ({}, "needs `task` or `steps`"),
        ({"payload": {"x": 1}}, "needs `task` or `steps`"),
    ],
)
def test_step_specs_rejects_both_or_neither_task_and_steps(
    doc: dict[str, Any], message: str
) -> None:
    job = submit(doc)  # the shape is checked after decoding, by step_specs()
    with pytest.raises(ValueError, match=message):
        job.step_specs()


def test_top_level_step_options_are_not_silently_dropped_when_steps_are_given() -> None:
    job = submit({"steps": [{"task": "a"}], "max_attempts": 7})
    try:
        specs = job.step_specs()
    except ValueError:
        return  # refusing the combination is a correct answer too
    assert specs[0].max_attempts == 7


@pytest.mark.parametrize(
    "doc",
    [
        {"task": "1echo"},  # must start with a letter or underscore
        {"task": ""},
        {"task": "has space"},
        {"task": "x" * 201},
        {"task": "echo", "max_attempts": 0},
        {"task": "echo", "max_attempts": 101},
        {"task": "echo", "timeout_s": 0},
        {"task": "echo", "timeout_s": 7 * 24 * 3600 + 1},
        {"task": "echo", "v": 2},
        {"task": "echo", "job_id": "a{b}"},
        {"task": "echo", "job_id": "x" * 129},
        {"task": "echo", "pool": "no space"},
        {"task": "echo", "idempotency_key": ""},
        {"steps": []},
        {"steps": [{"task": "a"}] * 101},
        {"steps": [{"task": "a", "max_attempts": 0}]},
        {"task": 5},
    ],
)
def test_field_limits_are_enforced_when_decoding(doc: dict[str, Any]) -> None:
    with pytest.raises(msgspec.ValidationError):
        submit(doc)


@pytest.mark.parametrize(
    "doc",
    [
        {"task": "_a.b:c-d9", "max_attempts": 1},
        {"task": "x" * 200, "max_attempts": 100},
        {"task": "echo", "job_id": "x" * 128, "timeout_s": 7 * 24 * 3600},
        {"steps": [{"task": "a"}] * 100},
    ],
)
def test_values_at_the_limits_are_accepted(doc: dict[str, Any]) -> None:
    assert submit(doc).step_specs()[-1].task == doc.get("task", "a")


@pytest.mark.parametrize("field", ["job_id", "task"])
def test_trailing_newline_in_names_is_rejected(field: str) -> None:
    with pytest.raises(msgspec.ValidationError):
        submit({"task": "echo", field: "abc\n"})


# --- dispatch and event messages ------------------------------------------------------------


def test_step_dispatch_round_trips_with_a_raw_payload() -> None:
    payload = b'{"order_id":"o-1","items":[1,2]}'
    msg = StepDispatch(
        job_id="j1",
        step=2,
        task="ship",
        attempt=3,
        lease=9,
        idempotency_key="j1:2",
        timeout_s=5,
        payload=msgspec.Raw(payload),
    )
    wire = codec.encode(msg)
    assert json.loads(wire)["kind"] == "dispatch"
    assert json.loads(wire)["payload"] == {"order_id": "o-1", "items": [1, 2]}
    back = codec.dispatch_decoder.decode(wire)
    assert back == msg
    assert bytes(back.payload) == payload


def test_job_finished_encodes_tag_defaults_and_nested_error() -> None:
    ok = JobFinished(job_id="j1", status="succeeded", result={"n": 1})
    assert json.loads(codec.encode(ok)) == {
        "kind": "job_finished",
        "job_id": "j1",
        "status": "succeeded",
        "result": {"n": 1},
        "error": None,
    }
    failed = JobFinished(
        job_id="j2",
        status="failed",
        error=ErrorInfo(type="StepTimeout", message="late", retryable=False),
    )
    wire = codec.encode(failed)
    assert json.loads(wire)["error"] == {
        "type": "StepTimeout",
        "message": "late",
        "retryable": False,
    }
    assert codec.job_finished_decoder.decode(wire) == failed


def test_step_recorded_round_trips_with_its_tag() -> None:
    event = StepRecorded(job_id="j", step=0, attempt=1, lease=1, by="agent-1")
    wire = codec.encode(event)
    assert json.loads(wire)["kind"] == "step_recorded"
    assert codec.event_decoder.decode(wire) == event


# --- the codec never raises anything but a decode error -------------------------------------

DECODERS = {
    "submit": codec.submit_decoder,
    "dispatch": codec.dispatch_decoder,
    "event": codec.event_decoder,
    "job_finished": codec.job_finished_decoder,
    "error": codec.error_decoder,
    "any": codec.any_decoder,
}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=20,
)
field_names = st.sampled_from(
    [
        "kind",
        "task",
        "payload",
        "steps",
        "job_id",
        "step",
        "attempt",
        "lease",
        "status",
        "max_attempts",
        "timeout_s",
        "v",
        "pool",
        "idempotency_key",
        "type",
        "message",
    ]
)
message_like = st.dictionaries(field_names, json_values, max_size=8)


def decode_all(body: bytes) -> None:
    for name, decoder in DECODERS.items():
        try:
            decoder.decode(body)
        except msgspec.DecodeError:  # ValidationError is a DecodeError
            pass
        except Exception as exc:  # pragma: no cover - the failure message
            raise AssertionError(f"{name} decoder raised {exc!r} for {body!r}") from exc


@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_decode_errors(body: bytes) -> None:
    decode_all(body)


@given(json_values | message_like)
def test_arbitrary_json_raises_only_decode_errors(value: Any) -> None:
    decode_all(json.dumps(value).encode())


def test_garbage_is_a_decode_error_and_a_bad_shape_a_validation_error() -> None:
    with pytest.raises(msgspec.DecodeError) as garbage:
        codec.submit_decoder.decode(b"\xff not json")
    assert not isinstance(garbage.value, msgspec.ValidationError)
    with pytest.raises(msgspec.ValidationError):
        codec.submit_decoder.decode(b"[1, 2]")


def test_deeply_nested_payload_is_one_of_the_decode_errors_consumers_dead_letter() -> None:
    body = b'{"task": "echo", "payload": ' + b"[" * 1000 + b"]" * 1000 + b"}"
    with pytest.raises(codec.DECODE_ERRORS):
        codec.submit_decoder.decode(body)
