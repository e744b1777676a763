"""Compare the machine code (SASS) of two revisions' cuda kernels, specialization by specialization.

    git archive d1b9f60 dsl generated | tar -x -C /tmp/old
    TRITON_DISABLE_LINE_INFO=1 python scripts/sass_diff.py /tmp/old [--ops add_rmsnorm,...] [--dtypes bf16,fp32]

OLD_ROOT holds v1's ``dsl/`` and ``generated/``, whose kernels are one function
per (mode, pass, row mask, column mask, grid) variant. This checkout's kernels (one
per pass, those choices as constexprs) are compiled for the same shapes with
upstream Triton's bundled ptxas, for sm_ARCH (no GPU needed), and the SASS
instructions compared: exactly where both kernels take the same parameters, else
up to the parameters' constant-bank offsets (a post-mode kernel of an op with
both modes takes the unused RES_ptr and RES_row_stride). Exit status 1 when any
specialization differs. With Triton's line info on (its default), ptxas may
assign registers differently where the debug locations differ (the helpers of
dsl/device.py live in another file); TRITON_DISABLE_LINE_INFO=1 compares the code
itself. v1 kernels have no ABI: their parameters are typed by name from this
checkout's ABI (the names did not change).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ELEMENT = {"int8": "i8", "uint8": "u8", "fp32": "fp32"}


def cases(modes: list[str]) -> list[dict]:
    """Specializations: pass, mode, masks, grid, blocks (single: 4 x 1024 tiles; multi: 1 x 4096 blocks)."""
    result = []
    for mode in modes:
        for passes, block_m, block_n in (("single", 4, 1024), ("multi", 1, 4096)):
            for grid in ("tiles", "persistent"):
                for row_mask in (False, True) if block_m > 1 else (False,):
                    for col_mask in (False, True):
                        result.append(
                            dict(
                                mode=mode,
                                passes=passes,
                                block_m=block_m,
                                block_n=block_n,
                                grid=grid,
                                row_mask=row_mask,
                                col_mask=col_mask,
                            )
                        )
    return result


def compile_sass(kernel, signature: dict, constants: dict, arch: int) -> list[str]:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    full = {**signature, **{name: "constexpr" for name in constants}}
    source = ASTSource(fn=kernel, signature=full, constexprs=constants)
    cubin = triton.compile(source, target=GPUTarget("cuda", arch, 32), options={"num_warps": 4}).asm["cubin"]
    with tempfile.NamedTemporaryFile(suffix=".cubin") as file:
        file.write(cubin)
        file.flush()
        tool = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
        text = subprocess.run([str(tool), "-sass", file.name], capture_output=True, text=True, check=True).stdout
    # instruction lines look like "        /*0040*/  IMAD.MOV.U32 R1, RZ, RZ, c[0x0][0x28] ;"
    return [
        re.sub(r"/\*[0-9a-f]{4}\*/", "", line).split(";")[0].strip()
        for line in text.splitlines()
        if re.match(r"\s+/\*[0-9a-f]{4}\*/", line)
    ]


def worker(root: str, side: str, op: str, dtype: str, arch: int) -> None:
    """Print {case: {params, sass}} as JSON for one revision (a process of its own, that revision first on sys.path)."""
    sys.path.insert(0, root)
    os.environ["TRITON_INTERPRET"] = "0"
    module = importlib.import_module(f"generated.{op}_cuda")
    out = {}
    # The parameter types come from this checkout's ABI (the names are the same in both revisions).
    abi = json.loads(os.environ["SASS_DIFF_ABI"])
    modes = json.loads(os.environ["SASS_DIFF_MODES"])
    for case in cases(modes):
        if side == "old":
            key = (case["mode"], case["passes"], case["row_mask"], case["col_mask"], case["grid"])
            kernel = module.KERNELS.get(key)
            if kernel is None:
                continue
        else:
            kernel = module.KERNELS[case["passes"]]
        signature, constants = {}, {}
        for name in kernel.arg_names:
            kind, source, element = abi[name]
            if kind == "pointer":
                signature[name] = "*" + ELEMENT.get(element, dtype)
            elif kind in ("scalar", "row_stride"):
                signature[name] = "fp32" if source == "eps" else "i32"
            else:  # constexprs: the case's, and every optional input and store on
                constants[name] = {
                    "BLOCK_M": case["block_m"],
                    "BLOCK_N": case["block_n"],
                    "VEC": 8,
                    "EVEN_M": not case["row_mask"],
                    "EVEN_N": not case["col_mask"],
                    "PERSISTENT": case["grid"] == "persistent",
                    "PRE": case["mode"] == "pre",
                }.get(name, True)
        label = "/".join(str(case[k]) for k in ("mode", "passes", "grid", "row_mask", "col_mask"))
        out[label] = {"params": list(signature), "sass": compile_sass(kernel, signature, constants, arch)}
    print(json.dumps(out))


def masked(sass: list[str]) -> list[str]:
    return [re.sub(r"c\[0x0\]\[0x[0-9a-f]+\]", "c[0x0][PARAM]", line) for line in sass]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old_root", nargs="?", help="a folder holding v1's dsl/ and generated/")
    parser.add_argument("--ops", help="comma-separated op names (default: every shipped op with a cuda target)")
    parser.add_argument("--dtypes", default="bf16", help="comma-separated dtypes (default bf16)")
    parser.add_argument("--arch", type=int, default=90, help="compute capability, e.g. 90 for H100 (default)")
    parser.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        root, side, op, dtype = args.worker
        worker(root, side, op, dtype, args.arch)
        return 0
    sys.path.insert(0, str(ROOT))
    from dsl import pipeline
    from dsl.model import Target
    from dsl.plan import plan

    specs = [s for s in pipeline.load_specs(pipeline.SPECS) if Target.CUDA in s.targets]
    wanted = args.ops.split(",") if args.ops else [s.name for s in specs]
    differ = same = offsets = 0
    for spec in specs:
        if spec.name not in wanted:
            continue
        signature = plan(spec, Target.CUDA).signature
        abi = {p.name: (p.kind.value, p.source.value, p.element) for p in signature.params}
        modes = [m.value for m in spec.residual] or ["none"]
        env = {**os.environ, "SASS_DIFF_ABI": json.dumps(abi), "SASS_DIFF_MODES": json.dumps(modes), "PYTHONPATH": ""}
        for dtype in args.dtypes.split(","):
            results = {}
            for side, root in (("old", args.old_root), ("new", str(ROOT))):
                command = [sys.executable, __file__, "--arch", str(args.arch), "--worker", root, side, spec.name, dtype]
                run = subprocess.run(command, capture_output=True, text=True, env=env, cwd="/")
                if run.returncode:
                    print(run.stderr[-3000:])
                    return 2
                results[side] = json.loads(run.stdout.strip().splitlines()[-1])
            for label, old in results["old"].items():
                new = results["new"][label]
                if old == new:
                    same += 1
                elif old["params"] != new["params"] and masked(old["sass"]) == masked(new["sass"]):
                    offsets += 1
                else:
                    differ += 1
                    print(f"DIFFERS {spec.name} {dtype} {label}")
            print(f"{spec.name} {dtype}: {len(results['old'])} old variants compared", flush=True)
    print(f"{same} specializations identical, {offsets} identical up to parameter offsets, {differ} differ")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
