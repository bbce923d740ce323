"""An additive model of matchness: window difficulty plus one effect per skipped sub-layer.

Every scoring step scores several sets on one window, and windows differ in
difficulty far more than good sets differ from each other. Fitting

    score(set, window) = ease[window] + sum(effect[i] for i in set) + noise

to every score so far (least squares, the effects lightly ridge-regularised
towards zero) separates the two: ``ease`` corrects each score for its
window, which makes sets scored on different windows comparable, and the
effects (how much skipping each sub-layer costs, negative) say which
sub-layers are cheap to skip, which makes the model's best set of a size a
strong candidate after a few dozen windows, where random sets need
thousands of tries.
"""

import numpy as np

# Ridge weight of the effects, in units of one score's squared error:
# sub-layers scored rarely stay near zero effect instead of swinging.
EFFECT_RIDGE = 1.0
# A window's ease is pulled this little towards the mean, only so that the
# system is solvable before every window has two sets.
EASE_RIDGE = 1e-3


class AdditiveModel:
    """Scores of skip vectors on numbered windows, and the fitted model."""

    def __init__(self, dims: int) -> None:
        self.dims = dims
        self._windows: list[int] = []
        self._vectors: list[list[int]] = []
        self._scores: list[float] = []
        self._ease: dict[int, float] = {}
        self._mean_ease = 0.0
        self._effect = np.zeros(dims)
        self._fitted = 0  # observations the current fit has seen

    def add(self, window: int, vector: list[int], score: float) -> None:
        self._windows.append(window)
        self._vectors.append(vector)
        self._scores.append(score)

    def clear(self) -> None:
        self.__init__(self.dims)

    def corrected(self, window: int, score: float) -> float:
        """``score`` as if measured on a window of average ease (a share:
        kept within [0, 1], where the additive model overshoots)."""
        self._fit()
        if window not in self._ease:
            return score
        return min(max(score - self._ease[window] + self._mean_ease, 0.0), 1.0)

    def cheapest(self, size: int) -> list[int]:
        """The vector skipping the ``size`` sub-layers whose skipping costs least."""
        self._fit()
        chosen = set(np.argsort(-self._effect, kind="stable")[:size].tolist())
        return [int(i in chosen) for i in range(self.dims)]

    def _fit(self) -> None:
        if self._fitted == len(self._scores):
            return
        windows = sorted(set(self._windows))
        column = {w: i for i, w in enumerate(windows)}
        rows = len(self._scores)
        design = np.zeros((rows, len(windows) + self.dims))
        design[np.arange(rows), [column[w] for w in self._windows]] = 1.0
        design[:, len(windows) :] = np.asarray(self._vectors, dtype=float)
        # Ridge least squares by its normal equations (a few hundred
        # unknowns at most); the ease prior is the mean score, the effect
        # prior zero.
        ridge = np.array([EASE_RIDGE] * len(windows) + [EFFECT_RIDGE] * self.dims)
        prior = np.concatenate([np.full(len(windows), np.mean(self._scores)), np.zeros(self.dims)])
        solution = np.linalg.solve(
            design.T @ design + np.diag(ridge),
            design.T @ np.asarray(self._scores) + ridge * prior,
        )
        self._ease = dict(zip(windows, solution[: len(windows)].tolist(), strict=True))
        self._effect = solution[len(windows) :]
        self._mean_ease = float(np.mean(solution[: len(windows)]))
        self._fitted = rows
