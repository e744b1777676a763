"""Registers and stack (spills) of one generated cuda kernel specialization, from its cubin's resource
usage (cuobjdump -res-usage, bundled with Triton; no GPU).

python regs.py OP PASSES BLOCK_M BLOCK_N WARPS [NAME=VALUE ...] [--root DIR]
"""

import importlib
import os
import re
import subprocess
import sys
import tempfile

args = [a for a in sys.argv[1:]]
root = None
if "--root" in args:
    i = args.index("--root")
    root = args[i + 1]
    del args[i : i + 2]
    sys.path.insert(0, root)
import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

op, passes, block_m, block_n, warps = args[:5]
extra = dict(a.split("=") for a in args[5:])
module = importlib.import_module(f"generated.{op}_cuda")
kernel = module.KERNELS[passes]
abi = {p.name: p for p in module.ABI.params}
ELEMENT = {"int8": "i8", "uint8": "u8", "fp32": "fp32"}
BASE = {
    "EVEN_M": True,
    "EVEN_N": True,
    "VEC": 8,
    "PERSISTENT": False,
    "LOOP_STAGES": 1,
    "SPLIT_N": 0,
    "NATIVE_FP8": True,
    "NATIVE_INT8": True,
}
signature, constants = {}, {}
for name in kernel.arg_names:
    p = abi[name]
    if p.kind.value == "pointer":
        signature[name] = "*" + ELEMENT.get(p.element, extra.get("dtype", "bf16"))
    elif p.kind.value in ("scalar", "row_stride"):
        signature[name] = "fp32" if p.source.value == "eps" else "i32"
    else:
        chosen = {**BASE, "BLOCK_M": int(block_m), "BLOCK_N": int(block_n)}
        for k, v in extra.items():
            if k != "dtype":
                chosen[k] = {"True": True, "False": False}.get(v, int(v) if v.lstrip("-").isdigit() else v)
        constants[name] = chosen.get(name, True)
full = {**signature, **dict.fromkeys(constants, "constexpr")}
compiled = triton.compile(
    ASTSource(fn=kernel, signature=full, constexprs=constants),
    target=GPUTarget("cuda", 90, 32),
    options={"num_warps": int(warps), **({"maxnreg": int(os.environ["MAXNREG"])} if os.environ.get("MAXNREG") else {})},
)
bindir = os.path.join(os.path.dirname(triton.__file__), "backends/nvidia/bin")
with tempfile.NamedTemporaryFile("wb", suffix=".cubin", delete=False) as f:
    f.write(compiled.asm["cubin"])
out = subprocess.run([os.path.join(bindir, "cuobjdump"), "-res-usage", f.name], capture_output=True, text=True)
info = " ".join(re.findall(r"(REG:\d+|STACK:\d+|LOCAL:\d+)", out.stdout)) or (out.stderr + out.stdout)[-600:]
print(f"{op} {passes} m{block_m} n{block_n} w{warps} {extra}: {info}")
if os.environ.get("SASS"):
    open(os.environ["SASS"], "w").write(compiled.asm["ptx"])
