"""One input step per flow: Bytewax keeps an epoch clock per input step, and separate steps
wait for each other at every epoch end (``operators/one_input.py``) — so the TA flow reads its
market topics and its heartbeat through one step, and the source that makes that possible
keeps each partition with the source that listed it."""

from __future__ import annotations

import pytest
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from dataflows.ta import build_flow
from operators.graceful_stop import GracefulStop
from operators.one_input import one_input
from operators.ta_status import TaProgress
from tests.helpers import all_steps
from torghut.config import load_settings


class _Part(StatefulSourcePartition[str, int]):
    def __init__(self, name: str, resume: int | None) -> None:
        self.name, self.resume = name, resume

    def next_batch(self) -> list[str]:
        return [self.name]

    def snapshot(self) -> int:
        return 0


class _Named(FixedPartitionedSource[str, int]):
    def __init__(self, *keys: str) -> None:
        self.keys = keys
        self.listed = 0

    def list_parts(self) -> list[str]:
        self.listed += 1
        return list(self.keys)

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _Part:
        assert for_part in self.keys
        return _Part(f"{id(self)}:{for_part}", resume_state)


def test_parts_of_both_built_by_the_source_that_listed_them() -> None:
    a, b = _Named("0-trades", "1-trades"), _Named("ta-status")
    source = one_input(a, b)
    assert source.list_parts() == ["0-trades", "1-trades", "ta-status"]
    part = source.build_part("input", "ta-status", 7)
    assert isinstance(part, _Part)
    assert part.name == f"{id(b)}:ta-status"
    assert part.resume == 7


def test_a_resumed_part_is_found_before_the_parts_were_listed() -> None:
    a, b = _Named("0-trades"), _Named("ta-status")
    part = one_input(a, b).build_part("input", "0-trades", 3)
    assert isinstance(part, _Part)
    assert part.name == f"{id(a)}:0-trades"
    assert (a.listed, b.listed) == (1, 1)


def test_clear_errors_for_a_shared_key_and_an_unknown_one() -> None:
    with pytest.raises(ValueError, match="'0-x' is listed by _Named and by _Named"):
        one_input(_Named("0-x"), _Named("0-x")).list_parts()
    with pytest.raises(ValueError, match="no source lists partition '9-gone'"):
        one_input(_Named("0-x"), _Named("ta-status")).build_part("input", "9-gone", None)


@pytest.mark.parametrize("backfill", [False, True])
def test_the_ta_flow_has_one_input_step(
    backfill: bool, kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)
    monkeypatch.setenv("TA_EXIT_AT_END", "true" if backfill else "false")
    flow = build_flow(load_settings(), TaProgress(), GracefulStop())
    inputs = [s.step_id for s in all_steps(flow) if type(s).__name__ == "input"]
    assert inputs == ["ta.input"]
    outputs = {s.step_id for s in all_steps(flow) if type(s).__name__ == "output"}
    assert any("status_kafka" in o for o in outputs) is not backfill, "no heartbeat in a backfill"
