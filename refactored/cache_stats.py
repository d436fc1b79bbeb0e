"""Per-pool lookup counters, and a null object that records nothing when stats are off."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

__all__ = ["CacheStats", "NullStats"]


@dataclass(slots=True)
class CacheStats:
    """Hits, misses and evictions of one pool; ``queries`` and ``hit_rate`` are derived."""

    hits: int = 0
    misses: int = 0
    evictions: int = 0

    @property
    def queries(self) -> int:
        return self.hits + self.misses

    @property
    def hit_rate(self) -> float:
        """``hits / queries``, 0.0 before the first query."""
        queries = self.hits + self.misses
        return self.hits / queries if queries else 0.0

    def record_hit(self) -> None:
        self.hits += 1

    def record_miss(self) -> None:
        self.misses += 1

    def record_eviction(self) -> None:
        self.evictions += 1

    def reset(self) -> None:
        self.hits = self.misses = self.evictions = 0

    def as_dict(self) -> dict[str, int | float]:
        return {"hits": self.hits, "misses": self.misses, "evictions": self.evictions,
                "queries": self.queries, "hit_rate": self.hit_rate}

    @classmethod
    def merged(cls, parts: Iterable["CacheStats | NullStats"]) -> "CacheStats":
        """A new record holding the sums of ``parts``."""
        total = cls()
        for part in parts:
            total.hits += part.hits
            total.misses += part.misses
            total.evictions += part.evictions
        return total


class NullStats:
    """Stats switched off: same interface as :class:`CacheStats`, always zero."""

    __slots__ = ()
    hits = 0
    misses = 0
    evictions = 0
    queries = 0
    hit_rate = 0.0

    def record_hit(self) -> None:
        pass

    def record_miss(self) -> None:
        pass

    def record_eviction(self) -> None:
        pass

    def reset(self) -> None:
        pass

    def as_dict(self) -> dict[str, int | float]:
        return {"hits": 0, "misses": 0, "evictions": 0, "queries": 0, "hit_rate": 0.0}
