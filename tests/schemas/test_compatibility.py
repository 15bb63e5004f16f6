"""The schema compatibility checker: committed schemas are current, breaking changes are named."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Literal

import msgspec
import pytest

from torghut.events import TOPIC_PAYLOADS, Envelope, IngestStatus, Trade, TradingStatus
from torghut.schemas import SCHEMA_DIR, check, compare, generate, main, render, topic_schemas

REPO = Path(__file__).resolve().parents[2]


def schema_of(tp: Any) -> dict[str, Any]:
    return msgspec.json.schema(tp)


def problems(old: Any, new: Any) -> list[str]:
    return [f"{p.path}: {p.problem}" for p in compare(schema_of(old), schema_of(new), "t")]


class V1(msgspec.Struct):
    price: float
    size: int
    side: Literal["buy", "sell"]
    note: str = ""


def test_committed_schemas_are_compatible_and_current() -> None:
    """What CI relies on: the code's schemas match infra/schemas/ (run `generate` if stale)."""
    incompatible, stale = check(SCHEMA_DIR)
    assert incompatible == []
    assert stale == []


def test_check_command_passes_on_the_committed_schemas() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "torghut.schemas", "check"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert "up to date and compatible" in run.stdout


def test_every_topic_has_a_schema() -> None:
    topics = set(topic_schemas())
    assert {f"torghut.{family}.v1" for family in TOPIC_PAYLOADS} <= topics
    assert {"torghut.ingest.dlq.v1", "torghut.ta.dlq.v1"} <= topics


def test_identical_and_additive_changes_pass() -> None:
    class V2(msgspec.Struct):
        price: float
        size: float  # integer -> number is a widening
        side: Literal["buy", "sell", "short"]  # enum widened
        note: str = ""
        venue: str | None = None  # new optional field

    assert problems(V1, V1) == []
    assert problems(V1, V2) == []


def test_removed_required_field_is_named() -> None:
    class V2(msgspec.Struct):
        price: float
        side: Literal["buy", "sell"]
        note: str = ""

    assert problems(V1, V2) == ["size: required field removed"]


def test_removed_optional_field_passes() -> None:
    class V2(msgspec.Struct):
        price: float
        size: int
        side: Literal["buy", "sell"]

    assert problems(V1, V2) == []


def test_changed_type_is_named() -> None:
    class V2(msgspec.Struct):
        price: str
        size: int
        side: Literal["buy", "sell"]
        note: str = ""

    assert problems(V1, V2) == ["price: type changed from number to string"]


def test_narrowed_number_is_a_type_change() -> None:
    class V2(msgspec.Struct):
        price: int
        size: int
        side: Literal["buy", "sell"]
        note: str = ""

    assert problems(V1, V2) == ["price: type changed from number to integer"]


def test_new_required_field_without_default_is_named() -> None:
    class V2(msgspec.Struct):
        price: float
        size: int
        side: Literal["buy", "sell"]
        venue: str
        note: str = ""

    assert problems(V1, V2) == ["venue: new required field without default"]


def test_enum_narrowing_is_named() -> None:
    class V2(msgspec.Struct):
        price: float
        size: int
        side: Literal["buy"]
        note: str = ""

    assert problems(V1, V2) == ["side: enum narrowed: values ['sell'] no longer accepted"]


def test_required_to_optional_and_back_are_named() -> None:
    class Loose(msgspec.Struct):
        price: float
        side: Literal["buy", "sell"]
        size: int = 0
        note: str = ""

    class Strict(msgspec.Struct):
        price: float
        size: int
        side: Literal["buy", "sell"]
        note: str

    assert problems(V1, Loose) == ["size: field no longer required (old readers need it)"]
    assert problems(V1, Strict) == ["note: field became required (old messages may lack it)"]


def test_nested_payload_change_names_the_path() -> None:
    class Trade2(msgspec.Struct, frozen=True):
        trade_id: str  # was int
        exchange: str
        price: float
        size: float
        conditions: tuple[str, ...] = ()
        tape: str = ""

    assert problems(Envelope[Trade], Envelope[Trade2]) == [
        "payload.trade_id: type changed from integer to string"
    ]


def test_array_item_and_optional_changes_are_found() -> None:
    class A(msgspec.Struct):
        tags: tuple[str, ...]
        limit: float | None = None

    class B(msgspec.Struct):
        tags: tuple[int, ...]
        limit: float = 0.0

    assert problems(A, B) == [
        "tags[]: type changed from string to integer",
        "limit: type changed from null to number",
    ]


def test_removed_union_alternative_is_named() -> None:
    both = Envelope[TradingStatus | IngestStatus]  # type: ignore[valid-type]
    assert problems(both, Envelope[TradingStatus]) == [
        "payload: type changed: struct IngestStatus is no longer accepted"
    ]
    assert problems(Envelope[TradingStatus], both) == []


@pytest.fixture
def schema_copy(tmp_path: Path) -> Path:
    target = tmp_path / "schemas"
    shutil.copytree(SCHEMA_DIR, target)
    return target


def _edit(path: Path, edit: Any) -> None:
    schema = json.loads(path.read_text())
    edit(schema)
    path.write_text(render(schema))


def test_check_cli_fails_naming_the_field(
    schema_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Pretend the committed schema had a required field the code no longer has."""

    def add_required(schema: dict[str, Any]) -> None:
        trade = schema["$defs"]["Trade"]
        trade["properties"]["venue_id"] = {"type": "integer"}
        trade["required"].append("venue_id")

    _edit(schema_copy / "torghut.trades.v1.json", add_required)
    assert main(["check", "--dir", str(schema_copy)]) == 1
    err = capsys.readouterr().err
    assert "torghut.trades.v1: payload.venue_id: required field removed" in err
    with pytest.raises(ValueError, match=r"payload\.venue_id"):
        generate(schema_copy)
    assert main(["generate", "--dir", str(schema_copy)]) == 1


def test_check_cli_reports_stale_and_generate_fixes_it(
    schema_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def drop_optional(schema: dict[str, Any]) -> None:
        del schema["$defs"]["Quote"]["properties"]["tape"]

    _edit(schema_copy / "torghut.quotes.v1.json", drop_optional)
    (schema_copy / "torghut.bars.v1.json").unlink()
    assert main(["check", "--dir", str(schema_copy)]) == 2
    assert "torghut.bars.v1, torghut.quotes.v1" in capsys.readouterr().err
    assert main(["generate", "--dir", str(schema_copy)]) == 0
    assert main(["check", "--dir", str(schema_copy)]) == 0


def test_removed_topic_is_incompatible(schema_copy: Path) -> None:
    shutil.copy(schema_copy / "torghut.trades.v1.json", schema_copy / "torghut.gone.v1.json")
    incompatible, _ = check(schema_copy)
    assert [str(p) for p in incompatible] == [
        "torghut.gone.v1: <root>: topic schema removed (topic no longer defined)"
    ]


def test_datetimes_are_marked_and_turning_one_into_text_is_a_type_change() -> None:
    trades = topic_schemas()["torghut.trades.v1"]
    envelope = trades["$defs"][trades["$ref"].rsplit("/", 1)[-1]]
    assert envelope["properties"]["event_ts"] == {"type": "string", "format": "date-time"}
    as_text = json.loads(json.dumps(trades))
    as_text["$defs"][trades["$ref"].rsplit("/", 1)[-1]]["properties"]["event_ts"] = {
        "type": "string"
    }
    assert [str(p) for p in compare(trades, as_text, "torghut.trades.v1")] == [
        "torghut.trades.v1: event_ts: type changed from string (date-time) to string"
    ]
