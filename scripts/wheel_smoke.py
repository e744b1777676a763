"""Smoke test of an installed normgen wheel; run by scripts/wheel_smoke.sh from a folder outside the checkout.

Checks that the installed packages (not a checkout) are the ones imported, that
an op and a module run on CPU tensors and match an fp32 formula, that the C++ host
path builds from the installed sources (where a compiler is found), and that the
normgen-build console script turns a user's spec folder into a package that
imports and runs, while refusing to write into the installed generated/.
"""

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import torch

import dsl
import generated

SITE = Path(sysconfig.get_paths()["purelib"]).resolve()
HERE = Path.cwd()

USER_SPEC = """\
# a user's own op: residual add (pre only) + RMSNorm, fp32 and bf16, cuda kernels only
op my_norm {
    norm     = rms
    residual = pre
    dtypes   = fp32, bf16
    targets  = cuda
}
"""

USE_PACKAGE = """\
import sys
import torch
import my_ops

assert my_ops.__file__.startswith(sys.argv[1]), my_ops.__file__
x, r = torch.randn(3, 96), torch.randn(3, 96)
w = torch.rand(96) + 0.5
y, s = my_ops.my_norm(x, r, w)
torch.testing.assert_close(s, x + r)
torch.testing.assert_close(y, s * torch.rsqrt(s.pow(2).mean(-1, keepdim=True) + 1e-6) * w)
with torch.no_grad():  # the module's weight requires grad; normgen has no backward yet
    y2, _ = my_ops.MyNorm(96, dtype=torch.bfloat16)(x.bfloat16(), r.bfloat16())
assert y2.dtype is torch.bfloat16
print("my_ops.my_norm: ok")
"""


def check(condition: bool, message: str) -> None:
    if not condition:
        sys.exit(f"wheel smoke test: FAILED: {message}")


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=300)


def main() -> None:
    # the installed copies, not a checkout
    for module in (dsl, generated):
        where = Path(module.__file__).resolve()
        check(where.is_relative_to(SITE), f"{module.__name__} imported from {where}, not from {SITE}")

    # one op on CPU tensors (the generated reference) against the formula
    x = torch.randn(4, 128)
    w = torch.rand(128) + 0.5
    y = generated.rmsnorm(x, w)
    torch.testing.assert_close(y, x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * w)
    module = generated.AddRMSNorm(128, dtype=torch.bfloat16)
    with torch.no_grad():  # its weight requires grad, and normgen has no backward yet
        y, s = module(x.bfloat16(), x.bfloat16())
    check(y.dtype is torch.bfloat16 and s.dtype is torch.bfloat16, "AddRMSNorm(dtype=bf16) output dtype")
    print("generated.rmsnorm, generated.AddRMSNorm: ok")

    # the C++ host path builds from the wheel's own sources (every file it includes shipped)
    from dsl import host

    if host._compiler():
        os.environ["NORMGEN_CACHE_DIR"] = str(HERE / "host-cache")
        check(Path(host.build().__file__).is_relative_to(HERE / "host-cache"), "the C++ host path's build")
        print("C++ host path: built from the installed sources")
    else:
        print("C++ host path: no C++ compiler here, not built")

    build = shutil.which("normgen-build")
    check(build is not None and Path(build).resolve().parent.parent == Path(sys.prefix).resolve(), f"{build}")

    # the installed generated/ matches the shipped specs (read-only) ...
    result = run(build, "--check")
    check(result.returncode == 0, f"normgen-build --check: {result.stdout}{result.stderr}")
    # ... and writing needs --out: site-packages is never written to
    before = sorted(p.name for p in (SITE / "generated").iterdir())
    result = run(build)
    check(result.returncode == 2 and "--out DIR is required" in result.stderr, f"normgen-build: {result.stderr}")
    check(sorted(p.name for p in (SITE / "generated").iterdir()) == before, "normgen-build wrote into site-packages")

    # a user's spec folder into a package of their own, then imported and called
    specs = HERE / "my_specs"
    specs.mkdir()
    (specs / "my_norm.norm").write_text(USER_SPEC, encoding="utf-8")
    result = run(build, "--specs", "my_specs", "--out", "pkgs/my_ops")
    check(result.returncode == 0, f"normgen-build --specs --out: {result.stdout}{result.stderr}")
    # next to the package, as a user's script would be (its folder is on sys.path)
    (HERE / "pkgs" / "use_my_ops.py").write_text(USE_PACKAGE, encoding="utf-8")
    result = run(sys.executable, str(HERE / "pkgs" / "use_my_ops.py"), str(HERE / "pkgs"))
    check(result.returncode == 0, f"using the built package: {result.stdout}{result.stderr}")
    print(result.stdout, end="")
    print("wheel smoke test: passed")


if __name__ == "__main__":
    main()
