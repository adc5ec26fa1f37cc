"""Refusals: a rule said no. One exception for both the WebSocket and the HTTP side."""

from __future__ import annotations

# HTTP status of each error code (PROTOCOL.md section 6).
HTTP_STATUS = {
    "bad_request": 400,
    "bad_frame": 400,
    "unknown_type": 400,
    "unauthenticated": 401,
    "bad_credentials": 401,
    "forbidden": 403,
    "banned": 403,
    "registration_blocked": 403,
    "no_report": 403,
    "not_member": 403,
    "blocked": 403,
    "not_found": 404,
    "username_taken": 409,
    "invalid": 422,
    "under_age": 422,
    "rate_limited": 429,
    "internal": 500,
    "unavailable": 503,
}


class Refused(Exception):
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

    @property
    def status(self) -> int:
        return HTTP_STATUS.get(self.code, 400)


def not_found(what: str = "no such thing") -> Refused:
    return Refused("not_found", what)


def unavailable() -> Refused:
    return Refused("unavailable", "storage is unavailable, retry later")
