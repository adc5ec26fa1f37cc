"""The moderators' HTTP API (/api/mod/*, PROTOCOL.md section 6) and POST /api/reports.

Parsing only: each route authenticates, checks the role, reads its parameters and calls
moderation; moderation's refusals come back in chatd's error shape.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from chatd.errors import Refused
from chatd.http_common import Handler, caller, json_body, node_of, path_id, query_int, route
from chatd.mod_bridge import refused
from moderation.actions import MAX_BAN_DAYS
from moderation.audit import DEFAULT_LIMIT as AUDIT_DEFAULT_LIMIT
from moderation.audit import MAX_LIMIT as AUDIT_MAX_LIMIT
from moderation.errors import Denied
from moderation.roles import is_moderator
from moderation.service import Moderation
from moderation.stats import DEFAULT_DAYS, MAX_DAYS
from moderation.views import user_object
from persistence.records import User
from protocol import frames
from protocol.limits import MAX_ID, SYNC_LIMIT_DEFAULT, SYNC_LIMIT_MAX
from protocol.text import check_note

# Alerts listed by GET /api/mod/alerts at most.
ALERTS_MAX: Final = 500


def mod_route(handler: Handler) -> Handler:
    """route(), with moderation's refusals turned into chatd's."""

    async def translated(request: Request) -> Response:
        try:
            return await handler(request)
        except Denied as exc:
            raise refused(exc) from None

    translated.__name__ = handler.__name__
    translated.__doc__ = handler.__doc__
    return route(translated)


def moderation_of(request: Request) -> Moderation:
    return node_of(request).moderation


async def moderator(request: Request) -> User:
    """The caller, who must be a moderator or an admin (else 403 forbidden)."""
    _, user = await caller(request)
    if not is_moderator(user):
        raise Refused("forbidden", "only moderators and admins may do this")
    return user


def _optional_id(request: Request, name: str) -> int | None:
    if not request.query_params.get(name):
        return None
    return query_int(request, name, 0, 1, MAX_ID)


def _reason(body: dict[str, Any], *, required: bool = False) -> str | None:
    reason = check_note(body.get("reason"), "reason")
    if required and reason is None:
        raise Refused("invalid", "reason is required", field="reason")
    return reason


def _days(body: dict[str, Any]) -> int | None:
    days = body.get("days")
    if days is None:
        return None
    if type(days) is not int or not 1 <= days <= MAX_BAN_DAYS:
        raise Refused(
            "invalid", f"days must be a whole number from 1 to {MAX_BAN_DAYS}", field="days"
        )
    return days


# -- members ------------------------------------------------------------------------------


@mod_route
async def file_report(request: Request) -> Response:
    _, user = await caller(request)
    body = await json_body(request)
    frame = frames.parse_frame({**body, "t": "report"})
    assert isinstance(frame, frames.Report)
    report = await moderation_of(request).filing.do_report(
        user,
        category=frame.category,
        msg=frame.msg,
        conv=frame.conv,
        user=frame.user,
        note=frame.note,
    )
    return JSONResponse({"report": report}, status_code=201)


# -- reports and cases -----------------------------------------------------------------------


@mod_route
async def list_reports(request: Request) -> Response:
    await moderator(request)
    status = request.query_params.get("status") or "open"
    limit = query_int(request, "limit", SYNC_LIMIT_DEFAULT, 1, SYNC_LIMIT_MAX)
    return JSONResponse({"reports": await moderation_of(request).reports.queue(status, limit)})


@mod_route
async def list_cases(request: Request) -> Response:
    await moderator(request)
    status = request.query_params.get("status") or "open"
    limit = query_int(request, "limit", SYNC_LIMIT_DEFAULT, 1, SYNC_LIMIT_MAX)
    return JSONResponse({"cases": await moderation_of(request).reports.cases(status, limit)})


@mod_route
async def read_report(request: Request) -> Response:
    viewer = await moderator(request)
    report = await moderation_of(request).reports.read(viewer, path_id(request, "id"))
    return JSONResponse({"report": report})


@mod_route
async def claim_report(request: Request) -> Response:
    actor = await moderator(request)
    report_id = path_id(request, "id")
    report = await moderation_of(request).reports.do_claim(actor, report_id)
    return JSONResponse({"report": report})


@mod_route
async def resolve_report(request: Request) -> Response:
    actor = await moderator(request)
    report_id = path_id(request, "id")
    body = await json_body(request)
    resolution = body.get("resolution")
    if not isinstance(resolution, str):
        raise Refused("invalid", "resolution is required", field="resolution")
    report = await moderation_of(request).reports.do_resolve(
        actor,
        report_id,
        resolution=resolution,
        note=check_note(body.get("note"), "note"),
        days=_days(body),
    )
    return JSONResponse({"report": report})


# -- conversations, messages, users ------------------------------------------------------------


@mod_route
async def conversation_messages(request: Request) -> Response:
    viewer = await moderator(request)
    conv_id = path_id(request, "conv")
    after = query_int(request, "after", 0, 0, MAX_ID)
    limit = query_int(request, "limit", SYNC_LIMIT_DEFAULT, 1, SYNC_LIMIT_MAX)
    rows, more = await moderation_of(request).gate.do_read(
        viewer, conv_id, after=after, limit=limit
    )
    return JSONResponse({"messages": rows, "more": more})


@mod_route
async def remove_message(request: Request) -> Response:
    actor = await moderator(request)
    message_id = path_id(request, "id")
    reason = _reason(await json_body(request))
    message = await moderation_of(request).actions.do_remove(actor, message_id, reason)
    return JSONResponse({"message": message})


@mod_route
async def read_user(request: Request) -> Response:
    viewer = await moderator(request)
    profile = await moderation_of(request).profiles.read(viewer, path_id(request, "id"))
    return JSONResponse(profile)


def _user_action(
    act: Callable[[Moderation, User, int, dict[str, Any]], Any],
) -> Handler:
    async def handler(request: Request) -> Response:
        actor = await moderator(request)
        user_id = path_id(request, "id")
        body = await json_body(request)
        return JSONResponse(await act(moderation_of(request), actor, user_id, body))

    handler.__name__ = act.__name__.lstrip("_") + "_user"
    return handler


async def _warn(m: Moderation, actor: User, user_id: int, body: dict[str, Any]) -> Any:
    user = await m.actions.do_warn(actor, user_id, _reason(body, required=True) or "")
    return {"user": _user(user)}


async def _kick(m: Moderation, actor: User, user_id: int, body: dict[str, Any]) -> Any:
    return {"sessions_closed": await m.actions.do_kick(actor, user_id, _reason(body))}


async def _ban(m: Moderation, actor: User, user_id: int, body: dict[str, Any]) -> Any:
    user = await m.actions.do_ban(actor, user_id, _reason(body), days=_days(body))
    return {"user": _user(user)}


async def _unban(m: Moderation, actor: User, user_id: int, body: dict[str, Any]) -> Any:
    return {"user": _user(await m.actions.do_unban(actor, user_id, _reason(body)))}


def _user(user: User) -> dict[str, Any]:
    return user_object(user)


warn_user = mod_route(_user_action(_warn))
kick_user = mod_route(_user_action(_kick))
ban_user = mod_route(_user_action(_ban))
unban_user = mod_route(_user_action(_unban))


# -- audit, alerts, statistics ---------------------------------------------------------------


@mod_route
async def audit_entries(request: Request) -> Response:
    viewer = await moderator(request)
    actor = _optional_id(request, "actor")
    target = _optional_id(request, "target")
    limit = query_int(request, "limit", AUDIT_DEFAULT_LIMIT, 1, AUDIT_MAX_LIMIT)
    entries = await moderation_of(request).audit.entries(
        viewer, actor=actor, target=target, limit=limit
    )
    return JSONResponse({"entries": entries})


@mod_route
async def recent_alerts(request: Request) -> Response:
    await moderator(request)
    limit = query_int(request, "limit", SYNC_LIMIT_DEFAULT, 1, ALERTS_MAX)
    return JSONResponse({"alerts": await moderation_of(request).alerts.recent(limit)})


@mod_route
async def registration_stats(request: Request) -> Response:
    await moderator(request)
    days = query_int(request, "days", DEFAULT_DAYS, 1, MAX_DAYS)
    return JSONResponse({"days": await moderation_of(request).stats.registrations(days)})


def routes() -> list[BaseRoute]:
    return [
        Route("/api/reports", file_report, methods=["POST"]),
        Route("/api/mod/reports", list_reports, methods=["GET"]),
        Route("/api/mod/reports/{id}", read_report, methods=["GET"]),
        Route("/api/mod/reports/{id}/claim", claim_report, methods=["POST"]),
        Route("/api/mod/reports/{id}/resolve", resolve_report, methods=["POST"]),
        Route("/api/mod/cases", list_cases, methods=["GET"]),
        Route("/api/mod/conversations/{conv}/messages", conversation_messages, methods=["GET"]),
        Route("/api/mod/messages/{id}/remove", remove_message, methods=["POST"]),
        Route("/api/mod/users/{id}", read_user, methods=["GET"]),
        Route("/api/mod/users/{id}/warn", warn_user, methods=["POST"]),
        Route("/api/mod/users/{id}/kick", kick_user, methods=["POST"]),
        Route("/api/mod/users/{id}/ban", ban_user, methods=["POST"]),
        Route("/api/mod/users/{id}/unban", unban_user, methods=["POST"]),
        Route("/api/mod/audit", audit_entries, methods=["GET"]),
        Route("/api/mod/alerts", recent_alerts, methods=["GET"]),
        Route("/api/mod/stats/registrations", registration_stats, methods=["GET"]),
    ]
