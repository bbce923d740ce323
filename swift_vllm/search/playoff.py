"""The search's last step: its finalists scored together, window by window.

During the search each set is scored on its own few windows, and windows
differ far more in difficulty than good sets differ from each other; the
additive model corrects for that only on average, so the best-ranked set at
the end is often the one whose windows were easy (a set scored on two
windows ended three of five 1000-candidate searches on SmolLM2). Scored on
the same windows, the finalists' luck is shared and the comparison is
paired: the best mean over the playoff is the better set.
"""

from dataclasses import dataclass, field

from swift_vllm.skip_set import SkipSet


@dataclass
class Playoff:
    finalists: list[SkipSet]
    """The sets in the playoff, the search's best-ranked first (it wins ties)."""
    reason: str
    """The stop rule that started the playoff."""
    tokens_needed: int
    """Distinct window tokens to score the finalists on before choosing."""
    totals: dict[SkipSet, float] = field(default_factory=dict)
    windows: int = 0
    tokens: int = 0

    def add(self, scores: list[tuple[SkipSet, float]], window_tokens: int) -> None:
        """One window's scores; counted only if every finalist was scored on
        it (a report of a batch proposed before the playoff is not)."""
        by_set = dict(scores)
        if not all(s in by_set for s in self.finalists):
            return
        for skip_set in self.finalists:
            self.totals[skip_set] = self.totals.get(skip_set, 0.0) + by_set[skip_set]
        self.windows += 1
        self.tokens += window_tokens

    @property
    def decided(self) -> bool:
        return self.windows > 0 and self.tokens >= self.tokens_needed

    def means(self) -> dict[SkipSet, float]:
        """Each finalist's mean matchness over the playoff's windows."""
        return {s: self.totals.get(s, 0.0) / max(self.windows, 1) for s in self.finalists}

    def winner(self) -> SkipSet:
        means = self.means()
        # Rounded: tied sets' sums differ in the last bits; a tie goes to the earlier.
        return max(self.finalists, key=lambda s: round(means[s], 9))

    def summary(self) -> dict:
        """For status: the finalists' means, how much they were scored on."""
        return {
            "windows": self.windows,
            "tokens": self.tokens,
            "tokens_needed": self.tokens_needed,
            "finalists": [
                {"set": s.to_dict(), "mean_matchness": round(m, 4)} for s, m in self.means().items()
            ],
        }
