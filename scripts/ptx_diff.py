"""Compare the PTX of two revisions' cuda kernels, specialization by specialization (no GPU needed);
or, without a revision to compare with, check that every cuda kernel compiles.

    git archive cefb4cc dsl generated | tar -x -C /tmp/old
    python scripts/ptx_diff.py /tmp/old [--new DIR] [--ops add_rmsnorm,add_layernorm] [--dtypes bf16,fp32]
    python scripts/ptx_diff.py --ops all          # compile only (tests/test_build.py runs this)

For a change that should leave the kernels' code as it is (a device helper in place of the
same lines in each kernel, ...): both revisions' kernels are compiled by upstream Triton for
sm_ARCH (ptxas is bundled) with line info off (TRITON_DISABLE_LINE_INFO=1: the code, not where
it came from), and the PTX compared with the kernel's name and the .file/.loc/debug sections
taken out. Specializations per op, direction and pass (single: 4 x 1024 tiles, multi: 1 x 4096
blocks): every constexpr switch on with EVEN_M, EVEN_N, VEC=8, a tile grid; then each of
PERSISTENT, both masks, the column mask alone, VEC=1, post mode, NATIVE_FP8 off, NATIVE_INT8
off and LOOP_STAGES=2 changed alone (where the kernel takes it), and persistent + both masks + VEC=1
together; SPLIT_N is 0 but for its own specialization (32). Exit status 1 when any differs.

Compile only (no old_root): each kernel of every op (--ops all: every cuda module) in two
specializations, the base with SPLIT_N 32 and one with every other change the kernel takes at
once; exit status 2 when one does not compile (Triton's interpreter, which the CPU tests use,
never runs the compiler).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OPS = "add_rmsnorm,add_layernorm,add_rmsnorm_fp8,add_layernorm_int8"
ELEMENT = {"int8": "i8", "uint8": "u8", "fp32": "fp32"}
BASE = {"EVEN_M": True, "EVEN_N": True, "VEC": 8, "PERSISTENT": False, "LOOP_STAGES": 1, "SPLIT_N": 0}
CHANGES = {
    "base": {},
    "persistent": {"PERSISTENT": True},
    "masks": {"EVEN_M": False, "EVEN_N": False},
    "col-mask": {"EVEN_N": False},
    "vec1": {"VEC": 1},
    "post": {"PRE": False},
    "emulated-fp8": {"NATIVE_FP8": False},
    "emulated-int8": {"NATIVE_INT8": False},
    "stages2": {"LOOP_STAGES": 2},
    "split": {"SPLIT_N": 32},
    "int64-rows": {"SMALL_OFFSETS": False},
    "persistent-masks-vec1": {"PERSISTENT": True, "EVEN_M": False, "EVEN_N": False, "VEC": 1},
}
DIRECTIONS = (("forward", ""), ("backward", "BACKWARD_"))
# compile only: a kernel takes the names of a change that it has (the others are dropped)
CHECKS = {
    "base-split": {"SPLIT_N": 32},
    "all-changed": {
        "PERSISTENT": True,
        "EVEN_M": False,
        "EVEN_N": False,
        "VEC": 1,
        "PRE": False,
        "NATIVE_FP8": False,
        "NATIVE_INT8": False,
        "LOOP_STAGES": 2,
        "SMALL_OFFSETS": False,
    },
}


def strip(ptx: str, name: str) -> list[str]:
    """The PTX's code lines: no comments, debug sections, .file/.loc lines; the kernel's name as KERNEL."""
    ptx = re.sub(r"\t\.section\t\.debug.*?\n\t}", "", ptx, flags=re.S)
    lines = []
    for line in ptx.splitlines():
        line = line.split("//")[0].rstrip()
        if not line or re.match(r"\s*\.(file|loc)\b", line):
            continue
        lines.append(line.replace(name, "KERNEL"))
    return lines


def worker(root: str, ops: str, dtype: str, arch: int, check: bool = False) -> None:
    """Print {label: ptx lines} as JSON for one revision (a process of its own, that revision first on
    sys.path); ``ops``: one op, or several comma-separated; check: compile CHECKS' specializations,
    print their labels only."""
    sys.path.insert(0, root)
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    out = {}
    for op, direction, prefix in [(op, d, p) for op in ops.split(",") for d, p in DIRECTIONS]:
        module = importlib.import_module(f"generated.{op}_cuda")
        if not hasattr(module, prefix + "KERNELS"):
            continue
        abi = {p.name: p for p in getattr(module, prefix + "ABI").params}
        for passes, kernel in getattr(module, prefix + "KERNELS").items():
            block_m, block_n = (4, 1024) if passes == "single" else (1, 4096)
            for change, values in (CHECKS if check else CHANGES).items():
                if check:
                    values = {name: value for name, value in values.items() if name in kernel.arg_names}
                elif not set(values) <= set(kernel.arg_names):
                    continue
                signature, constants = {}, {}
                for name in kernel.arg_names:
                    p = abi[name]
                    if p.kind.value == "pointer":
                        signature[name] = "*" + ELEMENT.get(p.element, dtype)
                    elif p.kind.value in ("scalar", "row_stride"):
                        signature[name] = "fp32" if p.source.value == "eps" else "i32"
                    else:
                        chosen = {**BASE, "BLOCK_M": block_m, "BLOCK_N": block_n, **values}
                        constants[name] = chosen.get(name, True)  # other switches (optional inputs, PRE, ...) on
                full = {**signature, **dict.fromkeys(constants, "constexpr")}
                source = ASTSource(fn=kernel, signature=full, constexprs=constants)
                compiled = triton.compile(source, target=GPUTarget("cuda", arch, 32), options={"num_warps": 4})
                label = f"{op}/{direction}/{passes}/{change}" if check else f"{direction}/{passes}/{change}"
                out[label] = [] if check else strip(compiled.asm["ptx"], kernel.__name__)
    print(json.dumps(out))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old_root", nargs="?", help="a folder holding the other revision's dsl/ and generated/")
    parser.add_argument("--new", default=str(ROOT), help="the folder compared with it (default: this checkout)")
    parser.add_argument("--ops", default=DEFAULT_OPS, help=f"comma-separated op names (default {DEFAULT_OPS})")
    parser.add_argument("--dtypes", default="bf16", help="comma-separated dtypes (default bf16)")
    parser.add_argument("--arch", type=int, default=90, help="compute capability, e.g. 90 for H100 (default)")
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--check", action="store_true", help=argparse.SUPPRESS)  # a worker's compile-only mode
    args = parser.parse_args()
    if args.worker:
        worker(*args.worker, args.arch, args.check)
        return 0
    env = {**os.environ, "TRITON_DISABLE_LINE_INFO": "1", "TRITON_INTERPRET": "0", "PYTHONPATH": ""}
    if args.ops == "all":
        modules = (Path(args.new) / "generated").glob("*_cuda.py")
        args.ops = ",".join(sorted(p.name.removesuffix("_cuda.py") for p in modules))
    if args.old_root is None:  # compile only, every op in one process
        compiled = 0
        for dtype in args.dtypes.split(","):
            command = [sys.executable, __file__, "--arch", str(args.arch), "--check", "--worker", args.new]
            run = subprocess.run(command + [args.ops, dtype], capture_output=True, text=True, env=env, cwd="/")
            if run.returncode:
                print(f"{dtype}: a kernel does not compile\n{run.stderr[-3000:]}")
                return 2
            compiled += len(json.loads(run.stdout.strip().splitlines()[-1]))
        print(f"{compiled} specializations compiled for sm_{args.arch}")
        return 0
    same = differ = 0
    for op in args.ops.split(","):
        for dtype in args.dtypes.split(","):
            results = []
            for root in (args.old_root, args.new):
                command = [sys.executable, __file__, "--arch", str(args.arch), "--worker", root, op, dtype]
                run = subprocess.run(command, capture_output=True, text=True, env=env, cwd="/")
                if run.returncode:
                    print(run.stderr[-3000:])
                    return 2
                results.append(json.loads(run.stdout.strip().splitlines()[-1]))
            old, new = results
            if old.keys() != new.keys():
                print(f"DIFFERS {op} {dtype}: specializations {sorted(old.keys() ^ new.keys())}")
                differ += 1
            for label in old.keys() & new.keys():
                if old[label] == new[label]:
                    same += 1
                else:
                    differ += 1
                    print(f"DIFFERS {op} {dtype} {label}")
            print(f"{op} {dtype}: {len(old)} specializations compared ({', '.join(sorted(old))})", flush=True)
    print(f"{same} specializations with identical PTX, {differ} differ")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
