"""The one error hierarchy of SAS Fleet: the errors it raises, and those a task handler
raises to steer its step. Each class docstring is its default message. What the fleet
records about a failed step is named by ``statemachine.Failure``, not by these."""

from __future__ import annotations


class SasFleetError(Exception):
    """SAS Fleet error."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__class__.__doc__ or self.__class__.__name__).strip())


class ConfigError(SasFleetError):
    """Invalid configuration."""


class InvalidJob(SasFleetError, ValueError):
    """The job breaks the rules of the submit message; it was not sent."""


class DispatchMismatch(SasFleetError):
    """The dispatch does not match the recorded step (forged or altered): not run."""


class JobTimeout(SasFleetError):
    """The job did not finish in time."""


class PublishFailed(SasFleetError):
    """The broker did not confirm a publish."""


class NonRetryableError(SasFleetError):
    """A task handler failed and must not be retried."""


class RetryAfter(SasFleetError):
    """The handler asks to be retried after a delay."""

    def __init__(self, delay_s: float, message: str | None = None) -> None:
        super().__init__(message or f"retry requested in {delay_s} s")
        self.delay_s = delay_s
