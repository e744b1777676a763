"""The benchmark's plots: fraction of copy bandwidth versus rows (add_rmsnorm, bf16, per mode)."""

from __future__ import annotations

import math
from pathlib import Path

from benchmarks.report import LABELS, DeviceRow, log, valid


def plot(device: list[DeviceRow], impls: list[str], dtype: str, mode: str, path: Path, copy_gbps: float) -> bool:
    """Fraction of copy bandwidth versus rows, one panel per hidden size, one line per impl."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib is not installed: no plot")
        return False
    rows = [r for r in device if r.op == "add_rmsnorm" and r.dtype == dtype and r.mode == mode and r.group != "seed"]
    widths = sorted({r.cols for r in rows})
    if not widths:
        return False
    columns = min(3, len(widths))
    lines_of_panels = math.ceil(len(widths) / columns)
    figure, axes = plt.subplots(
        lines_of_panels, columns, figsize=(4.6 * columns, 3.6 * lines_of_panels), squeeze=False, sharey=True
    )
    styles = {
        "normgen": ("C3", "o", 2.4),
        "torch": ("C0", "s", 1.4),
        "compile": ("C2", "^", 1.4),
        "liger": ("C1", "D", 1.4),
    }
    for index, width in enumerate(widths):
        ax = axes[index // columns][index % columns]
        for impl in impls:
            points = sorted((r.rows, r.frac) for r in rows if r.cols == width and r.impl == impl and valid(r))
            if points:
                color, marker, weight = styles.get(impl, (None, "x", 1.4))
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, label=LABELS[impl], color=color, marker=marker, linewidth=weight, markersize=4)
        if mode == "pre":
            ax.axhline(0.95, color="grey", linestyle=":", linewidth=1)
        ax.set_xscale("log", base=2)
        ticks = sorted({r.rows for r in rows if r.cols == width})
        ax.set_xticks(ticks, [f"{t // 1024}K" if t >= 4096 else str(t) for t in ticks])
        ax.minorticks_off()
        ax.tick_params(axis="x", labelsize=8)
        ax.set_title(f"hidden {width}", fontsize=10)
        ax.set_ylim(0, 1.05)
        ax.grid(True, which="major", alpha=0.3)
        ax.set_xlabel("rows")
        if index % columns == 0:
            ax.set_ylabel("fraction of copy bandwidth")
    for index in range(len(widths), lines_of_panels * columns):
        axes[index // columns][index % columns].axis("off")
    handles, labels = axes[0][0].get_legend_handles_labels()
    figure.suptitle(f"add_rmsnorm {dtype} {mode}: fraction of the {copy_gbps:.0f} GB/s copy bandwidth")
    figure.tight_layout(rect=(0, 0, 1, 0.9))
    figure.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.95), ncol=len(labels), frameon=False)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return True
