"""An OpenAI-compatible chat-completions provider over httpx (any server speaking
``POST {base_url}/chat/completions``: OpenAI, vLLM, llama.cpp, Ollama, LiteLLM...).

Why this shape: the request is built only from the structured
:class:`~trading.core.ports.ReviewRequest` — a fixed system prompt, then the request JSON-encoded as
the single user message — so no text from an untrusted source is ever concatenated into
instructions. The provider never raises for provider faults: timeouts, transport errors, non-2xx
answers and malformed envelopes come back as :class:`~trading.core.ports.ProviderReply` errors with
a bounded kind prefix (``timeout``, ``transport``, ``http_status``, ``too_large``, ``envelope``),
and the policy decides. The API key is only ever placed in the ``Authorization`` header; it is never
logged and never part of an error text.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import msgspec

from torghut.config import LlmSettings
from trading.core.domain import canonical_json
from trading.core.llm.contract import (
    PROMPT_VERSION,
    SYSTEM_PROMPT,
    AmbiguousJson,
    check_unambiguous,
)
from trading.core.ports import ProviderReply, ReviewRequest

__all__ = ["OpenAiChatReviewer"]


class _Message(msgspec.Struct):
    content: str | None = None


class _Choice(msgspec.Struct):
    message: _Message


class _Usage(msgspec.Struct):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


class _Completion(msgspec.Struct):
    """The chat-completions envelope; providers add fields, so unknown keys are tolerated here
    (the model's own answer inside ``content`` is the strictly validated part)."""

    choices: list[_Choice]
    usage: _Usage | None = None


class OpenAiChatReviewer:
    """:class:`~trading.core.ports.Reviewer` over an OpenAI-compatible chat-completions endpoint.

    ``LLM_TIMEOUT_S`` is the deadline of the whole exchange — connect, request, status line,
    headers and every byte of the body — not of each read: a server dripping one byte a second
    must not stretch a review to minutes. The exchange runs on a short-lived helper thread and
    the caller waits for it at most until the deadline; at the deadline the caller returns a
    ``timeout`` reply and the helper, abandoned, stops at its next byte or read timeout (both
    bounded by the same deadline), so no thread outlives its call by more than that. Bodies
    are capped at ``LLM_MAX_RESPONSE_BYTES`` (a declared larger ``Content-Length`` fails before
    any of it is read; compressed bodies are refused, so the cap counts what is decoded) and
    redirects are never followed (a 3xx is an ``http_status`` error).
    """

    def __init__(self, settings: LlmSettings) -> None:
        if not settings.base_url or not settings.model:
            raise ValueError("LLM review needs LLM_BASE_URL and LLM_MODEL")
        # Identity only: the byte cap counts what is read, and a compressed body could expand
        # far beyond it in one decoded chunk.
        headers = {"Content-Type": "application/json", "Accept-Encoding": "identity"}
        if settings.api_key is not None:
            headers["Authorization"] = f"Bearer {settings.api_key.get_secret_value()}"
        self._model = settings.model
        self._deadline_s = settings.timeout_s
        self._max_bytes = settings.max_response_bytes
        self._client = httpx.Client(
            base_url=settings.base_url.rstrip("/"),
            headers=headers,
            timeout=httpx.Timeout(settings.timeout_s),
            follow_redirects=False,
        )

    @property
    def model(self) -> str:
        return self._model

    @property
    def deadline_s(self) -> float:
        return self._deadline_s

    def close(self) -> None:
        self._client.close()

    def review(self, request: ReviewRequest) -> ProviderReply:
        body = {
            "model": self._model,
            "temperature": 0,
            "response_format": {"type": "json_object"},
            "messages": [
                {"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": _user_message(request)},
            ],
        }
        started = time.monotonic()
        exchange = _Exchange(started + self._deadline_s)
        threading.Thread(
            target=self._exchange, args=(body, exchange), name="llm-review-http", daemon=True
        ).start()
        if not exchange.done.wait(self._deadline_s):
            exchange.abandoned = True
            return self._reply(
                started, error=f"timeout: no complete answer within {self._deadline_s:g}s"
            )
        if exchange.error is not None:
            return self._reply(started, error=exchange.error)
        text = exchange.body.decode("utf-8", errors="replace")
        if exchange.status != 200:
            return self._reply(started, error=f"http_status: {exchange.status}", content=text)
        try:
            check_unambiguous(exchange.body)
            completion = msgspec.json.decode(exchange.body, type=_Completion)
            content = completion.choices[0].message.content
        except (AmbiguousJson, msgspec.DecodeError, IndexError) as exc:
            return self._reply(started, error=f"envelope: {exc}", content=text)
        usage = completion.usage or _Usage()
        return self._reply(
            started,
            content=content,
            tokens_in=usage.prompt_tokens,
            tokens_out=usage.completion_tokens,
            error=None if content is not None else "envelope: no message content",
        )

    def _exchange(self, body: dict[str, Any], exchange: _Exchange) -> None:
        """The HTTP exchange on the helper thread; every wait bounded by the deadline."""
        remaining = exchange.deadline - time.monotonic()
        try:
            with self._client.stream(
                "POST", "/chat/completions", json=body, timeout=httpx.Timeout(max(remaining, 0.001))
            ) as resp:
                declared = resp.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > self._max_bytes:
                    exchange.fail(f"too_large: {declared} bytes declared > {self._max_bytes}")
                    return
                encoding = resp.headers.get("content-encoding", "identity").lower()
                if encoding not in ("", "identity"):
                    exchange.fail(f"envelope: content-encoding {encoding[:40]!r} not accepted")
                    return
                chunks: list[bytes] = []
                size = 0
                for chunk in resp.iter_raw():
                    if exchange.abandoned or time.monotonic() > exchange.deadline:
                        return
                    size += len(chunk)
                    if size > self._max_bytes:
                        exchange.fail(f"too_large: body over {self._max_bytes} bytes")
                        return
                    chunks.append(chunk)
                exchange.finish(resp.status_code, b"".join(chunks))
        except httpx.TimeoutException as exc:
            exchange.fail(f"timeout: {type(exc).__name__}")
        except (httpx.HTTPError, httpx.StreamError, httpx.InvalidURL) as exc:
            exchange.fail(f"transport: {type(exc).__name__}")

    def _reply(
        self,
        started: float,
        *,
        error: str | None,
        content: str | None = None,
        tokens_in: int | None = None,
        tokens_out: int | None = None,
    ) -> ProviderReply:
        return ProviderReply(
            model=self._model,
            content=content,
            latency_ms=round((time.monotonic() - started) * 1000),
            error=error,
            tokens_in=tokens_in,
            tokens_out=tokens_out,
        )


class _Exchange:
    """One HTTP exchange shared by the caller and its helper thread (``done`` set once)."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.done = threading.Event()
        self.abandoned = False
        self.status = 0
        self.body = b""
        self.error: str | None = None

    def finish(self, status: int, body: bytes) -> None:
        self.status, self.body = status, body
        self.done.set()

    def fail(self, error: str) -> None:
        self.error = error
        self.done.set()


def _user_message(request: ReviewRequest) -> str:
    """The request as canonical JSON; indicator rows reduced to their numbers and times."""
    doc: dict[str, Any] = {
        "prompt_version": PROMPT_VERSION,
        "order": {
            "decision_hash": request.decision_hash,
            "strategy_id": request.strategy_id,
            "strategy_version": request.strategy_version,
            "symbol": request.symbol,
            "side": request.side,
            "qty": request.qty,
            "min_qty": request.min_qty,
            "order_type": request.order_type,
            "limit_price": request.limit_price,
            "event_ts": request.event_ts,
            "params": request.params,
        },
        "recent_signals": [
            {
                "event_ts": row.event_ts,
                "window_size": row.window_size,
                **msgspec.structs.asdict(row.indicators),
            }
            for row in request.recent_signals
        ],
    }
    return canonical_json(doc)
