"""What a source's caught-up poll vouches for (:class:`operators.caught_up.CaughtUp`).

The rule under test: a poll that found nothing pending vouches for its own time less the
settle time and the stall margin, and — after a gap between polls longer than
:data:`~operators.caught_up.STALL_US`, i.e. a pause of the process — for nothing before the
process ran again, until it has been polled without a pause for that long.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from operators.caught_up import STALL_US, CaughtUp

SETTLE = 500_000
MARGIN = SETTLE + STALL_US


def test_a_steadily_polled_source_vouches_for_its_poll_time_less_the_margin() -> None:
    c = CaughtUp(SETTLE)
    got = [c.vouch(t, caught_up=True) for t in range(0, 2_000_001, 10_000)]
    first = next(i for i, v in enumerate(got) if v is not None)
    assert first * 10_000 == MARGIN  # live for settle + margin before the first claim
    assert got[-1] == 2_000_000 - MARGIN
    assert c.latest_us == got[-1]


def test_a_busy_poll_vouches_for_nothing_but_keeps_the_source_live() -> None:
    c = CaughtUp(SETTLE)
    for t in range(0, 1_000_001, 100_000):
        assert c.vouch(t, caught_up=False) is None
    assert c.vouch(1_100_000, caught_up=True) == 1_100_000 - MARGIN


def test_after_a_pause_nothing_is_vouched_for_until_the_source_ran_again_long_enough() -> None:
    c = CaughtUp(SETTLE)
    for t in range(0, 1_000_001, 10_000):
        before = c.vouch(t, caught_up=True)
    assert before == 1_000_000 - MARGIN
    resumed = 5_000_000  # no poll for 4 s: the process was stopped
    assert c.vouch(resumed, caught_up=True) is None
    polls = range(resumed + 10_000, resumed + 2_000_000, 10_000)
    claims = [c.vouch(t, caught_up=True) for t in polls]
    made = [v for v in claims if v is not None]
    assert made, "vouches again once it has run for the margin"
    assert min(made) >= resumed, "never vouches for the time the process was stopped"
    assert claims.index(made[0]) * 10_000 + 10_000 == MARGIN


def test_a_clock_stepping_back_is_not_a_pause_and_claims_follow_the_poll_time() -> None:
    c = CaughtUp(SETTLE)
    for t in range(0, 1_000_001, 10_000):
        c.vouch(t, caught_up=True)
    assert c.vouch(990_000, caught_up=True) == 990_000 - MARGIN
    assert c.latest_us == 1_000_000 - MARGIN, "the newest claim is kept, not the last"


def test_a_negative_settle_time_is_refused() -> None:
    with pytest.raises(ValueError, match="settle_us"):
        CaughtUp(-1)


_GAPS = st.one_of(st.integers(1, STALL_US), st.integers(STALL_US + 1, 10 * STALL_US))


@given(
    settle=st.integers(0, 2 * STALL_US),
    polls=st.lists(st.tuples(_GAPS, st.booleans()), min_size=1, max_size=200),
)
def test_claims_never_reach_into_a_pause_nor_closer_than_the_margin(
    settle: int, polls: list[tuple[int, bool]]
) -> None:
    """Oracle: the poll times themselves — a claim made at poll ``k`` lies at least the margin
    before it, after the end of every pause before it, and is made whenever the source has
    been polled without a pause for the whole margin."""
    c = CaughtUp(settle)
    margin = settle + STALL_US
    t = 1_000_000_000
    resumed = t  # the first poll starts the source's first live stretch
    made: list[int] = []
    for k, (gap, caught_up) in enumerate(polls):
        if k:
            t += gap
            if gap > STALL_US:
                resumed = t
        claim = c.vouch(t, caught_up=caught_up)
        if not caught_up:
            assert claim is None
            continue
        if t - resumed >= margin:
            assert claim == t - margin
        else:
            assert claim is None
        if claim is not None:
            assert claim >= resumed
            assert claim <= t - margin
            made.append(claim)
        assert c.latest_us == (max(made) if made else None)
