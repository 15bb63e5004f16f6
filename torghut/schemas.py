"""JSON Schemas of Torghut's topics, generated from the msgspec structs, and their evolution check.

Why: the structs in :mod:`torghut.events` are the contract, but consumers outside this code base
(ClickHouse Kafka engines, other teams) read JSON. One schema per topic is generated from the
structs into ``infra/schemas/<topic>.json`` and committed; CI runs ``check``, which compares the
schema the code would generate now with the committed one and fails, naming the topic and the
field, when the change is not compatible.

Compatibility rules (both directions matter: old consumers read new messages during a rollout,
new consumers re-read old messages from the log):

* a required field is removed, or stops being required → old readers break;
* a new field is required (has no default) → old messages cannot be read;
* a field's type changes (``integer`` → ``number`` is the one allowed widening), a struct or
  union alternative disappears, a ``format`` changes;
* an enum loses values (narrowing) → old messages with those values are rejected.

Adding optional fields, widening enums and adding union alternatives pass. A breaking change
needs a new topic version (``torghut.<family>.v2``).

Usage::

    python -m torghut.schemas generate   # write infra/schemas/*.json (refuses breaking changes)
    python -m torghut.schemas check      # exit 1: incompatible; exit 2: compatible but stale
"""

from __future__ import annotations

import argparse
import json
import sys
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec

from torghut.dead_letters import DeadLetter
from torghut.events import TOPIC_PAYLOADS, Envelope

__all__ = [
    "SCHEMA_DIR",
    "Incompatibility",
    "check",
    "compare",
    "generate",
    "main",
    "topic_schemas",
    "topic_types",
]

SCHEMA_DIR = Path(__file__).resolve().parents[1] / "infra" / "schemas"
_DRAFT = "https://json-schema.org/draft/2020-12/schema"
_DEAD_LETTER_TOPICS = ("torghut.ingest.dlq.v1", "torghut.ta.dlq.v1")

Schema = dict[str, Any]


@dataclass(frozen=True)
class Incompatibility:
    """One backward-incompatible difference: where (topic, dotted field path) and what."""

    topic: str
    path: str
    problem: str

    def __str__(self) -> str:
        return f"{self.topic}: {self.path or '<root>'}: {self.problem}"


def topic_types() -> dict[str, Any]:
    """Message type per topic name (``torghut.<family>.v1`` from ``TOPIC_PAYLOADS``, DLQs)."""
    types: dict[str, Any] = {
        f"torghut.{family}.v1": Envelope[payload]  # type: ignore[valid-type]
        for family, payload in TOPIC_PAYLOADS.items()
    }
    types.update(dict.fromkeys(_DEAD_LETTER_TOPICS, DeadLetter))
    return dict(sorted(types.items()))


def topic_schemas() -> dict[str, Schema]:
    """The JSON Schema each topic's messages follow, as the code defines them now."""
    out: dict[str, Schema] = {}
    for topic, tp in topic_types().items():
        schema = msgspec.json.schema(tp)
        _mark_datetimes(schema, _structs_in(tp))
        out[topic] = {"$schema": _DRAFT, "title": topic, **schema}
    return out


def _structs_in(tp: Any) -> dict[str, type[msgspec.Struct]]:
    """Every struct class reachable from ``tp``, by class name."""
    found: dict[str, type[msgspec.Struct]] = {}
    pending = [tp]
    while pending:
        current = pending.pop()
        origin = typing.get_origin(current)
        if origin is not None:
            pending.extend(typing.get_args(current))
            current = origin
        if isinstance(current, type) and issubclass(current, msgspec.Struct):
            if current.__name__ not in found:
                found[current.__name__] = current
                pending.extend(f.type for f in msgspec.structs.fields(current))
        elif isinstance(current, types.UnionType):
            pending.extend(typing.get_args(current))
    return found


def _mark_datetimes(schema: Schema, structs: Mapping[str, type[msgspec.Struct]]) -> None:
    """Add ``"format": "date-time"`` to datetime fields (msgspec emits a bare string).

    Consumers outside Python need to know these strings are RFC 3339 times, and the
    compatibility check then sees a datetime turned into free text as a type change.
    """
    for definition in schema.get("$defs", {}).values():
        cls = structs.get(str(definition.get("title", "")).split("[", 1)[0])
        if cls is None:
            continue
        props = definition.get("properties", {})
        for f in msgspec.structs.fields(cls):
            if f.encode_name in props and _is_datetime(f.type):
                for alt in props[f.encode_name].get("anyOf", [props[f.encode_name]]):
                    if alt.get("type") == "string":
                        alt["format"] = "date-time"


def _is_datetime(tp: Any) -> bool:
    return tp is datetime or datetime in typing.get_args(tp)


def render(schema: Schema) -> str:
    """Canonical text of a schema file (stable key order, so diffs are meaningful)."""
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def compare(old: Schema, new: Schema, topic: str = "") -> list[Incompatibility]:
    """Every way in which ``new`` fails to stay compatible with ``old`` (empty: compatible)."""
    return _Comparison(old, new, topic).run()


def check(directory: Path = SCHEMA_DIR) -> tuple[list[Incompatibility], list[str]]:
    """Compare generated schemas with the committed ones in ``directory``.

    Returns (incompatibilities, stale topics). A topic whose committed file is missing, or
    differs in a compatible way, is stale: run ``generate`` and commit.
    """
    generated = topic_schemas()
    problems: list[Incompatibility] = []
    stale: list[str] = []
    committed = {p.stem: p for p in directory.glob("*.json")}
    for topic in sorted(set(committed) - set(generated)):
        problems.append(
            Incompatibility(topic, "", "topic schema removed (topic no longer defined)")
        )
    for topic, schema in generated.items():
        path = committed.get(topic)
        if path is None:
            stale.append(topic)
            continue
        old_text = path.read_text()
        problems.extend(compare(json.loads(old_text), schema, topic))
        if old_text != render(schema):
            stale.append(topic)
    return problems, stale


def generate(directory: Path = SCHEMA_DIR, *, allow_breaking: bool = False) -> list[Path]:
    """Write every topic schema into ``directory``; refuse a breaking change unless allowed."""
    problems, _ = check(directory)
    if problems and not allow_breaking:
        raise SchemaCompatibilityError(problems)
    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for topic, schema in topic_schemas().items():
        path = directory / f"{topic}.json"
        text = render(schema)
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
            written.append(path)
    return written


class SchemaCompatibilityError(ValueError):
    """The code's schemas break compatibility with the committed ones."""

    def __init__(self, problems: Sequence[Incompatibility]) -> None:
        self.problems = list(problems)
        super().__init__("incompatible schema changes:\n  " + "\n  ".join(map(str, problems)))


# --- structural comparison ------------------------------------------------------------------


class _Comparison:
    """Walks two schemas side by side, resolving each one's ``$ref`` s in its own ``$defs``."""

    def __init__(self, old: Schema, new: Schema, topic: str) -> None:
        self._old_defs: Mapping[str, Schema] = old.get("$defs", {})
        self._new_defs: Mapping[str, Schema] = new.get("$defs", {})
        self._old, self._new, self._topic = old, new, topic
        self._problems: list[Incompatibility] = []
        self._visited: set[tuple[str, str, str]] = set()

    def run(self) -> list[Incompatibility]:
        self._node("", self._old, self._new)
        return self._problems

    def _report(self, path: str, problem: str) -> None:
        self._problems.append(Incompatibility(self._topic, path, problem))

    def _alternatives(self, node: Schema, defs: Mapping[str, Schema]) -> list[Schema]:
        while "$ref" in node:
            node = defs[node["$ref"].rsplit("/", 1)[-1]]
        branches: list[Schema] | None = node.get("anyOf", node.get("oneOf"))
        if branches is not None:
            out: list[Schema] = []
            for alt in branches:
                out.extend(self._alternatives(alt, defs))
            return out
        return [node]

    def _node(self, path: str, old: Schema, new: Schema) -> None:
        key = (path, json.dumps(old, sort_keys=True), json.dumps(new, sort_keys=True))
        if key in self._visited:
            return
        self._visited.add(key)
        new_alts = self._alternatives(new, self._new_defs)
        for alt in self._alternatives(old, self._old_defs):
            self._alternative(path, alt, new_alts)

    def _alternative(self, path: str, old: Schema, new_alts: list[Schema]) -> None:
        kind = _kind(old)
        if kind == "enum":
            self._enum(path, old, new_alts)
            return
        if kind == "struct":
            match = _matching_struct(old, new_alts)
            if match is None:
                self._report(path, f"type changed: {_describe(old)} is no longer accepted")
            else:
                self._struct(path, old, match)
            return
        candidates = [n for n in new_alts if _accepts(n, old)]
        if not candidates:
            found = " | ".join(_describe(n) for n in new_alts)
            self._report(path, f"type changed from {_describe(old)} to {found}")
            return
        if kind == "array":
            self._node(f"{path}[]", old.get("items", {}), candidates[0].get("items", {}))
        elif kind == "map":
            old_values = old.get("additionalProperties", {})
            new_values = candidates[0].get("additionalProperties", {})
            if isinstance(old_values, dict) and isinstance(new_values, dict):
                self._node(f"{path}{{}}", old_values, new_values)

    def _enum(self, path: str, old: Schema, new_alts: list[Schema]) -> None:
        values = old["enum"] if "enum" in old else [old["const"]]
        accepted: set[str] = set()
        for alt in new_alts:
            if _kind(alt) == "enum":
                accepted.update(json.dumps(v) for v in alt.get("enum", [alt.get("const")]))
            else:
                accepted.update(json.dumps(v) for v in values if _accepts_value(alt, v))
        removed = [v for v in values if json.dumps(v) not in accepted]
        if removed:
            self._report(path, f"enum narrowed: values {removed} no longer accepted")

    def _struct(self, path: str, old: Schema, new: Schema) -> None:
        old_props: Mapping[str, Schema] = old.get("properties", {})
        new_props: Mapping[str, Schema] = new.get("properties", {})
        old_req, new_req = set(old.get("required", ())), set(new.get("required", ()))
        prefix = f"{path}." if path else ""
        for name, old_field in old_props.items():
            field_path = prefix + name
            if name not in new_props:
                if name in old_req:
                    self._report(field_path, "required field removed")
                continue
            if name in old_req and name not in new_req:
                self._report(field_path, "field no longer required (old readers need it)")
            if name in new_req and name not in old_req:
                self._report(field_path, "field became required (old messages may lack it)")
            self._node(field_path, old_field, new_props[name])
        for name in new_props.keys() - old_props.keys():
            if name in new_req:
                self._report(prefix + name, "new required field without default")


def _kind(node: Schema) -> str:
    if "enum" in node or "const" in node:
        return "enum"
    tp = node.get("type")
    if tp == "object":
        return "struct" if "properties" in node else "map"
    if isinstance(tp, str):
        return tp
    return "any"


def _describe(node: Schema) -> str:
    kind = _kind(node)
    if kind == "struct":
        return f"struct {node.get('title', '?')}"
    if "format" in node:
        return f"{kind} ({node['format']})"
    return kind


def _accepts(new: Schema, old: Schema) -> bool:
    """Does the non-struct, non-enum ``new`` alternative accept all values of ``old``?"""
    old_kind, new_kind = _kind(old), _kind(new)
    if new_kind == "any":
        return True
    if old_kind != new_kind and not (old_kind == "integer" and new_kind == "number"):
        return False
    return old.get("format") == new.get("format")


def _accepts_value(new: Schema, value: Any) -> bool:
    kind = _kind(new)
    return {
        "string": isinstance(value, str),
        "integer": isinstance(value, int) and not isinstance(value, bool),
        "number": isinstance(value, int | float) and not isinstance(value, bool),
        "boolean": isinstance(value, bool),
        "null": value is None,
        "any": True,
    }.get(kind, False)


def _matching_struct(old: Schema, new_alts: list[Schema]) -> Schema | None:
    structs = [n for n in new_alts if _kind(n) == "struct"]
    for alt in structs:
        if alt.get("title") == old.get("title"):
            return alt
    old_structs_tag = _tag(old)
    for alt in structs:
        if old_structs_tag is not None and _tag(alt) == old_structs_tag:
            return alt
    return structs[0] if len(structs) == 1 and old_structs_tag is None else None


def _tag(struct: Schema) -> str | None:
    """The tag value of a tagged struct (a required property with a single enum/const value)."""
    for name in struct.get("required", ()):
        prop = struct.get("properties", {}).get(name, {})
        values = prop.get("enum") if "enum" in prop else None
        if values is not None and len(values) == 1:
            return f"{name}={values[0]}"
        if "const" in prop:
            return f"{name}={prop['const']}"
    return None


# --- command line ---------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """``generate`` or ``check`` (see the module docstring); returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m torghut.schemas", description=__doc__)
    parser.add_argument("command", choices=("generate", "check"))
    parser.add_argument("--dir", type=Path, default=SCHEMA_DIR, help="schema directory")
    parser.add_argument(
        "--allow-breaking",
        action="store_true",
        help="generate even if incompatible (only together with a topic version bump)",
    )
    args = parser.parse_args(argv)
    if args.command == "generate":
        try:
            written = generate(args.dir, allow_breaking=args.allow_breaking)
        except SchemaCompatibilityError as exc:
            print(exc, file=sys.stderr)
            return 1
        for path in written:
            print(f"wrote {path}")
        return 0
    problems, stale = check(args.dir)
    for problem in problems:
        print(f"INCOMPATIBLE {problem}", file=sys.stderr)
    if problems:
        return 1
    if stale:
        print(
            "schemas out of date (compatible change) for: "
            + ", ".join(stale)
            + "\nrun `python -m torghut.schemas generate` and commit infra/schemas/",
            file=sys.stderr,
        )
        return 2
    print(f"{len(topic_schemas())} topic schemas up to date and compatible")
    return 0


if __name__ == "__main__":
    sys.exit(main())
