"""The JSON cache of found skip sets, in the reference SWIFT's shape.

One file maps ``"<model>_<task>"`` to an entry::

    {"attention": [3, 7], "mlp": [5, 12, 20],   # 0-based decoder layers
     "num_layers": 30, "score": 0.81, "ratio": 0.089}

``attention`` / ``mlp`` are what the reference stores; the other keys are
ours and optional, so a reference file loads as it is. A hit lets a new
engine skip the optimization phase. The search actor is the only writer; a
corrupt file or an entry that does not fit the served model is logged and
ignored (a fresh search runs), never an error.
"""

import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from swift_vllm.home import swift_home
from swift_vllm.skip_set import SkipSet

logger = logging.getLogger(__name__)


def cache_key(model: str, task: str) -> str:
    return f"{model}_{task}"


def default_cache_path() -> Path:
    return swift_home() / "skip_sets.json"


@dataclass(frozen=True)
class CacheEntry:
    skip_set: SkipSet
    score: float | None
    """Matchness the set scored when the search stopped (None in reference
    files)."""


class SkipSetCache:
    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def of(cls, cache_path: str | None) -> "SkipSetCache":
        """The cache an engine's ``cache_path`` option names (None: the default file)."""
        return cls(Path(cache_path) if cache_path else default_cache_path())

    def load(self, key: str, num_layers: int) -> CacheEntry | None:
        """The entry for ``key`` if it fits a ``num_layers``-layer model."""
        entry = self._read().get(key)
        if entry is None:
            logger.info("no cached skip set for %s in %s: searching", key, self.path)
            return None
        try:
            layers = [list(entry["attention"]), list(entry["mlp"])]
            if not all(isinstance(i, int) for i in layers[0] + layers[1]):
                raise ValueError("layer indices must be integers")
            cached_layers = entry.get("num_layers", num_layers)
            score = None if entry.get("score") is None else float(entry["score"])
            if score is not None and not 0.0 <= score <= 1.0:
                raise ValueError(f"score {score} is not a matchness in [0, 1]")
        except (TypeError, KeyError, ValueError, AttributeError) as exc:
            logger.warning(
                "cache entry %s in %s is malformed (%r): searching afresh",
                key,
                self.path,
                exc,
            )
            return None
        if cached_layers != num_layers:
            logger.warning(
                "cache entry %s in %s was found on a %s-layer model, the served "
                "model has %d: searching afresh",
                key,
                self.path,
                cached_layers,
                num_layers,
            )
            return None
        skip_set = SkipSet(tuple(layers[0]), tuple(layers[1]))
        outside = [i for i in layers[0] + layers[1] if not 1 <= i <= num_layers - 2]
        if outside:
            logger.warning(
                "cache entry %s in %s skips layers %s, outside 1..%d of the served "
                "%d-layer model: searching afresh",
                key,
                self.path,
                outside,
                num_layers - 2,
                num_layers,
            )
            return None
        return CacheEntry(skip_set, score)

    def store(self, key: str, skip_set: SkipSet, num_layers: int, score: float | None) -> None:
        """Write ``key``'s entry, keeping the others; atomic (tmp + rename),
        so readers never see a half-written file."""
        entries = self._read()
        entries[key] = {
            **skip_set.to_dict(),
            "num_layers": num_layers,
            "score": score,
            "ratio": round(skip_set.ratio(num_layers), 4),
        }
        self._write(entries)

    def remove(self, key: str) -> bool:
        """Drop ``key``'s entry (the next engine searches afresh); whether
        there was one."""
        entries = self._read()
        if entries.pop(key, None) is None:
            return False
        self._write(entries)
        return True

    def _write(self, entries: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(
            "w", dir=self.path.parent, prefix=f".{self.path.name}.", delete=False
        ) as tmp:
            json.dump(entries, tmp, indent=1, sort_keys=True)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.replace(tmp.name, self.path)

    def _read(self) -> dict:
        try:
            entries = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            logger.warning("skip-set cache %s is unreadable (%r): ignoring it", self.path, exc)
            return {}
        if not isinstance(entries, dict):
            logger.warning("skip-set cache %s is not a JSON object: ignoring it", self.path)
            return {}
        return entries
