"""Tokens and their price: the worst case a request may cost (its hold) and what it did cost.

**Prompt tokens are estimated from above, never below.** OpenAI's tokenizers (and every
byte-level BPE tokenizer) turn each token into at least one byte of UTF-8, so a text of
``n`` bytes is at most ``n`` tokens. The estimate of a chat request is the UTF-8 size of
every string in its messages plus 4 tokens per message and 3 for the reply's priming
(OpenAI's published framing overhead). It is larger than the real count — often about
four times — which only makes the hold larger: the commit charges the upstream's
``usage``. (``tiktoken`` would give the exact count, but it downloads its encodings from
the internet at first use, which a gateway must not depend on.)

Prices are micro-units per million tokens; a cost is rounded **up** to the micro-unit,
once per request: ``ceil((prompt * input_price + completion * output_price) / 10**6)``.
"""

from __future__ import annotations

from collections.abc import Iterable

from .config import TargetConfig

__all__ = ["cost", "estimate_embedding_tokens", "estimate_prompt_tokens"]

PER_MESSAGE = 4
REPLY_PRIMING = 3
TOKENS_PER = 1_000_000


def _text_bytes(value: object) -> int:
    """The UTF-8 size of every string in a JSON value (keys included)."""
    if isinstance(value, str):
        return len(value.encode("utf-8", "surrogatepass"))
    if isinstance(value, dict):
        return sum(_text_bytes(k) + _text_bytes(v) for k, v in value.items())
    if isinstance(value, list):
        return sum(_text_bytes(v) for v in value)
    return len(str(value)) if value is not None else 0


def estimate_prompt_tokens(messages: Iterable[object], tools: object = None) -> int:
    """An upper bound of the prompt tokens of a chat request."""
    count = REPLY_PRIMING + _text_bytes(tools)
    for message in messages:
        count += PER_MESSAGE + _text_bytes(message)
    return count


def estimate_embedding_tokens(value: object) -> int:
    """An upper bound of the tokens of an embeddings ``input`` (text, texts, or token ids)."""
    if isinstance(value, list) and value and all(isinstance(v, int) for v in value):
        return len(value)  # already tokens
    if isinstance(value, list) and value and all(isinstance(v, list) for v in value):
        return sum(len(v) for v in value)
    return max(1, _text_bytes(value))


def cost(target: TargetConfig, prompt_tokens: int, completion_tokens: int) -> int:
    """What the tokens cost at ``target``'s prices, in micro-units, rounded up."""
    total = prompt_tokens * target.input_price + completion_tokens * target.output_price
    return -(-total // TOKENS_PER)
