"""Run-wide limits of the LLM captioner (and the edit judge): requests and tokens per minute, a
concurrency cap, and a budget (requests and/or dollars) that is never exceeded.

The budget reserves each request's worst-case cost before the request is sent and settles it at the
answer's real cost: a request that does not fit in what is left is not sent (it is counted as skipped;
run again to go on). With `max_concurrency` requests in flight the reservations, not the answers that
have come back, are what is checked, so the answers still on their way can never take the run past its
budget. The Batch API path reserves every request of a batch before it is submitted.

The worst case is an upper bound of what the server can bill: every byte of the request's text as a
token, each image at the larger of OpenAI's tile count and a 14-pixel-patch vision encoder at
`image_max_side` (or `caption.max_image_tokens`), and the full `max_tokens` of answer. A server that
bills more than that bound is logged, and the run stops asking once the budget is spent.
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Any

from aiolimiter import AsyncLimiter

from ..config import CaptionConfig

log = logging.getLogger(__name__)


def estimated_tokens(cfg: CaptionConfig) -> int:
    """A pessimistic token estimate for the tokens-per-minute limiter."""
    per_image = 85 if cfg.image_detail == "low" else 85 + 170 * 4
    return 2 * per_image + 400 + cfg.max_tokens


def image_tokens(cfg: CaptionConfig) -> int:
    """The most one image of at most image_max_side pixels may be billed as."""
    if cfg.max_image_tokens is not None:
        return cfg.max_image_tokens
    openai_tiles = 85 if cfg.image_detail == "low" else 85 + 170 * 4  # at most 768 x 768: four 512-px tiles
    patches = math.ceil(cfg.image_max_side / 14) ** 2  # a ViT with 14-px patches, no merging
    return max(openai_tiles, patches)


def worst_case_cost(cfg: CaptionConfig, body: dict[str, Any]) -> float:
    """The most a request with this body can cost, in dollars (see the module's doc)."""
    text = images = 0
    for message in body.get("messages", []):
        content = message.get("content")
        parts = [content] if isinstance(content, str) else list(content or [])
        for part in parts:
            if isinstance(part, str):
                text += len(part.encode())
            elif part.get("type") == "text":
                text += len(str(part.get("text", "")).encode())
            elif part.get("type") == "image_url":
                images += 1
    tokens_in = text + images * image_tokens(cfg) + 16 * len(body.get("messages", []))  # + per-message framing
    tokens_out = int(body.get("max_completion_tokens") or cfg.max_tokens)
    return (tokens_in * cfg.usd_per_1m_input_tokens + tokens_out * cfg.usd_per_1m_output_tokens) / 1e6


class Budget:
    """Requests and dollars of one run (see the module's doc). Single event loop: a reservation is
    checked and made without an await in between, so concurrent requests cannot both take the last room."""

    def __init__(self, max_requests: int | None, max_cost_usd: float | None):
        self.max_requests = max_requests
        self.max_cost = max_cost_usd
        self.requests = 0  # reserved or sent
        self.cost = 0.0  # settled: what the answers cost
        self.reserved = 0.0  # worst cases of the requests still in flight

    def reserve(self, worst: float) -> bool:
        """Room for one more request that costs at most `worst`: reserved, True; else False."""
        if self.max_requests is not None and self.requests >= self.max_requests:
            return False
        if self.max_cost is not None and self.cost + self.reserved + worst > self.max_cost + 1e-12:
            return False
        self.requests += 1
        self.reserved += worst
        return True

    def settle(self, worst: float, actual: float) -> None:
        """The request reserved at `worst` was answered (or failed) and costs `actual`."""
        self.reserved = max(0.0, self.reserved - worst)
        self.cost += actual
        if actual > worst + 1e-12:
            log.warning(
                "the server billed %.6f USD for a request bounded at %.6f: set caption.max_image_tokens higher",
                actual,
                worst,
            )

    def spent(self) -> bool:
        """Nothing more can be asked (the request count is reached or the dollars are gone)."""
        return (self.max_requests is not None and self.requests >= self.max_requests) or (
            self.max_cost is not None and self.cost + self.reserved >= self.max_cost
        )


def rate_limits(cfg: CaptionConfig) -> tuple[AsyncLimiter, AsyncLimiter, asyncio.Semaphore]:
    """Requests per minute (capacity 1: never more than the configured rate in any window, no burst at
    the start), tokens per minute, and the concurrency cap; made once per event loop and shared by every
    request of the run."""
    rpm = AsyncLimiter(1, 60.0 / cfg.requests_per_minute)
    tpm = AsyncLimiter(max(cfg.tokens_per_minute, estimated_tokens(cfg)), 60.0)
    return rpm, tpm, asyncio.Semaphore(cfg.max_concurrency)
