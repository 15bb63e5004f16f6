"""Exec probes for the dataflow pods, read from the process's own Prometheus ``/metrics``.

Why exec probes: a Bytewax process serves no HTTP of ours. With ``BYTEWAX_DATAFLOW_API_ENABLED``
set, Bytewax serves ``/metrics`` (port ``BYTEWAX_DATAFLOW_API_PORT``, 3030 by default) with its
own series plus every ``prometheus_client`` metric of the process (``shared/bytewax-notes.md``
§5.3). The facts a probe needs are already metrics there:

* readiness of ingest = ``torghut_ingest_ready 1``: the Alpaca websocket is connected,
  authenticated and subscribed (``operators.alpaca_ws`` sets it only in state ``healthy``;
  401/402/406 keep it at 0);
* readiness of trading = ``torghut_trading_halted 0``: the start-up reconciliation has
  completed and no drift halts orders (``trading.core.reconcile``);
* liveness of every dataflow = the worker loop still polls its inputs: the count of
  ``bytewax_inp_part_next_batch_duration_seconds`` observations changed since the previous
  probe. It does not depend on Alpaca, Kafka or the market being open (sources are polled even
  when idle), but it stops when a worker hangs — e.g. the survivor of a partial Bytewax cluster
  failure, which panics without exiting (bytewax-notes §5.2) — so the kubelet restarts it.

Usage (exit 0 = pass, 1 = fail with the reason on stderr, which the kubelet records)::

    python -m infra.k8s.probe [--url URL] require torghut_ingest_ready=1
    python -m infra.k8s.probe [--url URL] advancing \\
        bytewax_inp_part_next_batch_duration_seconds_count --state /tmp/liveness.json

Only the standard library and ``prometheus_client`` (whose parser reads the exposition) are
imported, so a probe costs one short Python start.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

__all__ = ["DEFAULT_URL", "changed", "main", "sample_total", "unmet"]

DEFAULT_URL = "http://127.0.0.1:3030/metrics"


def samples(text: str, name: str) -> list[float]:
    """Values of every sample called ``name`` (any labels) in a Prometheus exposition."""
    return [
        float(s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    ]


def unmet(text: str, requirements: Iterable[tuple[str, float]]) -> list[str]:
    """Why ``text`` fails the ``name == value`` requirements (empty = all met).

    A requirement holds when the metric has at least one sample and every sample equals
    ``value``: a missing metric is a failure, not a pass.
    """
    problems = []
    for name, value in requirements:
        found = samples(text, name)
        if not found:
            problems.append(f"{name} is not exported (yet)")
        elif any(v != value for v in found):
            problems.append(f"{name} is {', '.join(f'{v:g}' for v in found)}, want {value:g}")
    return problems


def sample_total(text: str, name: str) -> float | None:
    """Sum of the samples called ``name``, None when there is none."""
    found = samples(text, name)
    return math.fsum(found) if found else None


def changed(previous: float | None, current: float | None) -> bool:
    """Liveness rule: the counter exists and moved since the last probe (the first probe passes).

    "Moved", not "grew": a restarted container starts its counters at zero again while the
    state file (on the pod's ``/tmp`` volume) keeps the old value.
    """
    if current is None:
        return False
    return previous is None or current != previous


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.k8s.probe", description=__doc__)
    parser.add_argument("--url", default=DEFAULT_URL, help="the process's metrics endpoint")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds for the scrape")
    sub = parser.add_subparsers(dest="mode", required=True)
    req = sub.add_parser("require", help="every NAME=VALUE holds")
    req.add_argument("conditions", nargs="+", metavar="NAME=VALUE")
    adv = sub.add_parser("advancing", help="the sum of NAME moved since the previous probe")
    adv.add_argument("name")
    adv.add_argument("--state", type=Path, required=True, help="file keeping the last value")
    args = parser.parse_args(argv)

    try:
        with urllib.request.urlopen(args.url, timeout=args.timeout) as response:
            text = response.read().decode()
    except (urllib.error.URLError, OSError) as exc:
        print(f"cannot scrape {args.url}: {exc}", file=sys.stderr)
        return 1

    if args.mode == "require":
        try:
            wanted = [_condition(c) for c in args.conditions]
        except ValueError as exc:
            parser.error(str(exc))
        problems = unmet(text, wanted)
        for problem in problems:
            print(problem, file=sys.stderr)
        return 1 if problems else 0

    current = sample_total(text, args.name)
    previous = _read_state(args.state)
    args.state.write_text(json.dumps({"value": current}))
    if changed(previous, current):
        return 0
    if current is None:
        print(f"{args.name} is not exported", file=sys.stderr)
    else:
        print(f"{args.name} stuck at {current:g} since the previous probe", file=sys.stderr)
    return 1


def _condition(text: str) -> tuple[str, float]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise ValueError(f"condition {text!r} is not NAME=VALUE")
    try:
        return name, float(value)
    except ValueError:
        raise ValueError(f"condition {text!r}: {value!r} is not a number") from None


def _read_state(path: Path) -> float | None:
    try:
        value = json.loads(path.read_text())["value"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return float(value) if isinstance(value, int | float) else None


if __name__ == "__main__":
    sys.exit(main())
