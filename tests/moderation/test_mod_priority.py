"""Report priority, as a pure function: the order of the five cases of issue 4, and what
each fact does to the score and the reasons."""

from __future__ import annotations

import dataclasses

import pytest

from moderation.priority import (
    ACTIONED_CAP,
    CATEGORY_POINTS,
    MINOR_POINTS,
    Facts,
    Priority,
    describe_age,
    prioritise,
)

HOUR_MS = 3600 * 1000
YEAR_MS = 365 * 24 * HOUR_MS

# Issue 4's cases, top first.
FIVE_CASES = {
    "minor_sexual, reporter 15, target 41 with two earlier actioned reports": Facts(
        category="minor_sexual",
        reporter_age=15,
        target_age=41,
        target_account_age_ms=2 * YEAR_MS,
        target_actioned_reports=2,
    ),
    "threat between adults": Facts(
        category="threat", reporter_age=30, target_age=35, target_account_age_ms=YEAR_MS
    ),
    "harassment reported by an outreach volunteer": Facts(
        category="harassment",
        reporter_age=45,
        target_age=28,
        target_account_age_ms=YEAR_MS,
        reporter_org="Rädda Barnen",
    ),
    "harassment from an ordinary adult": Facts(
        category="harassment", reporter_age=33, target_age=28, target_account_age_ms=YEAR_MS
    ),
    "spam from an account made an hour ago": Facts(
        category="spam", reporter_age=40, target_age=22, target_account_age_ms=HOUR_MS
    ),
}


def test_issue_4_order_of_the_five_cases() -> None:
    scored = {name: prioritise(facts) for name, facts in FIVE_CASES.items()}
    by_priority = sorted(scored, key=lambda name: -scored[name].score)
    assert by_priority == list(FIVE_CASES)
    scores = [scored[name].score for name in FIVE_CASES]
    assert scores == sorted(scores, reverse=True) and len(set(scores)) == 5, scores


def test_reasons_say_why() -> None:
    top = prioritise(
        FIVE_CASES["minor_sexual, reporter 15, target 41 with two earlier actioned reports"]
    )
    assert top.reasons[0] == "category minor_sexual"
    assert "member under 18 involved: reporter is 15" in top.reasons
    assert "an adult (41) and a minor" in top.reasons
    assert "reported account: 2 earlier reports acted on" in top.reasons
    volunteer = prioritise(FIVE_CASES["harassment reported by an outreach volunteer"])
    assert "reporter from a trusted organisation (Rädda Barnen)" in volunteer.reasons
    spam = prioritise(FIVE_CASES["spam from an account made an hour ago"])
    assert "reported account made 1 hour ago" in spam.reasons
    plain = prioritise(FIVE_CASES["harassment from an ordinary adult"])
    assert plain == Priority(CATEGORY_POINTS["harassment"], ("category harassment",))


@pytest.mark.parametrize("category", sorted(set(CATEGORY_POINTS) - {"minor_sexual", "threat"}))
def test_minor_sexual_and_threat_are_on_top(category: str) -> None:
    base = Facts(category=category, reporter_age=30, target_age=30)
    for top in ("minor_sexual", "threat"):
        top_facts = dataclasses.replace(base, category=top)
        assert prioritise(top_facts).score > prioritise(base).score


def test_a_minor_on_either_side_raises_the_priority() -> None:
    adults = Facts(category="sexual", reporter_age=30, target_age=30)
    reporter_minor = dataclasses.replace(adults, reporter_age=16)
    target_minor = dataclasses.replace(adults, target_age=17)
    both_minors = dataclasses.replace(adults, reporter_age=15, target_age=16)
    base = prioritise(adults).score
    assert prioritise(both_minors).score == base + MINOR_POINTS
    # A minor with an adult weighs more than two minors: the pattern of grooming.
    assert prioritise(reporter_minor).score > prioritise(both_minors).score
    assert prioritise(target_minor).score == prioritise(reporter_minor).score
    assert "member under 18 involved: reported account is 17" in prioritise(target_minor).reasons
    # With no reported account (a room reported as a whole), the reporter alone counts.
    room = Facts(category="sexual", reporter_age=15)
    assert prioritise(room).score == CATEGORY_POINTS["sexual"] + MINOR_POINTS


def test_history_of_the_reported_account() -> None:
    clean = Facts(
        category="harassment", reporter_age=30, target_age=30, target_account_age_ms=YEAR_MS
    )
    assert (
        prioritise(dataclasses.replace(clean, target_actioned_reports=1)).score
        > prioritise(clean).score
    )
    many = prioritise(dataclasses.replace(clean, target_actioned_reports=50)).score
    assert many == prioritise(clean).score + ACTIONED_CAP  # capped
    banned = prioritise(dataclasses.replace(clean, target_bans=2))
    assert "reported account banned before (2 times)" in banned.reasons
    linked = prioritise(dataclasses.replace(clean, target_linked_banned=3))
    assert "reported account linked to 3 banned accounts" in linked.reasons
    new = prioritise(dataclasses.replace(clean, target_account_age_ms=3 * 24 * HOUR_MS))
    assert new.score > prioritise(clean).score
    assert "reported account made 3 days ago" in new.reasons


def test_reporters_and_their_record() -> None:
    one = Facts(category="harassment", reporter_age=30)
    three = dataclasses.replace(one, distinct_reporters=3)
    assert prioritise(three).score > prioritise(one).score
    assert "3 members reported this case" in prioritise(three).reasons
    reliable = dataclasses.replace(one, reporter_actioned=4)
    assert prioritise(reliable).score > prioritise(one).score
    unreliable = dataclasses.replace(one, reporter_dismissed=6)
    assert prioritise(unreliable).score < prioritise(one).score
    # Dismissals weigh only when they clearly outnumber reports that led to action.
    mixed = dataclasses.replace(one, reporter_dismissed=6, reporter_actioned=4)
    assert prioritise(mixed).score > prioritise(one).score


def test_unknown_category_and_floor() -> None:
    odd = prioritise(Facts(category="newfangled", reporter_age=30))
    assert odd.score > 0 and odd.reasons == ("category newfangled",)
    low = prioritise(Facts(category="spam", reporter_age=30, reporter_dismissed=100))
    assert low.score >= 0


def test_describe_age() -> None:
    assert describe_age(59_000) == "0 minutes"
    assert describe_age(61_000) == "1 minute"
    assert describe_age(5 * HOUR_MS) == "5 hours"
    assert describe_age(47 * HOUR_MS) == "47 hours"
    assert describe_age(10 * 24 * HOUR_MS) == "10 days"
