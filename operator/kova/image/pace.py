"""How long and how slowly an import may run (issue 17): a source that trickles holds an import slot, a
thread and a connection for as long as it likes unless something says stop. Two limits, checked while the
bytes stream: an overall deadline (KOVA_IMPORT_DEADLINE) and a minimum rate over a sliding window
(KOVA_IMPORT_MIN_RATE bytes/s over KOVA_IMPORT_MIN_RATE_WINDOW seconds). Zero turns a limit off."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from kova.api.errors import Refusal


@dataclass(frozen=True)
class Limits:
    deadline: float = 6 * 3600.0  # seconds for the whole transfer; 0: none
    min_rate: int = 1024  # bytes per second over `window`; 0: none
    window: float = 60.0  # seconds

    def tick(self) -> float:
        """How often to look: often enough that a limit is seen within a fraction of the window."""
        return max(0.1, min(1.0, self.window / 4))


@dataclass
class Pace:
    """The bytes an import had moved at moments of its run, kept for one window; `verdict` decides."""

    limits: Limits
    started: float
    samples: deque[tuple[float, int]] = field(default_factory=deque)

    def __post_init__(self) -> None:
        self.samples.append((self.started, 0))

    def verdict(self, now: float, done: int, total: int | None, store_waited: bool = False) -> Refusal | None:
        """None while the import may go on; otherwise why it must stop (its figures in the message). While the
        store is what holds the import back (`store_waited`), the rate window starts again: a slow store is
        not the source's fault, and a killed image is not retried."""
        if store_waited:
            self.samples.clear()
            self.samples.append((now, done))
            return verdict(Limits(self.limits.deadline, 0, self.limits.window), self.started, (now, done),
                           (now, done), total)
        self.samples.append((now, done))
        # Keep the newest sample at or before the window's start: the rate is measured over a whole window.
        while len(self.samples) > 1 and self.samples[1][0] <= now - self.limits.window:
            self.samples.popleft()
        return verdict(self.limits, self.started, self.samples[0], (now, done), total)


def verdict(limits: Limits, started: float, since: tuple[float, int], now: tuple[float, int],
            total: int | None) -> Refusal | None:
    """The rule itself: `since` is (time, bytes done) at least one window ago (or at the start, or when the
    store last held the import back), `now` the latest."""
    elapsed, done = now[0] - started, now[1]
    of = f" of {total}" if total is not None else ""
    if limits.deadline and elapsed > limits.deadline:
        return Refusal("ImportTimeout", f"the import did not finish within {limits.deadline:g} seconds "
                                        f"(KOVA_IMPORT_DEADLINE): {done}{of} bytes after {elapsed:.0f} seconds")
    span = now[0] - since[0]
    if limits.min_rate and span >= limits.window > 0:  # judged over a whole window only
        moved = done - since[1]
        if moved < limits.min_rate * span:
            return Refusal("ImportTooSlow", f"the source sent {moved} bytes in the last {span:.0f} seconds "
                                            f"({moved / span:.0f} bytes/s), under the minimum of {limits.min_rate} "
                                            f"bytes/s over {limits.window:g} seconds (KOVA_IMPORT_MIN_RATE, "
                                            f"KOVA_IMPORT_MIN_RATE_WINDOW); {done}{of} bytes in all")
    return None
