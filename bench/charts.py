"""Side-by-side bar charts for the benchmark reports (one PNG, two panels)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Panel:
    """One panel: a bar per name, its title, optional colours, a dashed target line, a y range."""

    values: Sequence[float]
    title: str
    colors: Sequence[str] | str = "#4c72b0"
    target: float | None = None
    ylim: tuple[float, float] | None = None


def bar_pair(path: Path, names: Sequence[str], left: Panel, right: Panel, xlabel: str = "") -> None:
    """Write two bar panels over the same ``names`` to ``path`` (PNG, headless backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for axis, panel in zip(axes, (left, right), strict=True):
        axis.bar(list(names), list(panel.values), color=panel.colors)
        if panel.target is not None:
            axis.axhline(panel.target, color="grey", linestyle="--", linewidth=1)
        if panel.ylim is not None:
            axis.set_ylim(*panel.ylim)
        axis.set_title(panel.title)
        if xlabel:
            axis.set_xlabel(xlabel)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
