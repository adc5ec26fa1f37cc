"""chatd's wire protocol, pure: no I/O, no event loop, nothing of chatd's own.

How the modules fit, from the bottom up:

- `limits`: the numbers the contract fixes (sizes, lengths, id range).
- `codes`: `ErrorCode` (the `code` of an `error` frame), `CloseCode` (WebSocket closes),
  `BAD_FRAME_CODES` (errors that count towards the bad-frame close).
- `errors`: `ProtocolError`, raised by every check below; `to_frame()` makes the
  `error` frame that answers it.
- `text`: `check_*` functions for the strings and numbers that WebSocket frames and HTTP
  bodies share (message text, room names, usernames, e-mail, birthdates, ids, ...).
- `codec`: the MessagePack and JSON codecs (bytes or text <-> frame map, envelope checks),
  `negotiate()` for the subprotocol, `extract_rid()`.
- `frames`: one frozen dataclass per client frame and `parse_frame()`, which turns a
  decoded map into one of them, checking every field with `text`.
- `server_frames`: builders for the frames the server sends, as plain dicts ready for a
  codec's `encode`.

An adapter feeds a WebSocket message to `codec.decode`, the map to `frames.parse_frame`,
dispatches on the dataclass, and encodes what `server_frames` builds. Import from the
submodules; this package re-exports nothing.
"""
