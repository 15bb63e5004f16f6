"""``python -m trading.controls``: the runtime controls when the API is down.

Writes the same store rows as ``POST /trading/...`` (origin ``cli``), against ``TRADING_DB_URL``::

    python -m trading.controls engage --reason "broker incident"     # kill switch on
    python -m trading.controls release --reason "incident closed"
    python -m trading.controls cancel-all --reason "..."   # pending until the flow carries it out
    python -m trading.controls flatten --reason "..."
    python -m trading.controls resume --reason "drift explained"
    python -m trading.controls status                                # state + recent audit trail

Prints one JSON document; exit status 2 on a bad argument or setting.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import msgspec
from pydantic import ValidationError

from torghut.config import StoreSettings
from trading.adapters.store import ControlAction, ControlStore, Origin, create_engine, upgrade

_ACTIONS = {
    "engage": ControlAction.ENGAGE,
    "release": ControlAction.RELEASE,
    "cancel-all": ControlAction.CANCEL_ALL,
    "flatten": ControlAction.FLATTEN,
    "resume": ControlAction.RESUME,
}


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    try:
        url = StoreSettings().url
    except ValidationError as exc:
        print(f"TRADING_DB_URL: {exc.errors()[0]['msg']}", file=sys.stderr)
        return 2
    engine = create_engine(url)
    try:
        upgrade(engine)
        store = ControlStore(engine)
        out: dict[str, Any] = {}
        if args.command != "status":
            reason = (args.reason or "").strip()
            if not reason:
                print("--reason is required (it goes to the audit trail)", file=sys.stderr)
                return 2
            action = _ACTIONS[args.command]
            if action is ControlAction.RESUME:
                out["event"] = store.resume(reason, Origin.CLI)
            else:
                out["event"] = store.record(action, reason, Origin.CLI)
        out["state"] = store.state()
        if args.command == "status":
            out["events"] = store.events(args.limit)
    finally:
        engine.dispose()
    sys.stdout.write(msgspec.json.format(msgspec.json.encode(out)).decode() + "\n")
    return 0


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m trading.controls", description=__doc__.split("\n")[0]
    )
    p.add_argument("command", choices=[*_ACTIONS, "status"])
    p.add_argument("--reason", help="why (required except for status)")
    p.add_argument("--limit", type=int, default=20, help="audit rows shown by status")
    return p.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main())
