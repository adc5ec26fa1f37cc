"""Moderation, assembled: the stores it needs, the Notifier chatd hands it, and its
settings by keyword, wired into the services that the HTTP routes and sessions call."""

from __future__ import annotations

from moderation.actions import Actions
from moderation.alerts import Alerts
from moderation.audit import AuditLog
from moderation.clock import Clock, now_ms
from moderation.filing import ReportFiling
from moderation.gate import PrivacyGate
from moderation.linking import Linker
from moderation.notify import Notifier, RateBudget
from moderation.profile import Profiles
from moderation.report_objects import ReportObjects
from moderation.reports import Reports
from moderation.stats import Stats
from persistence.alerts import AlertStore
from persistence.audit import AuditStore
from persistence.conversations import ConversationStore
from persistence.database import Database
from persistence.messages import MessageStore
from persistence.reports import ReportStore
from persistence.sessions import SessionStore
from persistence.sightings import SightingStore
from persistence.signals import SignalStore
from persistence.users import UserStore


class Moderation:
    def __init__(
        self,
        *,
        db: Database,
        notifier: Notifier,
        budget: RateBudget,
        gate_days: int,
        reports_per_hour: int,
        clock: Clock = now_ms,
    ) -> None:
        users = UserStore(db)
        conversations = ConversationStore(db)
        messages = MessageStore(db)
        signals = SignalStore(db)
        report_store = ReportStore(db)
        self.audit = AuditLog(store=AuditStore(db), signals=signals, clock=clock)
        self.linker = Linker(signals=signals)
        self.gate = PrivacyGate(
            reports=report_store,
            conversations=conversations,
            messages=messages,
            audit=self.audit,
            gate_days=gate_days,
        )
        self.actions = Actions(
            users=users,
            sessions=SessionStore(db),
            conversations=conversations,
            messages=messages,
            gate=self.gate,
            audit=self.audit,
            notifier=notifier,
            clock=clock,
        )
        objects = ReportObjects(signals=signals, notifier=notifier, clock=clock)
        self.filing = ReportFiling(
            store=report_store,
            users=users,
            conversations=conversations,
            messages=messages,
            linker=self.linker,
            audit=self.audit,
            objects=objects,
            budget=budget,
            reports_per_hour=reports_per_hour,
            clock=clock,
        )
        self.reports = Reports(
            store=report_store,
            audit=self.audit,
            actions=self.actions,
            objects=objects,
            notifier=notifier,
            clock=clock,
        )
        self.profiles = Profiles(
            users=users,
            sightings=SightingStore(db),
            reports=self.reports,
            linker=self.linker,
            audit=self.audit,
        )
        self.alerts = Alerts(
            store=AlertStore(db), linker=self.linker, notifier=notifier, clock=clock
        )
        self.stats = Stats(signals=signals, clock=clock)
        self.users = users
