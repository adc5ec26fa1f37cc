"""Denied: a moderation rule said no. chatd turns it into its own error shape."""

from __future__ import annotations


class Denied(Exception):
    """code is one of PROTOCOL.md's error codes: not_found, forbidden, no_report,
    invalid, rate_limited."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        field: str | None = None,
        retry_after_ms: int | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field
        self.retry_after_ms = retry_after_ms


def not_found(message: str = "no such thing") -> Denied:
    return Denied("not_found", message)


def forbidden(message: str) -> Denied:
    return Denied("forbidden", message)


def invalid(field: str, message: str) -> Denied:
    return Denied("invalid", f"{field} {message}", field=field)
