"""The domain's exception tree. `smtpconfig.api.status` maps each class to one gRPC status code.

Messages are written for the caller and never contain a secret value.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FieldViolation:
    """One bad field: its path in Keyfactor JSON names (``RequestHeaders[2].Name``) and the rule."""

    field: str
    description: str


class SmtpConfigError(Exception):
    """Base of every error the service reports to callers on purpose."""


class InvalidArgument(SmtpConfigError):
    """The request breaks one or more rules; nothing was stored."""

    def __init__(self, violations: list[FieldViolation]) -> None:
        self.violations = list(violations)
        names = ", ".join(dict.fromkeys(v.field for v in self.violations))
        super().__init__(f"invalid request: {names}" if names else "invalid request")


class NotFound(SmtpConfigError):
    """The thing asked for does not exist."""


class FailedPrecondition(SmtpConfigError):
    """The system is not in a state where the request can be carried out."""


class Aborted(SmtpConfigError):
    """A conditional write lost against a concurrent change (stale etag); nothing was written."""


class Unavailable(SmtpConfigError):
    """A backend the request needs cannot be reached; the caller may retry."""


class Unauthenticated(SmtpConfigError):
    """The call carries no identity this server accepts (no token, an unknown token, no client
    certificate, or a Unix socket without a configured identity)."""


class PermissionDenied(SmtpConfigError):
    """The caller is known but the policy does not grant the permission the method needs."""


class ResourceExhausted(SmtpConfigError):
    """The caller is over a rate limit; `retry_after` says when a call would be let through."""

    def __init__(self, message: str, retry_after: float = 0.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class DeadlineExceeded(SmtpConfigError):
    """The call ran past its deadline (the caller's, or the server's default)."""


def violation(field: str, description: str) -> FieldViolation:
    """Shorthand used by the validators."""
    return FieldViolation(field, description)
