"""The review policy: what an LLM answer is allowed to do to a deterministic decision.

Why a policy separate from the provider: the model is advisory and untrusted (OWASP LLM Top 10:
its output is input). Whatever a provider returns, this module alone decides the effect, and
the effect is bounded: approve (unchanged), veto (no order), or adjust — a *smaller* quantity,
at least ``LLM_MIN_QTY_RATIO`` × the original and above zero, same symbol, same side. Anything
else is a failure:

* transport faults, a call that misses its deadline (``LLM_TIMEOUT_S`` bounds the whole call),
  non-2xx answers (redirects included), oversized bodies, text that is not JSON, JSON with a
  repeated key, JSON that does not match :class:`~trading.core.llm.contract.LlmVerdict` (unknown
  keys included), NaN/infinite numbers;
* an answer that names another symbol or side, a larger or out-of-bounds quantity, an
  ``adjusted_qty`` without ``adjust`` (or the reverse);
* a ``reason`` carrying instruction-like or markup text (a sign that injected content steered
  the model; the text is stored for audit, never acted on).

An adjusted quantity within bounds is cut down to the symbol's increment
(:class:`~trading.core.quantity.QuantityRules`: whole shares unless the symbol is fractional), never
rounded up; one that rounds down to zero is a veto with that reason.

A failure applies the configured fallback (``pass``: the deterministic decision stands; ``veto``),
forced to ``veto`` in live mode, and counts towards the circuit breaker, which after
``LLM_BREAKER_FAILURES`` consecutive failures stops calling the provider for
``LLM_BREAKER_RESET_S`` (then lets one trial call through). A valid answer below
``LLM_MIN_CONFIDENCE`` applies the fallback too, but is not a provider failure.

Shadow mode records everything and acts on nothing: the deterministic decision stands, also on
failure (the model is not in the loop, so its outage must not stop trading).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from decimal import Decimal
from enum import StrEnum
from typing import Literal

import msgspec
from prometheus_client import Counter

from torghut.config import LlmSettings
from torghut.logs import get_logger
from trading.core.clock import Clock
from trading.core.domain import Action, Decision, SignalRow
from trading.core.llm.contract import PROMPT_VERSION, AmbiguousJson, LlmVerdict, decode_verdict
from trading.core.ports import ProviderReply, Reviewer, ReviewRequest
from trading.core.quantity import QuantityRules

__all__ = [
    "MAX_RAW_RESPONSE_CHARS",
    "BreakerState",
    "CircuitBreaker",
    "DecisionReview",
    "ReviewOutcome",
]

MAX_RAW_RESPONSE_CHARS = 4000
"""Stored prefix of the raw model text (bounded: a hostile answer cannot bloat the store)."""

EffectiveVerdict = Literal["approve", "veto", "adjust"]

_log = get_logger("trading.core.llm")

REVIEWS = Counter(
    "torghut_llm_reviews_total",
    "LLM reviews by effective verdict and how it was reached",
    ["effective_verdict", "path"],
)
FAILURES = Counter("torghut_llm_review_failures_total", "LLM review failures by kind", ["kind"])

_INJECTION = re.compile(
    r"ignore (all |any )?(previous|prior|above)|disregard|system prompt|you are now|"
    r"new instructions|developer mode|jailbreak|<\s*/?\s*(system|script|im_start)|```|"
    r"[\x00-\x08\x0b-\x1f\x7f]",
    re.IGNORECASE,
)


class ReviewOutcome(msgspec.Struct, frozen=True):
    """One review, as stored in ``llm_decision_reviews``, and its effect on the decision."""

    model: str
    prompt_version: str
    effective_verdict: EffectiveVerdict
    effective_qty: Decimal
    shadow: bool
    fallback: bool
    latency_ms: int
    verdict: str | None = None
    confidence: float | None = None
    adjusted_qty: Decimal | None = None
    tokens_in: int | None = None
    tokens_out: int | None = None
    raw_response: str | None = None
    error: str | None = None

    @property
    def vetoed(self) -> bool:
        return self.effective_verdict == "veto"

    def apply(self, decision: Decision) -> Decision:
        """The decision to go on with: ``HOLD`` with qty 0 after a veto, else the final qty."""
        if self.vetoed:
            return msgspec.structs.replace(decision, action=Action.HOLD, qty=Decimal(0))
        return msgspec.structs.replace(decision, qty=self.effective_qty)


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Consecutive-failure breaker over a monotonic clock (injected for tests)."""

    def __init__(self, failures: int, reset_s: float, clock: Callable[[], float]) -> None:
        self._threshold = failures
        self._reset_s = reset_s
        self._clock = clock
        self._consecutive = 0
        self._opened_at: float | None = None

    @property
    def state(self) -> BreakerState:
        if self._opened_at is None:
            return BreakerState.CLOSED
        if self._clock() - self._opened_at < self._reset_s:
            return BreakerState.OPEN
        return BreakerState.HALF_OPEN

    def allow(self) -> bool:
        return self.state is not BreakerState.OPEN

    def success(self) -> None:
        self._consecutive = 0
        self._opened_at = None

    def failure(self) -> None:
        self._consecutive += 1
        if self.state is BreakerState.HALF_OPEN or self._consecutive >= self._threshold:
            self._opened_at = self._clock()


class _Rejected(Exception):
    """An answer the policy refuses; ``kind`` is a bounded metric label."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind


class DecisionReview:
    """Reviews decisions through a :class:`~trading.core.ports.Reviewer` under the policy above."""

    def __init__(
        self,
        reviewer: Reviewer,
        settings: LlmSettings,
        *,
        live: bool,
        quantity: QuantityRules | None = None,
        clock: Clock,
        recent_limit: int = 5,
    ) -> None:
        self._reviewer = reviewer
        self._quantity = quantity or QuantityRules()
        self.max_concurrency = settings.max_concurrency
        self.max_pending = settings.max_pending
        self._shadow = settings.shadow
        self._fallback: EffectiveVerdict = (
            "veto" if live or settings.fallback == "veto" else "approve"
        )
        self._min_confidence = settings.min_confidence
        self._min_ratio = Decimal(str(settings.min_qty_ratio))
        self._recent_limit = recent_limit
        self._clock = clock
        self.breaker = CircuitBreaker(
            settings.breaker_failures, settings.breaker_reset_s, clock.monotonic
        )

    def review(self, decision: Decision, recent: Sequence[SignalRow]) -> ReviewOutcome:
        """Ask the provider about one BUY/SELL decision and apply the policy to its answer."""
        if decision.action is Action.HOLD or decision.qty <= 0:
            raise ValueError("only orders (buy/sell with qty > 0) are reviewed")
        min_qty = decision.qty * self._min_ratio
        if not self.breaker.allow():
            FAILURES.labels(kind="circuit_open").inc()
            return self._finish(
                decision, ProviderReply(self._reviewer.model, None, 0), None, "circuit_open"
            )
        request = _request(decision, recent[-self._recent_limit :], min_qty)
        started = self._clock.monotonic()
        reply = self._reviewer.review(request)
        # The review's own duration, measured here whatever the provider reports.
        elapsed_ms = round((self._clock.monotonic() - started) * 1000)
        reply = msgspec.structs.replace(reply, latency_ms=elapsed_ms)
        try:
            answer = self._validate(decision, reply, min_qty)
        except _Rejected as exc:
            self.breaker.failure()
            FAILURES.labels(kind=exc.kind).inc()
            _log.warning(
                "llm_review_failed",
                decision_hash=request.decision_hash,
                kind=exc.kind,
                detail=str(exc)[:200],
                breaker=self.breaker.state.value,
            )
            return self._finish(decision, reply, None, f"{exc.kind}: {exc}")
        self.breaker.success()
        if answer.confidence < self._min_confidence:
            FAILURES.labels(kind="low_confidence").inc()
            error = f"low_confidence: {answer.confidence} < {self._min_confidence}"
            return self._finish(decision, reply, answer, error)
        return self._finish(decision, reply, answer, None)

    def skipped(self, decision: Decision, reason: str, *, veto: bool = False) -> ReviewOutcome:
        """The outcome of a review that never reached the model (``reason`` says why): the
        configured fallback, or a veto whatever the mode when ``veto`` is set (a stopping
        process sends nothing new)."""
        reply = ProviderReply(self._reviewer.model, None, 0)
        if veto:
            REVIEWS.labels(effective_verdict="veto", path="skipped").inc()
            return self._outcome(reply, None, "veto", Decimal(0), fallback=True, error=reason)
        FAILURES.labels(kind=reason.split(":", 1)[0]).inc()
        return self._finish(decision, reply, None, reason)

    def _validate(self, decision: Decision, reply: ProviderReply, min_qty: Decimal) -> LlmVerdict:
        if reply.error is not None or reply.content is None:
            kind = reply.error.split(":", 1)[0] if reply.error else "empty"
            raise _Rejected(kind if kind in _PROVIDER_KINDS else "provider", reply.error or "")
        try:
            answer = decode_verdict(reply.content)
        except AmbiguousJson as exc:
            raise _Rejected("ambiguous_json", str(exc)) from exc
        except msgspec.ValidationError as exc:
            raise _Rejected("schema", str(exc)) from exc
        except msgspec.DecodeError as exc:
            raise _Rejected("not_json", str(exc)) from exc
        if answer.symbol is not None and answer.symbol != decision.symbol:
            raise _Rejected("other_symbol", f"answer names {answer.symbol!r}")
        if answer.side is not None and answer.side != decision.action.value:
            raise _Rejected("other_side", f"answer names side {answer.side!r}")
        if _INJECTION.search(answer.reason):
            raise _Rejected("injection", "instruction-like text in reason")
        if answer.verdict == "adjust":
            qty = answer.adjusted_qty
            if qty is None or not qty.is_finite():
                raise _Rejected("qty_bounds", "adjust without a finite adjusted_qty")
            if qty > decision.qty:
                raise _Rejected("qty_bounds", f"adjusted_qty {qty} > qty {decision.qty}")
            if qty < min_qty or qty <= 0:
                raise _Rejected("qty_bounds", f"adjusted_qty {qty} below minimum {min_qty}")
        elif answer.adjusted_qty is not None:
            raise _Rejected("schema", f"adjusted_qty with verdict {answer.verdict}")
        return answer

    def _finish(
        self,
        decision: Decision,
        reply: ProviderReply,
        answer: LlmVerdict | None,
        error: str | None,
    ) -> ReviewOutcome:
        failed = error is not None
        effective: EffectiveVerdict
        if self._shadow:
            effective, qty, path = "approve", decision.qty, "shadow"
        elif failed or answer is None:
            effective = self._fallback
            qty = decision.qty if effective == "approve" else Decimal(0)
            path = "fallback"
        else:
            effective, path = answer.verdict, "model"
            if effective == "veto":
                qty = Decimal(0)
            elif effective == "adjust" and answer.adjusted_qty is not None:
                qty = self._quantity.round_down(decision.symbol, answer.adjusted_qty)
                if qty == 0:
                    effective = "veto"
                    error = (
                        f"quantised_to_zero: adjusted_qty {answer.adjusted_qty} is below one "
                        f"{decision.symbol} increment ({self._quantity.increment(decision.symbol)})"
                    )
            else:
                qty = decision.qty
        REVIEWS.labels(effective_verdict=effective, path=path).inc()
        return self._outcome(
            reply, answer, effective, qty, fallback=failed and not self._shadow, error=error
        )

    def _outcome(
        self,
        reply: ProviderReply,
        answer: LlmVerdict | None,
        effective: EffectiveVerdict,
        qty: Decimal,
        *,
        fallback: bool,
        error: str | None,
    ) -> ReviewOutcome:
        raw = reply.content[:MAX_RAW_RESPONSE_CHARS] if reply.content is not None else None
        return ReviewOutcome(
            model=reply.model,
            prompt_version=PROMPT_VERSION,
            effective_verdict=effective,
            effective_qty=qty,
            shadow=self._shadow,
            fallback=fallback,
            latency_ms=reply.latency_ms,
            verdict=answer.verdict if answer is not None else None,
            confidence=answer.confidence if answer is not None else None,
            adjusted_qty=answer.adjusted_qty if answer is not None else None,
            tokens_in=reply.tokens_in,
            tokens_out=reply.tokens_out,
            raw_response=raw,
            error=error[:1000] if error is not None else None,
        )


_PROVIDER_KINDS = frozenset({"timeout", "http_status", "transport", "too_large", "envelope"})


def _request(decision: Decision, recent: Sequence[SignalRow], min_qty: Decimal) -> ReviewRequest:
    return ReviewRequest(
        decision_hash=decision.decision_hash,
        strategy_id=decision.strategy_id,
        strategy_version=decision.strategy_version,
        symbol=decision.symbol,
        side="buy" if decision.action is Action.BUY else "sell",
        qty=decision.qty,
        order_type=decision.order_type,
        event_ts=decision.event_ts,
        params=decision.params,
        recent_signals=tuple(recent),
        min_qty=min_qty,
        limit_price=decision.limit_price,
    )
