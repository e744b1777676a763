"""Host time of a torch.compile'd function around normgen's op against the same function around torch's norm.

    python -m benchmarks.compiled [--out DIR] [--ops add_rmsnorm,rmsnorm,layernorm]
                                  [--shapes 8x4096,1x4096,64x8192,4096x4096] [--dtype bf16]
                                  [--calls 1000] [--rounds 15]
    python -m benchmarks.compiled --self-test [--out DIR]   # CPU: every function runs once, the writers

Per op and shape, each function is compiled with ``torch.compile(fullgraph=True)``
(Inductor) and timed in turns, ``rounds`` rounds in one process, median reported:

* normgen compiled: ``generated.<op>`` (pre mode for residual ops), inside which
  Inductor launches normgen's Triton kernel from its own code (``dsl/compiled.py``);
* normgen compiled, dynamic: the same with ``dynamic=True``;
* normgen compiled, static launcher: the same compiled with Inductor's
  ``static_launch_user_defined_triton_kernels`` on (a user's choice: off by default), which
  launches the kernel through Inductor's own C launcher instead of Triton's; the table says
  whether the kernel was launched that way (Inductor falls back to Triton's launcher silently);
* normgen compiled, checked path: the same function compiled and timed with the op's lean
  compiled entry set aside (``dsl/custom_ops.py``, ``compiling_entry``): dynamo traces the op's
  full checks, as every call did before the entry existed;
* torch compiled: the same formula with torch's own norm (``x + r``, then
  ``F.rms_norm`` or ``F.layer_norm``), which Inductor fuses into its own kernel;
* torch compiled, dynamic: the same with ``dynamic=True`` (what the dynamic normgen row compares with);
* normgen eager: the op's eager call (for reference).

Host time per call: ``calls`` back-to-back calls, one synchronize (``timing.host_time_us``).
Device time per call: CUDA-graph replay of the same functions (``timing.graph_time_us``),
normgen compiled against normgen eager ("device time unchanged"), and whether the two
give the same bits. Writes DIR/compiled.json and DIR/compiled.md (default
benchmarks/results/) and prints the table.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import platform
import sys
import time
import types
from pathlib import Path

import torch
import torch.nn.functional as F

from benchmarks import timing

STATIC = "normgen compiled, static launcher"
IMPLS = (
    "normgen compiled",
    "normgen compiled, dynamic",
    "normgen compiled, checked path",
    STATIC,
    "torch compiled",
    "torch compiled, dynamic",
    "normgen eager",
)
CHECKED = "normgen compiled, checked path"  # compiled, called and timed with op._compiling set to None


def _copy(fn):
    """fn with a code object of its own: dynamo keeps its compiled entries per code object, so each
    impl's guards are tested alone, never after another impl's failing ones."""
    return types.FunctionType(fn.__code__.replace(), fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)


@contextlib.contextmanager
def _checked_path(op, impl: str):
    """While ``impl`` is the checked-path one: the op's compiled entry set aside."""
    entry = op._compiling
    if impl == CHECKED:
        op._compiling = None
    try:
        yield
    finally:
        op._compiling = entry


@contextlib.contextmanager
def _first_call(impl: str):
    """Around an impl's first call (its compile): the static launcher's option on for STATIC.
    Inductor keeps compiled kernels in memory by their source, which the launcher option does not
    change: the cache is emptied before and after, so no impl gets another's launcher. The kernels
    are compiled in this process: Inductor's compile workers do not see a patched option."""
    from torch._inductor import async_compile
    from torch._inductor import config as inductor_config

    if impl != STATIC:
        yield
        return
    async_compile.CompiledTritonKernels.cache_clear()
    try:
        with inductor_config.patch(
            static_launch_user_defined_triton_kernels=True, force_disable_caches=True, compile_threads=1
        ):
            yield
    finally:
        async_compile.CompiledTritonKernels.cache_clear()


def _static_launch(fn, inputs) -> bool:
    """Whether a call of fn goes through Inductor's static launcher (a Python frame of it is seen)."""
    seen = []

    def profile(frame, event, arg):
        if event == "call" and frame.f_code.co_filename.endswith("static_triton_launcher.py"):
            seen.append(True)

    sys.setprofile(profile)
    try:
        fn(*inputs)
    finally:
        sys.setprofile(None)
    return bool(seen)


def functions(name: str, rows: int, cols: int, dtype: str, device: str, backend: str) -> tuple[dict, tuple, object]:
    """impl -> callable of the inputs, the inputs (x[, residual], weight[, bias]) and the op's ``Op``."""
    package = importlib.import_module(f"generated.{name}")
    op, normgen = package.OP, getattr(package, name)
    torch_dtype = timing.DTYPES[dtype]
    g = torch.Generator().manual_seed(0)
    x, r = (torch.randn(rows, cols, generator=g).to(device, torch_dtype) for _ in range(2))
    w = (1 + 0.1 * torch.randn(cols, generator=g)).to(device, torch_dtype)
    b = (0.1 * torch.randn(cols, generator=g)).to(device, torch_dtype) if op.has_bias else None
    eps = 1e-6 if "rms" in name else 1e-5
    layer = op.has_bias or "mean" in op.stats
    if op.has_residual:
        inputs = (x, r, w) + ((b,) if b is not None else ())

        def mine(x, r, w, b=None):
            return normgen(x, r, w, *((b,) if op.has_bias else ()), eps=eps, norm_pos="pre")

        def theirs(x, r, w, b=None):
            s = x + r
            y = F.layer_norm(s, (cols,), w, b, eps) if layer else F.rms_norm(s, (cols,), w, eps)
            return y, s
    else:
        inputs = (x, w) + ((b,) if b is not None else ())

        def mine(x, w, b=None):
            return normgen(x, w, *((b,) if op.has_bias else ()), eps=eps)

        def theirs(x, w, b=None):
            return F.layer_norm(x, (cols,), w, b, eps) if layer else F.rms_norm(x, (cols,), w, eps)

    impls = {
        "normgen compiled": torch.compile(_copy(mine), fullgraph=True, backend=backend),
        "normgen compiled, dynamic": torch.compile(_copy(mine), fullgraph=True, dynamic=True, backend=backend),
        CHECKED: torch.compile(_copy(mine), fullgraph=True, backend=backend),
        STATIC: torch.compile(_copy(mine), fullgraph=True, backend=backend),
        "torch compiled": torch.compile(_copy(theirs), fullgraph=True, backend=backend),
        "torch compiled, dynamic": torch.compile(_copy(theirs), fullgraph=True, dynamic=True, backend=backend),
        "normgen eager": mine,
    }
    return impls, inputs, op


def _bits(out) -> list[torch.Tensor]:
    return [t.view(torch.uint8) for t in (out if isinstance(out, tuple) else (out,))]


def measure(ops, shapes, dtype, calls, rounds, device, backend) -> list[dict]:
    """One row per op, shape and impl: host µs (median, samples), device µs, ratios, same bits as eager."""
    results = []
    for name in ops:
        for rows, cols in shapes:
            torch._dynamo.reset()  # one code object per impl across ops and shapes: no recompile limit
            impls, inputs, op = functions(name, rows, cols, dtype, device, backend)
            outputs = {}
            for impl, fn in sorted(impls.items(), key=lambda item: item[0] == STATIC):  # STATIC last
                with _checked_path(op, impl), _first_call(impl):
                    outputs[impl] = fn(*inputs)  # compiles
            eager = _bits(outputs["normgen eager"])
            host = {impl: [] for impl in impls}
            for _ in range(rounds):
                for impl, fn in impls.items():
                    with _checked_path(op, impl):
                        if device != "cuda":  # self-test: one call, its time meaningless
                            start = time.perf_counter_ns()
                            fn(*inputs)
                            host[impl].append((time.perf_counter_ns() - start) / 1e3)
                            continue
                        host[impl] += timing.host_time_us(fn, inputs, calls=calls, reps=1, warmup=20)
            us = {impl: timing.median(values) for impl, values in host.items()}
            for impl, fn in impls.items():
                device_us = None
                if device == "cuda":
                    with _checked_path(op, impl):
                        device_us = timing.median(timing.graph_time_us(fn, [inputs], calls=20, reps=5))
                same = None
                if impl.startswith("normgen"):
                    same = all(torch.equal(a, b) for a, b in zip(_bits(outputs[impl]), eager, strict=True))
                row = {"op": name, "shape": [rows, cols], "impl": impl, "host_us": us[impl]}
                base = "torch compiled, dynamic" if impl.endswith("dynamic") else "torch compiled"
                row |= {"x_torch_compiled": us[impl] / us[base], "device_us": device_us}
                if impl.startswith("normgen compiled") and device == "cuda":
                    with _checked_path(op, impl):
                        row["static_launch"] = _static_launch(fn, inputs)
                results.append(row | {"same_bits_as_eager": same, "samples": host[impl]})
    return results


def markdown(meta: dict, results: list[dict]) -> str:
    lines = [
        f"# Host time per call of a compiled function ({meta['dtype']}, {meta['backend']})",
        "",
        f"{meta['device']}; torch {meta['torch']}, triton {meta['triton']}, Python {meta['python']}; "
        f"{meta['date']}. Median host µs of {meta['rounds']} interleaved rounds of {meta['calls']} calls; "
        "device µs per call from CUDA-graph replay. × torch: host time over `torch.compile` of the same "
        "formula with torch's own norm (the dynamic rows: over torch's with dynamic=True).",
        "",
        "| op | shape | impl | host µs | × torch compiled | device µs | same bits as eager | static launch |",
        "|---|---|---|--:|--:|--:|---|---|",
    ]
    for row in results:
        device = "" if row["device_us"] is None else f"{row['device_us']:.2f}"
        same = {None: "", True: "yes", False: "**no**"}[row["same_bits_as_eager"]]
        launch = {None: "", True: "yes", False: "no"}[row.get("static_launch")]
        shape = "×".join(str(v) for v in row["shape"])
        lines.append(
            f"| {row['op']} | {shape} | {row['impl']} | {row['host_us']:.2f} | "
            f"{row['x_torch_compiled']:.2f} | {device} | {same} | {launch} |"
        )
    return "\n".join(lines) + "\n"


def write(out: Path, meta: dict, results: list[dict]) -> str:
    out.mkdir(parents=True, exist_ok=True)
    text = markdown(meta, results)
    (out / "compiled.md").write_text(text)
    (out / "compiled.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1) + "\n")
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--ops", default="add_rmsnorm,rmsnorm,layernorm")
    parser.add_argument("--shapes", default="8x4096,1x4096,64x8192,4096x4096")
    parser.add_argument("--dtype", default="bf16", choices=list(timing.DTYPES))
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--self-test", action="store_true", help="CPU: every function runs once; the writers")
    args = parser.parse_args(argv)
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    device, backend = "cuda", "inductor"
    if args.self_test:
        # CPU: the ops take the custom op (reference or interpreter); aot_eager keeps it quick
        os.environ["TRITON_INTERPRET"] = "1"  # before generated is imported
        device, backend, shapes, args.rounds = "cpu", "aot_eager", [(3, 64)], 2
    elif not torch.cuda.is_available():
        print("benchmarks.compiled needs a CUDA GPU (try --self-test)", file=sys.stderr)
        return 2
    import triton

    with torch.no_grad():
        results = measure(args.ops.split(","), shapes, args.dtype, args.calls, args.rounds, device, backend)
    if args.self_test:
        want = {(n, i) for n in args.ops.split(",") for i in IMPLS}
        missing = want - {(r["op"], r["impl"]) for r in results}
        wrong = [(r["op"], r["impl"]) for r in results if r["same_bits_as_eager"] is False]
        if missing or wrong:
            print(f"benchmarks.compiled self-test: missing {sorted(missing)}, differing {wrong}", file=sys.stderr)
            return 1
    meta = {
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu (self-test: no timing)",
        "backend": backend,
        "torch": torch.__version__,
        "triton": triton.__version__,
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "dtype": args.dtype,
        "calls": args.calls,
        "rounds": args.rounds,
    }
    print(write(args.out, meta, results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
