"""Hetzner's rate limit: a bucket per project that refills steadily and answers 429 when empty."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from lab.hcloud_api.config import RateLimit


@dataclass
class Bucket:
    settings: RateLimit
    clock: Callable[[], float] = time.time
    tokens: float = field(init=False)
    updated: float = field(init=False)

    def __post_init__(self) -> None:
        self.tokens = float(self.settings.limit)
        self.updated = self.clock()

    def take(self) -> bool:
        """One request: True when it may go ahead (and was counted), False when the bucket is empty."""
        now = self.clock()
        self.tokens = min(self.settings.limit, self.tokens + (now - self.updated) * self.settings.refill_per_second)
        self.updated = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True

    def headers(self) -> dict[str, str]:
        missing = self.settings.limit - self.tokens
        full_at = self.updated + missing / self.settings.refill_per_second
        return {
            "RateLimit-Limit": str(self.settings.limit),
            "RateLimit-Remaining": str(math.floor(self.tokens)),
            "RateLimit-Reset": str(math.ceil(full_at)),
        }
