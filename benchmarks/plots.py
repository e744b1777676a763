"""The benchmark's plots: fraction of copy bandwidth versus rows (add_rmsnorm per mode; the family per op)."""

from __future__ import annotations

import math
from pathlib import Path

from benchmarks.report import LABELS, DeviceRow, log, valid

STYLES = {  # impl -> (color, marker, line width)
    "normgen": ("C3", "o", 2.4),
    "torch": ("C0", "s", 1.4),
    "compile": ("C2", "^", 1.4),
    "liger": ("C1", "D", 1.4),
}


def _pyplot():
    """matplotlib.pyplot on the Agg backend, or None (logged) where matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib is not installed: no plot")
        return None
    return plt


def _panel(ax, rows: list[DeviceRow], impls: list[str], title: str, ylim: float, target: bool) -> None:
    """One panel: fraction of copy bandwidth versus rows (log scale), one line per impl; ``target``: the
    0.95 line."""
    for impl in impls:
        points = sorted((r.rows, r.frac) for r in rows if r.impl == impl and valid(r))
        if points:
            color, marker, weight = STYLES.get(impl, (None, "x", 1.4))
            xs, ys = zip(*points, strict=True)
            ax.plot(xs, ys, label=LABELS[impl], color=color, marker=marker, linewidth=weight, markersize=4)
    if target:
        ax.axhline(0.95, color="grey", linestyle=":", linewidth=1)
    ax.set_xscale("log", base=2)
    ticks = sorted({r.rows for r in rows})
    ax.set_xticks(ticks, [f"{t // 1024}K" if t >= 4096 else str(t) for t in ticks])
    ax.minorticks_off()
    ax.tick_params(axis="x", labelsize=8)
    ax.set_title(title, fontsize=10)
    ax.set_ylim(0, ylim)
    ax.grid(True, which="major", alpha=0.3)


def _grid(plt, panels: int, most_columns: int, width: float, height: float):
    """A figure of ``panels`` panels, at most ``most_columns`` to a line, each ``width`` × ``height``
    inches, sharing the y axis: (figure, axes), axes[line][column]."""
    columns = min(most_columns, panels)
    lines_of_panels = math.ceil(panels / columns)
    return plt.subplots(
        lines_of_panels, columns, figsize=(width * columns, height * lines_of_panels), squeeze=False, sharey=True
    )


def _finish(plt, figure, axes, panels: int, title: str, path: Path, top: float, legend_y: float, dpi: int) -> None:
    """Blank the unused panels, a legend of every impl drawn anywhere (Liger has some ops only), the
    title; saved to ``path``."""
    columns = len(axes[0])
    for index in range(panels, len(axes) * columns):
        axes[index // columns][index % columns].axis("off")
    handles, labels = [], []
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            if label not in labels:
                handles.append(handle)
                labels.append(label)
    figure.suptitle(title)
    figure.tight_layout(rect=(0, 0, 1, top))
    figure.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, legend_y), ncol=len(labels), frameon=False)
    figure.savefig(path, dpi=dpi)
    plt.close(figure)


def plot(device: list[DeviceRow], impls: list[str], dtype: str, mode: str, path: Path, copy_gbps: float) -> bool:
    """add_rmsnorm: fraction of copy bandwidth versus rows, one panel per hidden size, one line per impl."""
    rows = [r for r in device if r.op == "add_rmsnorm" and r.dtype == dtype and r.mode == mode and r.group != "seed"]
    widths = sorted({r.cols for r in rows})
    plt = _pyplot() if widths else None
    if plt is None:
        return False
    figure, axes = _grid(plt, len(widths), 3, 4.6, 3.6)
    columns = len(axes[0])
    for index, width in enumerate(widths):
        ax = axes[index // columns][index % columns]
        _panel(ax, [r for r in rows if r.cols == width], impls, f"hidden {width}", 1.05, mode == "pre")
        ax.set_xlabel("rows")
        if index % columns == 0:
            ax.set_ylabel("fraction of copy bandwidth")
    title = f"add_rmsnorm {dtype} {mode}: fraction of the {copy_gbps:.0f} GB/s copy bandwidth"
    _finish(plt, figure, axes, len(widths), title, path, 0.9, 0.95, 120)
    return True


def family_plot(device: list[DeviceRow], impls: list[str], path: Path, copy_gbps: float, cols: int = 8192) -> bool:
    """Fraction of copy bandwidth versus rows at one hidden size (bf16), one panel per op (pre mode where
    the op has a residual), one line per impl."""
    family = [r for r in device if r.dtype == "bf16" and r.cols == cols and r.group == "family"]
    ops = list(dict.fromkeys(r.op for r in family))
    plt = _pyplot() if ops else None
    if plt is None:
        return False
    figure, axes = _grid(plt, len(ops), 4, 4.0, 3.2)
    columns, lines_of_panels = len(axes[0]), len(axes)
    for index, op in enumerate(ops):
        ax = axes[index // columns][index % columns]
        rows = [r for r in family if r.op == op]
        mode = "pre" if any(r.mode == "pre" for r in rows) else rows[0].mode
        title = op if mode == "-" else f"{op} ({mode})"
        _panel(ax, [r for r in rows if r.mode == mode], impls, title, 1.1, True)
        if index // columns == lines_of_panels - 1:
            ax.set_xlabel("rows")
        if index % columns == 0:
            ax.set_ylabel("fraction of copy bandwidth")
    title = f"bf16, hidden {cols}: fraction of the {copy_gbps:.0f} GB/s copy bandwidth"
    _finish(plt, figure, axes, len(ops), title, path, 0.92, 0.965, 110)
    return True


def main(argv: list[str] | None = None) -> int:
    """Redraw a run's plots from its bench.json: python -m benchmarks.plots RUN/bench.json --out DIR."""
    import argparse
    import json

    parser = argparse.ArgumentParser(prog="python -m benchmarks.plots", description=main.__doc__)
    parser.add_argument("run", type=Path, help="a benchmark run's bench.json")
    parser.add_argument("--out", type=Path, required=True, help="folder for the plots")
    args = parser.parse_args(argv)
    data = json.loads(args.run.read_text(encoding="utf-8"))
    device = [DeviceRow(**row) for row in data["device"]]
    impls = list(dict.fromkeys(r.impl for r in device))
    args.out.mkdir(parents=True, exist_ok=True)
    drawn = [family_plot(device, impls, args.out / "family_bf16.png", data["copy"]["gbps"])]
    drawn += [
        plot(device, impls, "bf16", m, args.out / f"bench_bf16_{m}.png", data["copy"]["gbps"]) for m in ("pre", "post")
    ]
    log(f"drew {sum(drawn)} plot(s) in {args.out}")
    return 0 if any(drawn) else 1


if __name__ == "__main__":
    raise SystemExit(main())
