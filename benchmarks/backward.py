"""Backward benchmark (GPU): normgen's backward against Liger-Kernel, torch eager and torch.compile.

    python -m benchmarks.backward [--ops add_rmsnorm,rmsnorm,layernorm] [--dtypes bf16] [--quick] --out DIR

For each op, shape and residual mode, every impl runs its forward once per
input set (outside the timing) and then its backward, ``torch.autograd.grad``
of the op's outputs, under the profiler: device time per call is the sum of
the device time of every kernel the backward ran (the weight-gradient sums
included), over ``CALLS`` calls, median of ``REPS`` repeats. Forward+backward
is timed the same way. GB/s count the bytes a backward must move (read dy, ds
in pre mode, what the forward normalized: s, or x and r in post mode; write
dx; the weight, dw, db and the statistics), and the fraction is of the
device-to-device copy bandwidth measured in the same run (post mode counts x
and r, which normgen's backward reads because its forward writes no s; a peer
that saves s moves less). The gradients of every impl are checked against torch
autograd of the same formula on the inputs upcast to fp32 (largest error
relative to the largest gradient, within TOLERANCE). Writes backward.json,
backward.md and, with matplotlib, backward.png to --out; ``--plot
RUN/backward.json --out DIR`` redraws the plot of an earlier run. Needs a CUDA
GPU for the measurements; quack is not included (see the README).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from benchmarks import ops, timing

IMPLS = ("normgen", "liger", "torch", "compile")
TOLERANCE = {"fp32": 1e-4, "fp16": 5e-3, "bf16": 3e-2}  # of the largest gradient
OPS = ("add_rmsnorm", "rmsnorm", "layernorm")
SHAPES = ((1, 4096), (32, 4096), (1024, 4096), (4096, 4096), (8192, 4096), (4096, 8192), (2048, 16384), (16384, 2048))
QUICK = ((32, 4096), (4096, 4096))
CALLS, REPS = 10, 5
ROTATE_BYTES = 256 * 2**20  # small shapes cycle through input sets until they exceed this (out of L2)


def backward_bytes(op: str, mode: str, rows: int, cols: int, elem: int) -> int:
    spec = ops.OPS[op]
    tensors = 3 + (mode in ("pre", "post"))  # dy, the normalized input (x and r in post: +1), dx; ds in pre: +1
    params = cols * elem * (2 + 2 * spec.bias)  # w read, dw written (b's db written, dy summed)
    return elem * rows * cols * tensors + params + rows * 4 * (1 + spec.bias)


def prepare(impl: str, op: str, mode: str, inputs: tuple, grad_seed: int, grad_dtype=None):
    """(forward closure, outputs, leaves, grads) of one input set for one impl; the grads are drawn in
    ``grad_dtype`` (default: the outputs') and then held in the outputs' dtype."""
    fn = ops.MAKERS[impl](op, mode)
    leaves = [t.detach().requires_grad_() for t in inputs if t is not None]
    args, it = [], iter(leaves)
    for t in inputs:
        args.append(next(it) if t is not None else None)

    def forward():
        outs = fn(*args)
        return outs[:2] if mode == "pre" else outs[:1]  # post: the residual out is y itself

    outs = forward()
    grads = [
        torch.randn(o.shape, device="cuda", generator=_gen(grad_seed)).to(grad_dtype or o.dtype).to(o.dtype)
        for o in outs
    ]
    return forward, outs, leaves, grads


def device_us(run, n: int) -> float:
    """Device microseconds per call of run(i): the kernels' device time under the profiler, over n calls."""
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for i in range(n):
            run(i)
        torch.cuda.synchronize()
    return sum(e.self_device_time_total for e in prof.key_averages()) / n


def reference_grads(op: str, mode: str, inputs: tuple) -> list:
    """The check: torch autograd of the eager formula on fp32 copies of the inputs (same dy, ds as prepare)."""
    upcast = tuple(t.float() if t is not None else None for t in inputs)
    _, outs, leaves, grads = prepare("torch", op, mode, upcast, 0, grad_dtype=inputs[0].dtype)
    return list(torch.autograd.grad(outs, leaves, grads))


def _gen(seed: int) -> torch.Generator:
    return torch.Generator(device="cuda").manual_seed(seed)


def close(got, want, dtype: str) -> bool:
    error = max(
        ((g.float() - w).abs().max() / w.abs().max().clamp(min=1e-6)).item() for g, w in zip(got, want, strict=True)
    )
    return error <= TOLERANCE[dtype]


def measure(impl: str, op: str, mode: str, rows: int, cols: int, dtype: str) -> dict:
    elem = timing.element_bytes(dtype)
    nbytes = backward_bytes(op, mode, rows, cols, elem)
    n_sets = max(1, min(16, ROTATE_BYTES // max(nbytes, 1)))
    sets = ops.make_inputs(op, rows, cols, dtype, n_sets)
    prepared = [prepare(impl, op, mode, inputs, i) for i, inputs in enumerate(sets)]
    row = {"impl": impl, "op": op, "mode": mode, "rows": rows, "cols": cols, "dtype": dtype, "bytes": nbytes}
    # the gradients of the first set, checked
    _, outs, leaves, grads = prepared[0]
    got = torch.autograd.grad(outs, leaves, grads, retain_graph=True)
    row["ok"] = close(got, reference_grads(op, mode, sets[0]), dtype)
    for _, outs, leaves, grads in prepared:  # warm up every set (Triton and Inductor compile here)
        torch.autograd.grad(outs, leaves, grads, retain_graph=True)

    def backward(i):
        _, outs, leaves, grads = prepared[i % n_sets]
        torch.autograd.grad(outs, leaves, grads, retain_graph=True)

    def both(i):
        forward, _, leaves, grads = prepared[i % n_sets]
        torch.autograd.grad(forward(), leaves, grads)

    calls = max(CALLS, n_sets)
    row["bwd_samples"] = [device_us(backward, calls) for _ in range(REPS)]
    row["both_samples"] = [device_us(both, calls) for _ in range(REPS)]
    row["bwd_us"] = statistics.median(row["bwd_samples"])
    row["both_us"] = statistics.median(row["both_samples"])
    row["gbps"] = nbytes / (row["bwd_us"] * 1e-6) / 1e9
    return row


def table(rows: list[dict], copy_gbps: float) -> str:
    head = "| op | mode | shape | dtype | impl | backward µs | GB/s | of copy | vs normgen | fwd+bwd µs | vs normgen "
    head += "| ok |"
    lines = [head, "|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---|"]
    keys = ("op", "mode", "rows", "cols", "dtype")
    for r in rows:
        base = next((b for b in rows if b["impl"] == "normgen" and all(b[k] == r[k] for k in keys)), None)
        case = f"| {r['op']} | {r['mode']} | {r['rows']}×{r['cols']} | {r['dtype']} | {r['impl']} |"
        if "error" in r or base is None or "error" in base:
            lines.append(f"{case} {r.get('error', 'normgen failed')} |||||||")
            continue
        lines.append(
            f"{case} {r['bwd_us']:.1f} | {r['gbps']:.0f} | {r['gbps'] / copy_gbps:.2f} | "
            f"{r['bwd_us'] / base['bwd_us']:.2f} | {r['both_us']:.1f} | {r['both_us'] / base['both_us']:.2f} | "
            f"{r.get('ok', '-')} |"
        )
    return "\n".join(lines) + "\n"


def plot(results: dict, path: Path) -> bool:
    """Backward fraction of copy bandwidth per shape, one panel per op (and mode), one bar per impl."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot", file=sys.stderr)
        return False
    copy = results["environment"]["copy_gbps"]
    rows = [r for r in results["results"] if "bwd_us" in r]
    panels = sorted({(r["op"], r["mode"]) for r in rows}, key=lambda p: (OPS.index(p[0]) if p[0] in OPS else 9, p[1]))
    figure, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.8), squeeze=False, sharey=True)
    for axis, (op, mode) in zip(axes[0], panels, strict=True):
        mine = [r for r in rows if r["op"] == op and r["mode"] == mode]
        shapes = sorted({(r["rows"], r["cols"]) for r in mine}, key=lambda s: s[0] * s[1])
        for i, impl in enumerate(IMPLS):
            values = {(r["rows"], r["cols"]): r["gbps"] / copy for r in mine if r["impl"] == impl}
            xs = [j + (i - 1.5) * 0.2 for j in range(len(shapes))]
            axis.bar(xs, [values.get(shape, 0.0) for shape in shapes], width=0.2, label=impl)
        axis.set_xticks(range(len(shapes)), [f"{r}×{c}" for r, c in shapes], rotation=60, fontsize=7)
        axis.set_title(f"{op}" + ("" if mode == "-" else f" ({mode})"), fontsize=9)
        axis.axhline(0.85, color="grey", linewidth=0.6, linestyle="--")
    axes[0][0].set_ylabel("backward: fraction of copy bandwidth")
    axes[0][0].legend(fontsize=7)
    env = results["environment"]
    figure.suptitle(f"Backward, {env['device']}, {env['date']}, bf16 (dashed: 0.85 of copy)", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ops", default=",".join(OPS))
    parser.add_argument("--dtypes", default="bf16")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--plot", type=Path, help="plot an earlier run's backward.json into --out (no GPU needed)")
    args = parser.parse_args(argv)
    if args.plot:
        args.out.mkdir(parents=True, exist_ok=True)
        return 0 if plot(json.loads(args.plot.read_text()), args.out / "backward.png") else 1
    if not torch.cuda.is_available():
        print("benchmarks.backward needs a CUDA GPU", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    copy = timing.copy_bandwidth()
    results = []
    for op in args.ops.split(","):
        for dtype in args.dtypes.split(","):
            for rows, cols in QUICK if args.quick else SHAPES:
                for mode in [None if m == "-" else m for m in ops.OPS[op].modes]:
                    for impl in IMPLS:
                        if not ops.has_impl(op, impl):
                            continue
                        t0 = time.perf_counter()
                        try:
                            row = measure(impl, op, mode, rows, cols, dtype)
                        except Exception as error:  # one impl failing must not end the run
                            row = {"impl": impl, "op": op, "mode": mode, "rows": rows, "cols": cols, "dtype": dtype}
                            row["error"] = f"{type(error).__name__}: {str(error).splitlines()[0][:80]}"
                        row["mode"] = mode or "-"
                        results.append(row)
                        print(f"{op} {mode} {rows}x{cols} {dtype} {impl}: {row.get('bwd_us', row.get('error'))} "
                              f"({time.perf_counter() - t0:.1f} s)", flush=True)  # fmt: skip
                    torch.cuda.empty_cache()
    props = torch.cuda.get_device_properties(0)
    env = {
        "device": props.name,
        "torch": torch.__version__,
        "copy_gbps": copy["gbps"],
        "date": time.strftime("%Y-%m-%d"),
    }
    (args.out / "backward.json").write_text(json.dumps({"environment": env, "results": results}, indent=1))
    text = f"Backward, {env['device']}, {env['date']}, copy bandwidth {copy['gbps']:.0f} GB/s\n\n" + table(
        results, copy["gbps"]
    )
    (args.out / "backward.md").write_text(text)
    plot({"environment": env, "results": results}, args.out / "backward.png")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
