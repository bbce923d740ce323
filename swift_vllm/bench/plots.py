"""PNG plots of ``results.json`` rows (matplotlib's Agg backend: no display needed)."""

from pathlib import Path
from typing import Any

from swift_vllm.bench.methods import BASELINE
from swift_vllm.bench.report import ALL


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _methods(rows: list[dict[str, Any]]) -> list[str]:
    return [m for m in dict.fromkeys(r["method"] for r in rows) if m != BASELINE]


def plot_speedup_by_batch_size(rows: list[dict[str, Any]], path: Path) -> None:
    """Speedup over vanilla (all categories) against batch size, one line per method."""
    plt = _pyplot()
    batch_sizes = sorted({r["batch_size"] for r in rows})
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.axhline(1.0, color="grey", linestyle="--", linewidth=1, label=BASELINE)
    for method in _methods(rows):
        points = {
            r["batch_size"]: r["speedup"]
            for r in rows
            if r["method"] == method and r["category"] == ALL and r["speedup"] is not None
        }
        xs = [b for b in batch_sizes if b in points]
        ax.plot(
            [batch_sizes.index(b) for b in xs], [points[b] for b in xs], marker="o", label=method
        )
    ax.set_xticks(range(len(batch_sizes)), [str(b) for b in batch_sizes])
    ax.set_xlabel("batch size")
    ax.set_ylabel("speedup over vanilla (output tokens/s)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_speedup_by_category(rows: list[dict[str, Any]], path: Path) -> None:
    """Speedup over vanilla per category: one panel per batch size, one bar per method."""
    plt = _pyplot()
    batch_sizes = sorted({r["batch_size"] for r in rows})
    categories = sorted({r["category"] for r in rows}, key=lambda c: (c != ALL, c))
    methods = _methods(rows)
    speedup = {(r["method"], r["batch_size"], r["category"]): r["speedup"] for r in rows}
    width = 0.8 / max(len(methods), 1)
    fig, axes = plt.subplots(
        len(batch_sizes),
        1,
        figsize=(max(8, len(categories) * 0.8), 2.8 * len(batch_sizes)),
        squeeze=False,
    )
    for ax, batch_size in zip(axes[:, 0], batch_sizes, strict=True):
        for i, method in enumerate(methods):
            values = [speedup.get((method, batch_size, c)) or 0.0 for c in categories]
            offsets = [x + (i - (len(methods) - 1) / 2) * width for x in range(len(categories))]
            ax.bar(offsets, values, width, label=method)
        ax.axhline(1.0, color="grey", linestyle="--", linewidth=1)
        ax.set_title(f"batch size {batch_size}")
        ax.set_ylabel("speedup")
        ax.set_xticks(range(len(categories)), categories, rotation=30, ha="right")
    if methods:  # none when every speculative engine failed to start
        axes[0, 0].legend(ncol=len(methods))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_search_history(history: list[list], num_layers: int, path: Path) -> None:
    """Best matchness and its skip ratio against sets scored (``Searcher.history``)."""
    plt = _pyplot()
    from swift_vllm.skip_set import num_skippable

    points = [(i, m, size) for i, m, size in history if m is not None]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([p[0] for p in points], [p[1] for p in points], color="tab:blue")
    ax.set_xlabel("skip sets scored")
    ax.set_ylabel("best matchness", color="tab:blue")
    ratio = ax.twinx()
    dims = num_skippable(num_layers)
    ratio.plot([p[0] for p in points], [p[2] / dims for p in points], color="tab:orange")
    ratio.set_ylabel("its skip ratio", color="tab:orange")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_plots(rows: list[dict[str, Any]], out: Path) -> list[Path]:
    paths = [out / "speedup_by_batch_size.png", out / "speedup_by_category.png"]
    plot_speedup_by_batch_size(rows, paths[0])
    plot_speedup_by_category(rows, paths[1])
    return paths
