"""When the trading loop reads new signal rows: never more than an interval apart, and close
behind each signal window's rows when they come at the window's pace."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from operators.trading_source import PROBE_LEAD, PollSchedule

T0 = datetime(2026, 1, 2, 15, 0, tzinfo=UTC)
INTERVAL, CADENCE, PROBE = timedelta(seconds=0.5), timedelta(seconds=1), timedelta(seconds=0.05)


def _at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_without_a_probe_it_polls_every_interval() -> None:
    s = PollSchedule(INTERVAL, CADENCE, timedelta(0))
    assert s.next_poll(_at(0), found=True) == _at(0.5)
    assert s.next_poll(_at(0.5), found=False) == _at(1.0)
    assert s.next_poll(_at(1.0), found=False) == _at(1.5)


def test_it_probes_from_the_lead_before_one_window_after_the_last_rows_until_they_come() -> None:
    s = PollSchedule(INTERVAL, CADENCE, PROBE)
    assert s.next_poll(_at(0), found=True) == _at(0.5), "the interval still bounds the gap"
    assert s.next_poll(_at(0.5), found=False) == _at(1) - PROBE_LEAD
    polls = [_at(1) - PROBE_LEAD]
    while polls[-1] < _at(1.02):  # the rows of the next window come at 1.02
        polls.append(s.next_poll(polls[-1], found=False))
    assert polls[-1] - _at(1.02) <= PROBE, "found within one probe of their arrival"
    assert all(b - a == PROBE for a, b in itertools.pairwise(polls))
    found, before = polls[-1], polls[-2]
    assert s.next_poll(found, found=True) == found + INTERVAL
    assert s.next_poll(found + INTERVAL, found=False) == before + CADENCE - PROBE_LEAD, (
        "the rows came after the last empty poll: probing begins a lead before a window after it"
    )


def test_rows_that_do_not_come_at_the_windows_pace_fall_back_to_the_interval() -> None:
    s = PollSchedule(INTERVAL, CADENCE, PROBE)
    s.next_poll(_at(0), found=True)
    end = _at(1) + INTERVAL + PROBE_LEAD  # probing ends an interval and a lead past the time due
    t, polls = _at(0.5), 0
    while t < end:
        t = s.next_poll(t, found=False)
        polls += 1
    assert polls <= (2 * PROBE_LEAD + INTERVAL) / PROBE + 2
    assert s.next_poll(end, found=False) == end + INTERVAL
    assert s.next_poll(end + INTERVAL, found=False) == end + 2 * INTERVAL, "quiet: nothing more"


@given(
    steps=st.lists(st.tuples(st.booleans(), st.floats(min_value=0.0, max_value=1.0)), max_size=60),
    probe_ms=st.integers(min_value=0, max_value=400),
)
def test_the_next_poll_is_never_now_nor_more_than_an_interval_away(
    steps: list[tuple[bool, float]], probe_ms: int
) -> None:
    """Whatever the polls found and however late they ran, the next one is after this one
    (no busy loop) and at most an interval later (the decision-lag bound)."""
    s = PollSchedule(INTERVAL, CADENCE, timedelta(milliseconds=probe_ms))
    now = T0
    for found, late_s in steps:
        nxt = s.next_poll(now, found=found)
        assert now < nxt <= now + INTERVAL
        now = nxt + timedelta(seconds=late_s)  # the worker may poll late (a busy flow)


@given(
    jitter_ms=st.lists(st.integers(min_value=0, max_value=150), min_size=3, max_size=30),
    first_s=st.floats(min_value=0.0, max_value=1.0),
)
def test_rows_coming_once_a_window_with_jitter_are_found_within_a_probe(
    jitter_ms: list[int], first_s: float
) -> None:
    """Windows' rows arriving at ``k`` s plus up to 150 ms of jitter (the TA flow's spread):
    after the first, every window's rows are found within one probe of their arrival (only
    the first may wait up to an interval), whatever the phase of the first poll."""
    arrivals = [_at(first_s + 1 + k + j / 1000) for k, j in enumerate(jitter_ms)]
    s = PollSchedule(INTERVAL, CADENCE, PROBE)
    now, waits, pending = T0, [], list(arrivals)
    while pending:
        found = pending[0] <= now
        if found:
            waits.append(now - pending.pop(0))
        now = s.next_poll(now, found=found)
    assert waits[0] <= INTERVAL
    assert max(waits[1:]) <= PROBE, waits
