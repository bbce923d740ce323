"""Predicted speedup of speculative decoding, and the draft-step cost model.

Leviathan et al. (2023): with per-token acceptance ``a``, ``g`` drafted tokens
per step and ``c`` = draft-step cost / verify-step cost, speculation yields
``(1 - a^(g+1)) / ((1 - a)(g*c + 1))`` times plain decoding's tokens/s. The
adaptive skip ratio maximises this over the number of skipped sub-layers:
skipping more lowers ``c`` but also ``a``.
"""

from dataclasses import dataclass, field

import numpy as np


def expected_speedup(acceptance: float, draft_len: int, cost_ratio: float) -> float:
    """Tokens/s of speculation relative to plain decoding (Leviathan et al.)."""
    if acceptance >= 1.0:
        expected_tokens = draft_len + 1.0
    else:
        expected_tokens = (1.0 - acceptance ** (draft_len + 1)) / (1.0 - acceptance)
    return expected_tokens / (draft_len * cost_ratio + 1.0)


def best_speedup(acceptance: float, cost_ratio: float, max_draft_len: int) -> float:
    """The speedup at the best draft length in ``1..max_draft_len``: the
    proposer's confidence-aware drafting stops early where drafting stops
    paying, so the best fixed length is the fairer prediction."""
    return max(expected_speedup(acceptance, g, cost_ratio) for g in range(1, max_draft_len + 1))


# Weight of a new measurement in the running (exponential) means: recent
# steps dominate, so a change in batch size shows within a few reports.
_EMA_WEIGHT = 0.2


def _ema(old: float | None, new: float) -> float:
    return new if old is None else (1.0 - _EMA_WEIGHT) * old + _EMA_WEIGHT * new


@dataclass
class CostModel:
    """Draft-step cost relative to a verify step, as a function of how many
    sub-layers the draft skips.

    Only sizes the proposer actually drafted with are measured; the others
    are interpolated: a least-squares line through the measured sizes when
    there are two or more, else a draft step costing in proportion to the
    sub-layers it runs (anchored at the one measured size, or at "a
    full-model draft step costs one verify step" before any measurement).
    """

    num_sublayers: int
    """All attention and MLP sub-layers of the model, ``2 * num_layers``."""

    draft_s: dict[int, float] = field(default_factory=dict)
    """Skipped sub-layers -> running mean seconds of one draft step."""

    verify_s: float | None = None
    """Running mean seconds of one verify step."""

    def observe(self, skipped: int, draft_step_s: float, verify_step_s: float) -> None:
        if draft_step_s > 0:
            self.draft_s[skipped] = _ema(self.draft_s.get(skipped), draft_step_s)
        if verify_step_s > 0:
            self.verify_s = _ema(self.verify_s, verify_step_s)

    def cost_ratio(self, skipped: int) -> float:
        """Predicted draft-step / verify-step cost when skipping ``skipped``."""
        running = self.num_sublayers - skipped
        if self.verify_s is None or not self.draft_s:
            return running / self.num_sublayers
        sizes = np.array(sorted(self.draft_s), dtype=float)
        seconds = np.array([self.draft_s[int(s)] for s in sizes])
        slope = np.polyfit(sizes, seconds, 1)[0] if len(sizes) > 1 else 0.0
        if slope < 0:  # skipping more made drafting cheaper, as it must
            draft = seconds.mean() + slope * (skipped - sizes.mean())
        else:  # one size, or noise: fall back to cost proportional to work
            draft = seconds.mean() * running / (self.num_sublayers - sizes.mean())
        # A draft step never costs nothing (embedding, LM head, sampling).
        return float(max(draft, 0.05 * seconds.min()) / self.verify_s)
