"""Moderation: reports and their priority, kicks and bans, the privacy gate and the audit
log, linked accounts and alerts. Imports persistence and protocol only, never chatd.

How the modules fit:

- `notify`: the `Notifier` chatd hands in (mod events, closing a user's connections,
  notices, removals) and the `RateBudget` (chatd's rate limiter) reports count against.
- `priority`: pure scoring of a report from the facts known when it was made.
- `roles`: who may moderate, and whom. `errors`: `Denied`, which chatd turns into its
  error shape.
- `audit`: the append-only audit log as moderators use it.
- `gate`: the privacy gate in front of every DM read and DM message removal.
- `actions`: warn, kick, ban, unban, remove a message.
- `filing`: filing a report (rate limit, hidden targets, snapshot, case, priority);
  `reports`: the queue and cases, reading one, claim and resolve; `report_objects`: the
  report objects both hand out and announce.
- `linking`, `alerts`: accounts linked by device or mailbox; the ban-evasion alert.
- `profile`, `stats`: a member as moderators see them; registrations by day and age.
- `views`: the JSON shapes; `service`: `Moderation`, which builds all of the above.
"""
