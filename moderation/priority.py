"""Report priority: a score and the reasons for it, from facts gathered when the report
was made. Pure: no I/O, so every rule is tested without a database.

The category sets the band (`minor_sexual` and `threat` on top); the other facts move a
report within and across bands: a member under 18 on either side, the reported
account's history, how many members reported the case, the reporter's track record and
whether the reporter belongs to a trusted organisation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

# Points by category: the base of the score.
CATEGORY_POINTS: Final = {
    "minor_sexual": 100,
    "threat": 90,
    "sexual": 60,
    "harassment": 40,
    "fake_account": 35,
    "ban_evasion": 35,
    "other": 20,
    "spam": 10,
}
# Points for a category not in the table (a newer client's category).
UNKNOWN_CATEGORY_POINTS: Final = 20
# Age in years below which a member counts as a minor.
MINOR_AGE: Final = 18
# Points when a minor is the reporter or the reported account.
MINOR_POINTS: Final = 40
# More points when the other side is an adult: the pattern of grooming.
ADULT_WITH_MINOR_POINTS: Final = 10
# Points per earlier report about the account that a moderator acted on, and their cap.
ACTIONED_POINTS: Final = 10
ACTIONED_CAP: Final = 30
# Points per earlier ban of the account, and their cap.
BAN_POINTS: Final = 15
BAN_CAP: Final = 30
# Points per banned account linked to the reported one (ban evasion), and their cap.
LINKED_BANNED_POINTS: Final = 10
LINKED_BANNED_CAP: Final = 30
# Milliseconds: an account younger than this counts as new.
NEW_ACCOUNT_MS: Final = 7 * 24 * 3600 * 1000
# Points for a new reported account.
NEW_ACCOUNT_POINTS: Final = 5
# Points per distinct reporter in the case beyond the first, and their cap.
REPORTER_POINTS: Final = 5
REPORTER_CAP: Final = 25
# Points for a reporter from a trusted organisation (an outreach volunteer).
TRUSTED_ORG_POINTS: Final = 15
# Points per earlier report of the reporter that led to action, and their cap.
TRACK_RECORD_POINTS: Final = 3
TRACK_RECORD_CAP: Final = 15
# Dismissed reports of a reporter, at least, before they weigh against the next one
# (and only when they outnumber the acted-on ones twice over).
UNRELIABLE_AFTER: Final = 3
# Points taken from a report by a reporter whose reports are mostly dismissed.
UNRELIABLE_POINTS: Final = -10

_HOUR_MS: Final = 3600 * 1000
_DAY_MS: Final = 24 * _HOUR_MS


@dataclass(frozen=True, slots=True)
class Facts:
    """What is known about a report when it is made."""

    category: str
    reporter_age: int
    # The reported account, when the report names or implies one.
    target_age: int | None = None
    target_account_age_ms: int | None = None
    # Earlier reports about the target that a moderator acted on; earlier bans of it.
    target_actioned_reports: int = 0
    target_bans: int = 0
    target_linked_banned: int = 0
    # Distinct reporters in the case, this one included.
    distinct_reporters: int = 1
    # How the reporter's earlier reports ended.
    reporter_actioned: int = 0
    reporter_dismissed: int = 0
    reporter_org: str | None = None


@dataclass(frozen=True, slots=True)
class Priority:
    score: int
    reasons: tuple[str, ...]


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def describe_age(ms: int) -> str:
    """An account age for people: minutes, hours or days."""
    if ms < _HOUR_MS:
        return _plural(max(0, ms // 60_000), "minute")
    if ms < 2 * _DAY_MS:
        return _plural(ms // _HOUR_MS, "hour")
    return _plural(ms // _DAY_MS, "day")


def prioritise(facts: Facts) -> Priority:
    """The score (higher first) and, in order of weight, why."""
    points = CATEGORY_POINTS.get(facts.category, UNKNOWN_CATEGORY_POINTS)
    reasons = [f"category {facts.category}"]

    minors = []
    if facts.reporter_age < MINOR_AGE:
        minors.append(f"reporter is {facts.reporter_age}")
    if facts.target_age is not None and facts.target_age < MINOR_AGE:
        minors.append(f"reported account is {facts.target_age}")
    if minors:
        points += MINOR_POINTS
        reasons.append(f"member under {MINOR_AGE} involved: " + ", ".join(minors))
    if facts.target_age is not None and (facts.reporter_age < MINOR_AGE) != (
        facts.target_age < MINOR_AGE
    ):
        points += ADULT_WITH_MINOR_POINTS
        adult = max(facts.reporter_age, facts.target_age)
        reasons.append(f"an adult ({adult}) and a minor")

    if facts.target_actioned_reports:
        points += min(ACTIONED_CAP, ACTIONED_POINTS * facts.target_actioned_reports)
        reasons.append(
            "reported account: "
            + _plural(facts.target_actioned_reports, "earlier report")
            + " acted on"
        )
    if facts.target_bans:
        points += min(BAN_CAP, BAN_POINTS * facts.target_bans)
        reasons.append(f"reported account banned before ({_plural(facts.target_bans, 'time')})")
    if facts.target_linked_banned:
        points += min(LINKED_BANNED_CAP, LINKED_BANNED_POINTS * facts.target_linked_banned)
        reasons.append(
            "reported account linked to " + _plural(facts.target_linked_banned, "banned account")
        )
    age_ms = facts.target_account_age_ms
    if age_ms is not None and age_ms < NEW_ACCOUNT_MS:
        points += NEW_ACCOUNT_POINTS
        reasons.append(f"reported account made {describe_age(age_ms)} ago")

    if facts.distinct_reporters > 1:
        points += min(REPORTER_CAP, REPORTER_POINTS * (facts.distinct_reporters - 1))
        reasons.append(f"{facts.distinct_reporters} members reported this case")
    if facts.reporter_org:
        points += TRUSTED_ORG_POINTS
        reasons.append(f"reporter from a trusted organisation ({facts.reporter_org})")
    if facts.reporter_actioned:
        points += min(TRACK_RECORD_CAP, TRACK_RECORD_POINTS * facts.reporter_actioned)
        reasons.append(
            "reporter's earlier reports led to action " + _plural(facts.reporter_actioned, "time")
        )
    if (
        facts.reporter_dismissed >= UNRELIABLE_AFTER
        and facts.reporter_dismissed > 2 * facts.reporter_actioned
    ):
        points += UNRELIABLE_POINTS
        reasons.append(
            "reporter's earlier reports mostly dismissed ("
            + _plural(facts.reporter_dismissed, "time")
            + ")"
        )
    return Priority(max(0, points), tuple(reasons))
