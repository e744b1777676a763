"""The benchmark's results and reports: pure functions of the measurements (no GPU).

``bench.py`` measures and calls ``write_outputs``; its ``--self-test`` runs these
on fake timings.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from benchmarks import timing

SEED_SHAPES = ((8, 8192), (16, 4096), (32, 128), (32, 2048), (128, 128), (128, 2048), (256, 512), (1024, 1024))
HOST_SHAPE = ("bf16", 8, 4096)  # where the GPU is not the bottleneck
BIG_ELEMENTS = 16 * 2**20  # the targets' "bf16 shapes with >= 16M elements"
LABELS = {"normgen": "normgen", "torch": "torch eager", "compile": "torch.compile", "liger": "Liger"}


def log(message: str) -> None:
    import sys

    print(message, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Case:
    group: str  # "seed" or "llm"
    dtype: str
    rows: int
    cols: int
    mode: str

    @property
    def elements(self) -> int:
        return self.rows * self.cols


def table_order(case: Case, groups: list[str]) -> tuple:
    """Presentation order: groups as given; seed shapes in the seed PR's order; llm by hidden, then rows."""
    rank = groups.index(case.group) if case.group in groups else len(groups)
    mode = 0 if case.mode == "pre" else 1
    if case.group == "seed" and (case.rows, case.cols) in SEED_SHAPES:
        return (rank, case.dtype, 0, SEED_SHAPES.index((case.rows, case.cols)), mode)
    return (rank, case.dtype, case.cols, case.rows, mode)


@dataclass
class DeviceRow:
    """One impl on one (shape, mode): medians, the samples they came from, and the output check."""

    group: str
    dtype: str
    rows: int
    cols: int
    mode: str
    impl: str
    bytes: int = 0
    us: float | None = None
    gbps: float | None = None
    frac: float | None = None  # of the copy bandwidth
    samples: list[float] = field(default_factory=list)
    ok: bool | None = None  # output within tolerance of torch eager
    max_err: float | None = None
    calls: int = 0  # calls per graph
    sets: int = 0  # rotated input sets
    compile_s: float | None = None  # first call (torch.compile's compile), seconds
    error: str | None = None  # "n/a: ..." when the impl is not installed

    @property
    def case(self) -> Case:
        return Case(self.group, self.dtype, self.rows, self.cols, self.mode)


@dataclass
class HostRow:
    impl: str  # normgen, torch, compile, liger
    mode: str
    dtype: str
    rows: int
    cols: int
    us: float | None = None
    samples: list[float] = field(default_factory=list)
    error: str | None = None


# ----------------------------------------------------------------------------
# Reports (pure functions of the results: --self-test runs them on fake data)


def fmt_us(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def fmt_ratio(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.2f}x"


def index_rows(device: list[DeviceRow]) -> dict[Case, dict[str, DeviceRow]]:
    table: dict[Case, dict[str, DeviceRow]] = {}
    for row in device:
        table.setdefault(row.case, {})[row.impl] = row
    return table


def valid(row: DeviceRow | None) -> bool:
    return row is not None and row.us is not None and row.ok is not False


def fastest_peer_us(impl_rows: dict[str, DeviceRow]) -> float | None:
    peers = [row.us for impl, row in impl_rows.items() if impl != "normgen" and valid(row)]
    return min(peers) if peers else None


def vs_fastest_peer(impl_rows: dict[str, DeviceRow]) -> float | None:
    ours, best = impl_rows.get("normgen"), fastest_peer_us(impl_rows)
    return ours.us / best if valid(ours) and best else None


def device_cells(row: DeviceRow | None) -> list[str]:
    if row is None:
        return ["", "", ""]
    if row.error:
        return ["n/a" if row.error.startswith("n/a") else "err", "", ""]
    mark = " ✗" if row.ok is False else ""
    return [f"{fmt_us(row.us)}{mark}", f"{row.gbps:.0f}", f"{100 * row.frac:.0f}%"]


def device_table(device: list[DeviceRow], impls: list[str], groups: list[str]) -> list[str]:
    head = ["shape", "dtype", "mode"]
    for impl in impls:
        head += [f"{LABELS[impl]} µs", f"{LABELS[impl]} GB/s", f"{LABELS[impl]} % copy"]
    head.append("normgen vs fastest peer")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * 3 + "--:|" * (3 * len(impls) + 1)]
    table = index_rows(device)
    for case in sorted(table, key=lambda c: table_order(c, groups)):
        impl_rows = table[case]
        cells = [f"{case.rows} × {case.cols}", case.dtype, case.mode]
        for impl in impls:
            cells += device_cells(impl_rows.get(impl))
        cells.append(fmt_ratio(vs_fastest_peer(impl_rows)))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def host_us(host: list[HostRow], impl: str, mode: str) -> float | None:
    for row in host:
        if row.impl == impl and row.mode == mode:
            return row.us
    return None


def host_table(host: list[HostRow], impls: list[str], modes: list[str]) -> list[str]:
    head = ["mode"] + [f"{LABELS[c]} µs" for c in impls] + ["normgen / torch eager"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "--:|" * (len(impls) + 1)]
    for mode in modes:
        cells = [mode] + ["n/a" if host_us(host, c, mode) is None else fmt_us(host_us(host, c, mode)) for c in impls]
        ours, eager = host_us(host, "normgen", mode), host_us(host, "torch", mode)
        cells.append(fmt_ratio(ours / eager if ours and eager else None))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def targets(device: list[DeviceRow]) -> list[dict]:
    """The issue's speed targets, each with how many shapes meet it and which do not."""
    table = index_rows(device)
    ordered = sorted(table, key=lambda c: (c.group, c.dtype, c.cols, c.rows, c.mode != "pre"))

    def check(name: str, selected: list[Case], test: Callable[[dict], tuple[bool | None, str]]) -> dict:
        met, missed, unknown = 0, [], 0
        for case in selected:
            passed, detail = test(table[case])
            if passed is None:
                unknown += 1
            elif passed:
                met += 1
            else:
                missed.append(f"{case.rows}×{case.cols} {case.dtype} {case.mode} ({detail})")
        return {"target": name, "met": met, "of": len(selected) - unknown, "unmeasured": unknown, "missed": missed}

    def bandwidth(rows):
        ours = rows.get("normgen")
        return (None, "") if not valid(ours) else (ours.frac >= 0.95, f"{100 * ours.frac:.1f}% of copy")

    def fastest(rows):
        ratio = vs_fastest_peer(rows)
        return (None, "") if ratio is None else (ratio <= 1.01, f"{ratio:.2f}x the fastest peer")

    big = [c for c in ordered if c.dtype == "bf16" and c.elements >= BIG_ELEMENTS]
    return [
        check("bf16, >= 16M elements: >= 95% of copy bandwidth", big, bandwidth),
        check("every shape: at most 1.01x the fastest peer's device time", ordered, fastest),
    ]


def markdown(meta: dict, copy: dict, device: list[DeviceRow], host: list[HostRow], impls: list[str]) -> str:
    groups, modes = meta["groups"], meta["modes"]
    ver = meta["versions"]
    lines = [
        "# add_rmsnorm: normgen and its peers",
        "",
        f"- date (UTC): {meta['date']}",
        f"- device: {meta['device']}",
        f"- torch {ver['torch']}, triton {ver['triton']}, liger-kernel {ver['liger-kernel']}, python {ver['python']}",
        f"- copy bandwidth: {copy['gbps']:.0f} GB/s (device-to-device copy of {copy['bytes'] / 2**30:.0f} GiB, "
        f"bytes read + written, median of {len(copy['samples_ms'])})",
        "- device time: CUDA-graph replay of 2 to 20 calls per graph (more when inputs rotate), "
        f"median of {meta['reps']} repeats; inputs rotate through several sets while a call moves less than "
        f"{timing.ROTATE_L2}x the L2 cache ({meta['l2_mib']:.0f} MiB)",
        "- GB/s: the bytes the op must move (pre: read x, r, write y, s; post: read x, r, write y; "
        "the weight once), divided by the device time; % copy: that over the copy bandwidth",
        "- impls: normgen = `generated.add_rmsnorm`; torch eager = `x + r` then `F.rms_norm`; "
        "torch.compile = that function, `dynamic=False`, compiled per shape; "
        "Liger = `LigerFusedAddRMSNormFunction` (llama casting; it writes s in post mode too)",
    ]
    if not meta.get("complete", True):
        lines.append(f"- **incomplete**: stopped after the {meta['time_limit_s']:.0f} s time limit")
    lines += [
        "",
        "## Device time per call",
        "",
        *device_table(device, impls, groups),
        "",
        "✗: output differs from torch eager beyond tolerance (not counted as fastest); "
        "n/a: not installed; err: failed (see bench.json). normgen vs fastest peer: below 1 is faster.",
        "",
        f"## Host time per eager call ({HOST_SHAPE[0]} {HOST_SHAPE[1]} × {HOST_SHAPE[2]})",
        "",
        *host_table(host, impls, modes),
        "",
        "Median of back-to-back eager calls with one synchronize at the end.",
        "",
        "## Targets",
        "",
    ]
    for entry in targets(device):
        status = (
            "met" if entry["of"] and entry["met"] == entry["of"] else ("not measured" if not entry["of"] else "MISSED")
        )
        text = f"- {entry['target']}: {status} ({entry['met']} of {entry['of']})"
        if entry["missed"]:
            shown = entry["missed"][:8]
            more = f", and {len(entry['missed']) - 8} more" if len(entry["missed"]) > 8 else ""
            text += ": " + "; ".join(shown) + more
        lines.append(text)
    return "\n".join(lines) + "\n"


def plot(device: list[DeviceRow], impls: list[str], dtype: str, mode: str, path: Path, copy_gbps: float) -> bool:
    """Fraction of copy bandwidth versus rows, one panel per hidden size, one line per impl."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib is not installed: no plot")
        return False
    rows = [r for r in device if r.dtype == dtype and r.mode == mode and r.group == "llm"]
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


def write_outputs(out: Path, meta: dict, copy: dict, device, host, impls, plots: bool) -> str:
    out.mkdir(parents=True, exist_ok=True)
    text = markdown(meta, copy, device, host, impls)
    (out / "bench.md").write_text(text, encoding="utf-8")
    data = {
        "meta": meta,
        "copy": copy,
        "device": [asdict(r) for r in device],
        "host": [asdict(r) for r in host],
        "targets": targets(device),
    }
    (out / "bench.json").write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    if plots:
        for mode in meta["modes"]:
            plot(device, impls, "bf16", mode, out / f"bench_bf16_{mode}.png", copy["gbps"])
    return text


# ----------------------------------------------------------------------------
# Fake results for the self-test


def fake_results(all_cases: list[Case], impls: list[str], modes: list[str], copy_gbps: float):
    """Plausible timings from a bandwidth model, with one missing peer, one mismatch and one failure."""
    efficiency = {"normgen": 0.93, "torch": 0.55, "compile": 0.8, "liger": 0.85}
    launch_us = {"normgen": 2.2, "torch": 4.5, "compile": 3.0, "liger": 2.4}
    device = []
    for case in all_cases:
        elem = 4 if case.dtype == "fp32" else 2
        call_bytes = timing.bytes_moved(case.mode, case.rows, case.cols, elem)
        for impl in impls:
            row = DeviceRow(case.group, case.dtype, case.rows, case.cols, case.mode, impl, call_bytes, calls=20, sets=1)
            if impl == "liger" and case.group == "seed":
                row.error = "n/a: No module named 'liger_kernel'"
            elif impl == "compile" and case.rows == 1 and case.cols == 7338:
                row.error = "RuntimeError: fake failure"
            else:
                us = launch_us[impl] + call_bytes / (efficiency[impl] * copy_gbps * 1e3)
                row.samples = [us * (1 + 0.01 * k) for k in range(5)]
                row.us = timing.median(row.samples)
                row.gbps = call_bytes / (row.us * 1e-6) / 1e9
                row.frac = row.gbps / copy_gbps
                row.ok = not (impl == "torch" and case.rows == 64 and case.cols == 5120)
                row.max_err = 0.0 if row.ok else 0.5
            device.append(row)
    host = []
    fake_host = {"normgen": 6.0, "torch": 14.0, "compile": 22.0, "liger": 9.0}
    for mode in modes:
        for impl in impls:
            host.append(HostRow(impl, mode, *HOST_SHAPE, us=fake_host[impl], samples=[fake_host[impl]] * 3))
    return device, host
