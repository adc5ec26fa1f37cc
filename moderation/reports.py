"""Reports once filed: the queue and the cases, reading one with its snapshot (audited),
claiming, and resolving a case, which may act on its target and tells its reporters."""

from __future__ import annotations

from typing import Any, Final

from moderation import audit as actions
from moderation import views
from moderation.actions import MAX_BAN_DAYS, Actions
from moderation.audit import AuditLog
from moderation.clock import Clock, now_ms
from moderation.errors import invalid, not_found
from moderation.notify import Notifier
from moderation.report_objects import ReportObjects
from persistence.records import Report, User
from persistence.reports import ReportStore

# Reports listed by default and at most.
DEFAULT_LIMIT: Final = 100
MAX_LIMIT: Final = 1000
# Reports about and by a user shown on their profile.
PROFILE_REPORTS: Final = 100
# Statuses that a `status` query names (`all`: every one).
QUERY_STATUSES: Final = {
    "open": ("open",),
    "claimed": ("claimed",),
    "resolved": ("resolved",),
    "all": None,
}
# Resolutions that also act on the case's target.
ACTING: Final = ("warned", "kicked", "banned")
RESOLUTIONS: Final = ("dismissed", "warned", "kicked", "banned", "police")
# What reporters hear when their case is resolved: never the details.
ACTED_NOTICE: Final = "thank you, we acted on your report"
NO_BREACH_NOTICE: Final = "we looked and found no breach"
# `kind` of those notices.
REPORT_NOTICE: Final = "report"


class Reports:
    def __init__(
        self,
        *,
        store: ReportStore,
        audit: AuditLog,
        actions: Actions,
        objects: ReportObjects,
        notifier: Notifier,
        clock: Clock = now_ms,
    ) -> None:
        self._store = store
        self._audit = audit
        self._actions = actions
        self._objects = objects
        self._notifier = notifier
        self._clock = clock

    # -- reading -----------------------------------------------------------------------

    async def queue(self, status: str, limit: int = DEFAULT_LIMIT) -> list[dict[str, Any]]:
        """Reports of a status (`open`, `claimed`, `resolved`, `all`), highest priority first."""
        if status not in QUERY_STATUSES:
            raise invalid("status", "must be one of " + ", ".join(QUERY_STATUSES))
        rows = await self._store.queue(QUERY_STATUSES[status], min(limit, MAX_LIMIT))
        return await self._objects.objects(rows)

    async def cases(self, status: str, limit: int = DEFAULT_LIMIT) -> list[dict[str, Any]]:
        """Cases, highest priority first: `open` (with a report not yet resolved) or `all`.

        A case takes the priority and reasons of its highest open report."""
        if status not in ("open", "all"):
            raise invalid("status", "must be open or all")
        statuses = ("open", "claimed") if status == "open" else None
        reports = await self._objects.objects(await self._store.queue(statuses, MAX_LIMIT))
        by_case: dict[int, list[dict[str, Any]]] = {}
        for obj in reports:
            by_case.setdefault(obj["case"], []).append(obj)
        out = []
        for case_id, members in by_case.items():
            top = members[0]  # the queue order puts the highest first
            states = {r["status"] for r in members}
            state = next(s for s in ("open", "claimed", "resolved") if s in states)
            out.append(
                {
                    "id": case_id,
                    "target": top["target"],
                    "conv": top["conv"],
                    "priority": top["priority"],
                    "reasons": top["reasons"],
                    "category": top["category"],
                    "status": state,
                    "reporters": len({r["reporter"]["id"] for r in members if r["reporter"]}),
                    "created": min(r["created"] for r in members),
                    "updated": max(r["created"] for r in members),
                    "reports": members,
                }
            )
        return out[: min(limit, MAX_LIMIT)]

    async def _get(self, report_id: int) -> Report:
        report = await self._store.get(report_id)
        if report is None:
            raise not_found("no such report")
        return report

    async def read(self, viewer: User, report_id: int) -> dict[str, Any]:
        """The report with its frozen snapshot and its case; the read is audited."""
        report = await self._get(report_id)
        frozen = await self._store.snapshot(report.id)
        await self._audit.record(
            viewer,
            actions.READ_REPORT,
            target=report.target_user_id,
            conv=report.conv_id,
            msg=report.message_id,
            report=report.id,
            detail={"messages": len(frozen)},
        )
        case = [r for r in await self._store.in_case(report.case_id) if r.id != report.id]
        objs = await self._objects.objects([report, *case])
        convs = {m.conv for m in frozen}
        snapshot_conv = next(iter(convs)) if len(convs) == 1 else None
        if not frozen:
            snapshot_conv = report.conv_id
        obj = objs[0]
        obj["snapshot"] = {
            "conv": snapshot_conv,
            "messages": [views.snapshot_message(m) for m in frozen],
        }
        obj["case_reports"] = objs[1:]
        return obj

    async def about_user(self, user_id: int) -> dict[str, list[dict[str, Any]]]:
        about = await self._store.about(user_id, PROFILE_REPORTS)
        by = await self._store.by_reporter(user_id, PROFILE_REPORTS)
        return {"about": await self._objects.objects(about), "by": await self._objects.objects(by)}

    # -- changing ----------------------------------------------------------------------

    async def do_claim(self, actor: User, report_id: int) -> dict[str, Any]:
        report = await self._get(report_id)
        claimed = await self._store.claim(report.id, actor.id, self._clock())
        if claimed is None:
            raise invalid("report", "is already resolved")
        await self._audit.record(
            actor, actions.CLAIM, target=claimed.target_user_id, report=claimed.id
        )
        await self._objects.announce("report.updated", claimed)
        return (await self._objects.objects([claimed]))[0]

    async def do_resolve(
        self,
        actor: User,
        report_id: int,
        *,
        resolution: str,
        note: str | None,
        days: int | None = None,
    ) -> dict[str, Any]:
        """Resolves every open report of the case; warned, kicked and banned also act on
        the target with the note as the reason; the reporters get a notice."""
        if resolution not in RESOLUTIONS:
            raise invalid("resolution", "must be one of " + ", ".join(RESOLUTIONS))
        if days is not None and not 1 <= days <= MAX_BAN_DAYS:
            raise invalid("days", f"must be from 1 to {MAX_BAN_DAYS}")
        report = await self._get(report_id)
        if report.status == "resolved":
            raise invalid("report", "is already resolved")
        target = None
        if resolution in ACTING:
            if report.target_user_id is None:
                raise invalid("resolution", "this case names no account to act on")
            target = await self._actions.check_target(actor, report.target_user_id, actions.RESOLVE)
            if resolution == "warned" and not note:
                raise invalid("note", "is required: it is the warning the member gets")
        resolved = await self._store.resolve_case(
            report.case_id, actor.id, resolution, note, self._clock()
        )
        if not resolved:
            raise invalid("report", "is already resolved")
        await self._audit.record(
            actor,
            actions.RESOLVE,
            target=report.target_user_id,
            conv=report.conv_id,
            report=report.id,
            reason=note,
            detail={"resolution": resolution, "reports": [r.id for r in resolved]},
        )
        if target is not None:
            if resolution == "warned":
                assert note is not None
                await self._actions.do_warn(actor, target.id, note, report=report.id)
            elif resolution == "kicked":
                await self._actions.do_kick(actor, target.id, note, report=report.id)
            else:
                await self._actions.do_ban(actor, target.id, note, days=days, report=report.id)
        text = NO_BREACH_NOTICE if resolution == "dismissed" else ACTED_NOTICE
        for reporter_id in sorted({r.reporter_id for r in resolved}):
            await self._notifier.notice(reporter_id, text, REPORT_NOTICE)
        for r in resolved:
            await self._objects.announce("report.updated", r)
        mine = next((r for r in resolved if r.id == report.id), None)
        return (await self._objects.objects([mine or await self._get(report.id)]))[0]
