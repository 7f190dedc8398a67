"""The one error hierarchy of SAS Fleet. Each class docstring is its default message."""

from __future__ import annotations


class SasFleetError(Exception):
    """SAS Fleet error."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__class__.__doc__ or self.__class__.__name__).strip())


class ConfigError(SasFleetError):
    """Invalid configuration."""


class BadMessage(SasFleetError):
    """The message cannot be accepted; it is dead-lettered with this reason."""


class PayloadTooLarge(BadMessage):
    """The message body exceeds the payload size limit."""


class UnknownTask(BadMessage):
    """No handler is registered for this task."""


class JobNotFound(SasFleetError):
    """No such job."""


class JobTimeout(SasFleetError):
    """The job did not finish in time."""


class PublishFailed(SasFleetError):
    """The broker did not confirm a publish."""


class TaskError(SasFleetError):
    """A task handler failed."""


class NonRetryableError(TaskError):
    """A task handler failed and must not be retried."""


class InvalidPayload(NonRetryableError):
    """The payload does not match the handler's declared type."""


class RetryAfter(TaskError):
    """The handler asks to be retried after a delay."""

    def __init__(self, delay_s: float, message: str | None = None) -> None:
        super().__init__(message or f"retry requested in {delay_s} s")
        self.delay_s = delay_s
