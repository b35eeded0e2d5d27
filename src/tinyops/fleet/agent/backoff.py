"""When to call the server next: jittered polling and exponential backoff on errors.

Polling: the server sets the interval; each wait is that interval times a uniform factor in
[1 - jitter, 1 + jitter] (jitter 0.1: ±10 %), so that devices started together (after a
power cut, a fleet reboot) spread out instead of hitting the server in lockstep.

Backoff, after a failed call: attempt n (0-based) waits a uniform time in
[0, min(cap, base × factor^n)] ("full jitter", as in the AWS Architecture Blog's
"Exponential Backoff And Jitter"): with base 1 s, factor 2, cap 300 s the ceilings are
1, 2, 4, ..., 256, 300, 300, ... seconds. The first success resets n to 0.
"""

from __future__ import annotations

import random
from typing import Final

DEFAULT_BASE_S: Final = 1.0
DEFAULT_FACTOR: Final = 2.0
DEFAULT_CAP_S: Final = 300.0
DEFAULT_POLL_JITTER: Final = 0.1
# factor ** 64 already exceeds any sensible cap; stops the power from overflowing.
_MAX_EXPONENT: Final = 64


def jittered_interval(
    interval_s: float, rng: random.Random, jitter: float = DEFAULT_POLL_JITTER
) -> float:
    """`interval_s` × uniform(1 - jitter, 1 + jitter), in seconds."""
    if not 0.0 <= jitter < 1.0:
        raise ValueError(f"jitter must lie in [0, 1), got {jitter}")
    return interval_s * rng.uniform(1.0 - jitter, 1.0 + jitter)


class Backoff:
    """Exponential backoff with full jitter; `next_delay()` after each failure."""

    def __init__(
        self,
        base_s: float = DEFAULT_BASE_S,
        factor: float = DEFAULT_FACTOR,
        cap_s: float = DEFAULT_CAP_S,
        rng: random.Random | None = None,
    ) -> None:
        if base_s <= 0 or factor < 1 or cap_s < base_s:
            raise ValueError(
                f"expected base_s > 0, factor >= 1 and cap_s >= base_s; got base_s={base_s}, "
                f"factor={factor}, cap_s={cap_s}"
            )
        self.base_s = base_s
        self.factor = factor
        self.cap_s = cap_s
        self.rng = rng if rng is not None else random.Random()
        self.attempt = 0

    def ceiling(self, attempt: int) -> float:
        """Longest wait of the given attempt, in seconds."""
        return min(self.cap_s, self.base_s * self.factor ** min(attempt, _MAX_EXPONENT))

    def next_delay(self) -> float:
        """Seconds to wait after one more failure."""
        delay = self.rng.uniform(0.0, self.ceiling(self.attempt))
        self.attempt += 1
        return delay

    def reset(self) -> None:
        """A call succeeded: the next failure starts again at the base."""
        self.attempt = 0


__all__ = ["Backoff", "jittered_interval"]
