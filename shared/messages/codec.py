"""Encoders and decoders, each built once."""

from __future__ import annotations

import msgspec

from sasfleet.shared.messages.dispatch import StepDispatch
from sasfleet.shared.messages.events import ErrorInfo, JobFinished, StepRecorded
from sasfleet.shared.messages.submit import BatchFrame, MessageKind, SubmitJob

encoder = msgspec.json.Encoder()
submit_decoder = msgspec.json.Decoder(SubmitJob)
batch_decoder = msgspec.json.Decoder(BatchFrame)
kind_decoder = msgspec.json.Decoder(MessageKind)
dispatch_decoder = msgspec.json.Decoder(StepDispatch)
event_decoder = msgspec.json.Decoder(StepRecorded)
job_finished_decoder = msgspec.json.Decoder(JobFinished)
error_decoder = msgspec.json.Decoder(ErrorInfo)
any_decoder = msgspec.json.Decoder()

# What decoding untrusted bytes may raise. msgspec raises RecursionError on very deep
# nesting instead of a DecodeError; every consumer treats it as an undecodable message.
DECODE_ERRORS = (msgspec.DecodeError, msgspec.ValidationError, RecursionError)


def encode(obj: object) -> bytes:
    """JSON-encode any message or plain value."""
    return encoder.encode(obj)
