"""ProtocolError: a frame or field the contract refuses, and the `error` frame it becomes."""

from typing import Any

from protocol.codes import BAD_FRAME_CODES, ErrorCode


class ProtocolError(Exception):
    """A client frame or value that breaks the wire contract.

    `rid` and `cmid` are filled in by the decoder and by `parse_frame` when the frame was a
    map carrying good ones, so that `to_frame()` echoes them without the caller digging
    them out again; explicit arguments to `to_frame` take precedence.
    """

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        field: str | None = None,
        rid: int | str | None = None,
        cmid: str | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field
        self.rid = rid
        self.cmid = cmid

    @property
    def is_bad_frame(self) -> bool:
        """Whether this error counts towards the bad-frame limit."""
        return self.code in BAD_FRAME_CODES

    def to_frame(self, rid: int | str | None = None, cmid: str | None = None) -> dict[str, Any]:
        """The `error` frame answering the offending client frame."""
        frame: dict[str, Any] = {"t": "error", "code": str(self.code), "message": self.message}
        if self.field is not None:
            frame["field"] = self.field
        if rid is None:
            rid = self.rid
        if rid is not None:
            frame["rid"] = rid
        if cmid is None:
            cmid = self.cmid
        if cmid is not None:
            frame["cmid"] = cmid
        return frame

    def __repr__(self) -> str:
        return f"ProtocolError({self.code.value!r}, {self.message!r}, field={self.field!r})"
