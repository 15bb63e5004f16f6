"""Optional, advisory LLM review of deterministic decisions (off by default: ``LLM_ENABLED``).

``contract`` holds the fixed prompt and the strict answer schema, ``policy`` what an answer may
do to a decision (and the circuit breaker). The OpenAI-compatible provider is an adapter:
:mod:`trading.adapters.openai_reviewer`.
"""

from trading.core.llm.contract import PROMPT_VERSION, SYSTEM_PROMPT, LlmVerdict
from trading.core.llm.policy import BreakerState, CircuitBreaker, DecisionReview, ReviewOutcome

__all__ = [
    "PROMPT_VERSION",
    "SYSTEM_PROMPT",
    "BreakerState",
    "CircuitBreaker",
    "DecisionReview",
    "LlmVerdict",
    "ReviewOutcome",
]
