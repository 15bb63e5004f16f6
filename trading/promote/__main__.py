"""``python -m trading.promote``: the promotion check and human sign-off, against the store.

::

    python -m trading.promote sign-off --run RUN_ID --approver alice --reason "reviewed params"
    python -m trading.promote check --run RUN_ID --policy promotion.toml [--baseline RUN_ID]

``check`` prints every failed reason (one per line, then the verdict as JSON), records the
verdict in ``promotion_verdicts`` and exits 1 when the run fails, 0 when it passes, 2 on a bad
argument, policy or unknown run. ``sign-off`` records who approved the run's subject (its
strategy versions, parameters and prompt version, by hash), when and why.
"""

from __future__ import annotations

import argparse
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import msgspec
from pydantic import ValidationError
from sqlalchemy.orm import Session, sessionmaker

from torghut.config import StoreSettings
from trading.adapters.store import create_engine, upgrade
from trading.backtest.records import get_run
from trading.promote.evidence import UnknownRun, gather
from trading.promote.policy import evaluate, load_policy
from trading.promote.records import record_signoff, record_verdict
from trading.promote.subject import subject_of


def main(argv: list[str] | None = None, *, store_url: str | None = None) -> int:
    args = _parse(argv)
    try:
        url = store_url or StoreSettings().url
        run_id = uuid.UUID(args.run)
        baseline = uuid.UUID(args.baseline) if getattr(args, "baseline", None) else None
        policy = load_policy(Path(args.policy)) if args.command == "check" else None
    except (ValidationError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    engine = create_engine(url)
    try:
        upgrade(engine)
        with sessionmaker(engine)() as session:
            if args.command == "sign-off":
                return _sign_off(session, run_id, args.approver, args.reason)
            assert policy is not None
            try:
                evidence, run = gather(
                    session,
                    run_id,
                    baseline,
                    paper_equity=policy.paper.equity,
                    now=datetime.now(UTC),
                )
            except UnknownRun as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 2
            reasons = evaluate(policy, evidence)
            subject = subject_of(run.inputs["strategies"], run.inputs.get("prompt_version"))
            verdict = record_verdict(
                session,
                run_id=run_id,
                subject=subject,
                digest=run.subject_hash,
                policy=msgspec.to_builtins(policy),
                reasons=reasons,
            )
            session.commit()
    finally:
        engine.dispose()
    for reason in reasons:
        print(f"FAIL: {reason}")
    print(msgspec.json.encode(verdict).decode())
    return 0 if verdict.passed else 1


def _sign_off(session: Session, run_id: uuid.UUID, approver: str, reason: str) -> int:
    run = get_run(session, run_id)
    if run is None:
        print(f"error: no backtest run {run_id} in backtest_runs", file=sys.stderr)
        return 2
    subject = subject_of(run.inputs["strategies"], run.inputs.get("prompt_version"))
    try:
        signoff_id = record_signoff(
            session, subject, run.subject_hash, approver=approver, reason=reason
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    session.commit()
    out = {"signoff": str(signoff_id), "subject_hash": run.subject_hash, "subject": subject}
    print(msgspec.json.encode(out).decode())
    return 0


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m trading.promote", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="evaluate a backtest run against a policy")
    check.add_argument("--run", required=True, help="backtest run id")
    check.add_argument("--policy", required=True, help="TOML policy file")
    check.add_argument("--baseline", help="baseline run id (LLM rates and stability)")
    sign = sub.add_parser("sign-off", help="record a human sign-off of a run's subject")
    sign.add_argument("--run", required=True, help="backtest run id whose subject is approved")
    sign.add_argument("--approver", required=True)
    sign.add_argument("--reason", required=True)
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main())
