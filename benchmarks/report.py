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
FASTEST_TARGET = "every shape: <= 1.00x the fastest peer's device time (1% noise allowed: <= 1.01x)"
LABELS = {"normgen": "normgen", "torch": "torch eager", "compile": "torch.compile", "liger": "Liger"}


def log(message: str) -> None:
    import sys

    print(message, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Case:
    op: str
    group: str  # "family", "seed" or "llm"
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
    """One impl on one (op, shape, mode): medians, the samples they came from, and the output check."""

    op: str
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
    ok: bool | None = None  # outputs within tolerance of the op's generated reference
    max_err: float | None = None
    calls: int = 0  # calls per graph
    sets: int = 0  # rotated input sets
    compile_s: float | None = None  # first call (torch.compile's compile), seconds
    error: str | None = None  # "n/a: ..." when the impl is not installed

    @property
    def case(self) -> Case:
        return Case(self.op, self.group, self.dtype, self.rows, self.cols, self.mode)


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
    """One op's table: the impls that have rows for it, in ``impls`` order."""
    present = {row.impl for row in device}
    impls = [impl for impl in impls if impl in present]
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


def ops_of(device: list[DeviceRow]) -> list[str]:
    return list(dict.fromkeys(row.op for row in device))


def big(case: Case) -> bool:
    return case.dtype == "bf16" and case.elements >= BIG_ELEMENTS


def same_bytes_frac(row: DeviceRow, copy: dict | None) -> float | None:
    """A copy of the same bytes as this row's call, as a fraction of the copy bandwidth (None: not measured)."""
    gbps = ((copy or {}).get("same_bytes") or {}).get(str(row.bytes))
    return None if gbps is None else gbps / copy["gbps"]


def summary(device: list[DeviceRow], copy: dict | None = None) -> list[dict]:
    """Per op: normgen's ratio to the fastest peer (median, worst and where) and, on bf16 shapes of
    at least 16M elements, its fraction of the copy bandwidth (median, lowest and where, with what a
    copy of the same bytes reached there)."""
    result = []
    for op in ops_of(device):
        table = index_rows([row for row in device if row.op == op])
        ratios = [(vs_fastest_peer(rows), case) for case, rows in table.items() if vs_fastest_peer(rows)]
        fracs = [(rows["normgen"].frac, case) for case, rows in table.items() if big(case) and valid(rows["normgen"])]
        ratios.sort(key=lambda pair: pair[0])
        fracs.sort(key=lambda pair: pair[0])
        entry = {"op": op, "shapes": len(table), "ratios": len(ratios), "big": len(fracs)}
        if ratios:
            worst, where = ratios[-1]
            entry |= {"ratio_median": timing.median([r for r, _ in ratios]), "ratio_worst": worst}
            entry |= {"ratio_worst_at": f"{where.rows}×{where.cols} {where.dtype} {where.mode}"}
            entry |= {
                "ratio_le_1": sum(r <= 1.0 for r, _ in ratios),
                "ratio_le_1_01": sum(r <= 1.01 for r, _ in ratios),
            }
        if fracs:
            low, where = fracs[0]
            entry |= {"frac_median": timing.median([f for f, _ in fracs]), "frac_min": low}
            entry |= {"frac_min_at": f"{where.rows}×{where.cols} {where.mode}"}
            entry |= {"copy_frac_at_min": same_bytes_frac(table[where]["normgen"], copy)}
        result.append(entry)
    return result


def target_check(op: str, name: str, table: dict, selected: list[Case], test: Callable) -> dict:
    """How many of the selected shapes meet a target (test: rows -> (passed or None, detail)), which miss it."""
    met, missed, unknown = 0, [], 0
    for case in selected:
        passed, detail = test(table[case])
        if passed is None:
            unknown += 1
        elif passed:
            met += 1
        else:
            missed.append(f"{case.rows}×{case.cols} {case.dtype} {case.mode} ({detail})")
    return {
        "op": op,
        "target": name,
        "met": met,
        "of": len(selected) - unknown,
        "unmeasured": unknown,
        "missed": missed,
    }


def bandwidth_test(rows: dict, copy: dict | None = None) -> tuple[bool | None, str]:
    ours = rows.get("normgen")
    if not valid(ours):
        return None, ""
    same = same_bytes_frac(ours, copy)
    detail = f"{100 * ours.frac:.1f}% of copy" + (
        "" if same is None else f"; a copy of the same bytes: {100 * same:.1f}%"
    )
    return ours.frac >= 0.95, detail


def fastest_test(rows: dict) -> tuple[bool | None, str]:
    ratio = vs_fastest_peer(rows)
    return (None, "") if ratio is None else (ratio <= 1.01, f"{ratio:.3f}x the fastest peer")


def targets(device: list[DeviceRow], copy: dict | None = None) -> list[dict]:
    """The issue's speed targets per op, each with how many shapes meet it and which do not."""
    result = []
    for op in ops_of(device):
        table = index_rows([row for row in device if row.op == op])
        ordered = sorted(table, key=lambda c: (c.group, c.dtype, c.cols, c.rows, c.mode != "pre"))
        big_ones = [c for c in ordered if big(c)]
        result += [
            target_check(
                op,
                "bf16, >= 16M elements: >= 95% of copy bandwidth",
                table,
                big_ones,
                lambda rows: bandwidth_test(rows, copy),
            ),  # fmt: skip
            target_check(op, FASTEST_TARGET, table, ordered, fastest_test),
        ]
    return result


def summary_table(device: list[DeviceRow], copy: dict | None = None) -> list[str]:
    lines = [
        "| op | shapes | vs fastest peer: median | worst (shape) | ≤ 1.00× | ≤ 1.01× "
        "| bf16 ≥ 16M: % copy median | lowest (shape) |",
        "|---|--:|--:|---|--:|--:|--:|---|",
    ]
    for e in summary(device, copy):
        cells = [e["op"], str(e["shapes"])]
        if e["ratios"]:
            cells += [fmt_ratio(e["ratio_median"]), f"{fmt_ratio(e['ratio_worst'])} ({e['ratio_worst_at']})"]
            cells += [f"{e['ratio_le_1']} of {e['ratios']}", f"{e['ratio_le_1_01']} of {e['ratios']}"]
        else:
            cells += ["n/a", "", "", ""]
        if e["big"]:
            same = e["copy_frac_at_min"]
            there = "" if same is None else f"; copy of the same bytes {100 * same:.1f}%"
            cells += [f"{100 * e['frac_median']:.1f}%", f"{100 * e['frac_min']:.1f}% ({e['frac_min_at']}{there})"]
        else:
            cells += ["n/a", ""]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def target_lines(device: list[DeviceRow], copy: dict | None = None) -> list[str]:
    lines = []
    for entry in targets(device, copy):
        status = "not measured" if not entry["of"] else ("met" if entry["met"] == entry["of"] else "MISSED")
        text = f"- {entry['op']}, {entry['target']}: {status} ({entry['met']} of {entry['of']})"
        if entry["missed"]:
            shown = entry["missed"][:6]
            more = f", and {len(entry['missed']) - 6} more" if len(entry["missed"]) > 6 else ""
            text += ": " + "; ".join(shown) + more
        lines.append(text)
    return lines


def same_bytes_line(copy: dict) -> list[str]:
    """The same-bytes copies' range, as a fraction of the copy bandwidth (none: not measured)."""
    fracs = sorted(gbps / copy["gbps"] for gbps in (copy.get("same_bytes") or {}).values())
    if not fracs:
        return []
    return [
        f"- a copy of the same bytes as each bf16 shape of at least 16M elements (timed as the ops are): "
        f"{100 * fracs[0]:.1f}–{100 * fracs[-1]:.1f}% of that bandwidth; the bandwidth target's lines give it per shape"
    ]


def markdown(meta: dict, copy: dict, device: list[DeviceRow], host: list[HostRow], impls: list[str]) -> str:
    groups, modes = meta["groups"], meta["modes"]
    ver = meta["versions"]
    lines = [
        "# normgen's ops and their peers",
        "",
        f"- date (UTC): {meta['date']}",
        f"- device: {meta['device']}",
        f"- torch {ver['torch']}, triton {ver['triton']}, liger-kernel {ver['liger-kernel']}, python {ver['python']}",
        f"- copy bandwidth: {copy['gbps']:.0f} GB/s (device-to-device copy of {copy['bytes'] / 2**30:.0f} GiB, "
        f"bytes read + written, median of {len(copy['samples_ms'])})",
        *same_bytes_line(copy),
        "- device time: CUDA-graph replay of 2 to 20 calls per graph (more when inputs rotate), "
        f"median of {meta['reps']} repeats; inputs rotate through several sets while a call moves less than "
        f"{timing.ROTATE_L2}x the L2 cache ({meta['l2_mib']:.0f} MiB)",
        "- GB/s: the bytes the op must move (x and r read; y written, 1 byte an element plus a float32 scale "
        "per row when quantized; the residual out written in pre mode, and in post mode by the quantized ops; "
        "weight and bias once), divided by the device time; % copy: that over the copy bandwidth",
        "- impls: normgen = `generated.<op>`; torch eager = the spec's math with the op's rounding steps "
        "(llama: x_hat rounded before times w; gemma: fp32 throughout, one rounding; layer norms: "
        "`F.layer_norm`; quantized: then per-row amax, scale, round, clamp); torch.compile = that function, "
        "`dynamic=False`, compiled per shape; Liger = `LigerFusedAddRMSNormFunction` (add_rmsnorm, "
        "gemma_add_rmsnorm; it writes s in post mode too), `LigerRMSNormFunction` (rmsnorm, gemma_rmsnorm), "
        "`LigerLayerNormFunction` (layernorm); Liger has none of the other ops",
        f"- ops: {', '.join(meta.get('ops', ops_of(device)))}; mode - : the op has no residual",
    ]
    if not meta.get("complete", True):
        lines.append(f"- **incomplete**: stopped after the {meta['time_limit_s']:.0f} s time limit")
    lines += ["", "## Summary per op", "", *summary_table(device, copy), ""]
    lines += ["## Targets (reported, not asserted)", "", *target_lines(device, copy), ""]
    for op in ops_of(device):
        lines += [f"## {op}: device time per call", "", *device_table([r for r in device if r.op == op], impls, groups)]
        lines.append("")
    lines += [
        "✗: outputs differ from the op's generated reference beyond tolerance (not counted as fastest); "
        "n/a: not installed; err: failed (see bench.json). normgen vs fastest peer: below 1 is faster.",
        "",
    ]
    if host:
        lines += [
            f"## add_rmsnorm: host time per eager call ({HOST_SHAPE[0]} {HOST_SHAPE[1]} × {HOST_SHAPE[2]})",
            "",
            *host_table(host, impls, modes),
            "",
            "Median of back-to-back eager calls with one synchronize at the end.",
        ]
    return "\n".join(lines) + "\n"


def write_outputs(out: Path, meta: dict, copy: dict, device, host, impls, plots: bool) -> str:
    out.mkdir(parents=True, exist_ok=True)
    text = markdown(meta, copy, device, host, impls)
    (out / "bench.md").write_text(text, encoding="utf-8")
    data = {
        "meta": meta,
        "copy": copy,
        "device": [asdict(r) for r in device],
        "host": [asdict(r) for r in host],
        "summary": summary(device, copy),
        "targets": targets(device, copy),
    }
    (out / "bench.json").write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    if plots:
        from benchmarks.plots import family_plot, plot

        for mode in meta["modes"]:
            plot(device, impls, "bf16", mode, out / f"bench_bf16_{mode}.png", copy["gbps"])
        if len({r.op for r in device}) > 1:
            family_plot(device, impls, out / "family_bf16.png", copy["gbps"])
    return text
