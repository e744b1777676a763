"""Move the single-pass forward kernels' parameter loads into the row loop, right before their first use."""

import re
import sys

root = sys.argv[1]
for op in sys.argv[2].split(","):
    p = f"{root}/generated/{op}_cuda.py"
    s = open(p).read()
    i = s.index("def " + op + "_forward_single")
    j = s.index("@triton.jit", i)
    k = s[i:j]
    a = k.index("    # per-column parameters, loaded once per program\n")
    b = k.index("    first, stop, step")
    loads = k[a:b].split("\n")[1:-1]
    k = k[:a] + k[b:]
    lines = k.split("\n")
    idx = next(n for n, line in enumerate(lines) if re.search(r"\b[wb]\[None, :\]", line))
    lines[idx:idx] = ["    " + line for line in loads]
    s = s[:i] + "\n".join(lines) + s[j:]
    open(p, "w").write(s)
