"""normgen's generator on the command line: ``python build.py`` in a checkout, ``normgen-build`` when installed.

    python build.py                  regenerate generated/ from dsl/specs/ (writes only what changed)
    python build.py --check          write nothing; exit 1 with a diff if generated/ is stale
    python build.py --list           each op, its kernels and its dispatch tables
    python build.py --specs DIR --out DIR   your own specs into your own package
    python build.py --tune cuda      measure cuda configs on this GPU, write dsl/tuning/cuda.json
    python build.py --tune npu       measure npu tiles on this NPU, write dsl/tuning/npu.json

From an installed copy (``pip install normgen``), ``normgen-build --specs DIR --out
DIR`` does the same for your own specs; there ``--out`` is required to write
(the installed ``generated`` package is never written to), ``--specs`` defaults
to the shipped specs, and ``--check`` without ``--out`` compares the installed
``generated`` package with them.

--check, --list and --tune exclude each other; --tune takes neither --out nor
--namespace; in a checkout, --specs other than the shipped folder needs --out to
write (it would otherwise replace the shipped ops in generated/); an empty --specs
or --out is refused.

Spec, command-line, --out and tuning-file errors exit with status 2, an internal
error with status 1 and one line (no traceback unless --debug).
"""

from __future__ import annotations

import argparse
import keyword
import sys
from pathlib import Path

from . import emit, pipeline
from .diagnostics import SpecError
from .plan import plan
from .targets import TuningError

# A source checkout has build.py next to dsl/; an installed copy (site-packages) does not.
IN_CHECKOUT = (pipeline.ROOT / "build.py").is_file()

# torch.library namespaces that PyTorch itself defines ops in (tests/test_cli.py checks them against
# torch's registered ops: an op built into one landed among torch's, e.g. in torch.ops.sparse).
TORCH_NAMESPACES = ("aten", "prim", "prims", "quantized", "_quantized", "torch", "inductor", "higher_order")
TORCH_NAMESPACES += ("profiler", "export", "debug_mode_ops", "rngprims", "debugprims", "mkldnn", "mkl", "onednn")
TORCH_NAMESPACES += ("c10d", "_c10d_functional", "_c10d_functional_autograd", "_dtensor", "_native", "_test")
TORCH_NAMESPACES += ("inductor_prims", "mkldnn_prepacked", "quantization", "sparse", "static_runtime", "symm_mem")
# Attributes of torch.ops itself: torch.ops.NAME is not a namespace there.
TORCH_OPS_ATTRIBUTES = ("import_module", "load_library", "loaded_libraries")


class UsageError(Exception):
    """A command-line value that cannot work; the message is one line."""


def namespace_for(out: Path, given: str | None) -> str:
    """The torch.library namespace: --namespace, else normgen for generated/, else --out's name."""
    if given is not None:
        name, where = given, f"--namespace {given!r}"
        fix = "pass a Python identifier, e.g. --namespace my_ops"
    else:
        name = "normgen" if out.resolve() == pipeline.GENERATED else out.resolve().name
        where = f"the default namespace {name!r} (from the --out folder's name)"
        fix = "pass --namespace NAME, or rename the --out folder to a Python identifier"
    if keyword.iskeyword(name) or keyword.issoftkeyword(name):
        raise UsageError(f"{where} is a Python keyword; {fix}")
    if name in TORCH_NAMESPACES:
        raise UsageError(f"{where} is one of PyTorch's own operator namespaces; {fix}")
    if name in TORCH_OPS_ATTRIBUTES or name.startswith("_"):
        why = (
            "starts with '_' (torch.ops keeps such names for itself)"
            if name.startswith("_")
            else "names an attribute of torch.ops"
        )
        raise UsageError(f"{where} {why}, not a namespace there; {fix}")
    if not name.isidentifier() or not name.isascii():
        raise UsageError(f"{where} is not a Python identifier (letters, digits and '_', no dots or dashes); {fix}")
    return name


def check_folders(specs: Path, out: Path) -> None:
    if not specs.exists():
        raise UsageError(f"--specs {pipeline.display_path(specs)} does not exist")
    if not specs.is_dir():
        raise UsageError(
            f"--specs {pipeline.display_path(specs)} is a file, not a folder; pass the folder that holds it"
        )
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {pipeline.display_path(out)} is a file, not a folder")
    where = out.resolve()  # (a symlink loop: refused by ``folder``)
    root = pipeline.ROOT.resolve()
    if where == root or where.is_relative_to(root / "dsl"):  # (a 2026-11-29 audit: both were written into)
        what = "the checkout's (or installation's) root" if where == root else "inside the generator (dsl/)"
        raise UsageError(f"--out {out} is {what}: pass a folder of its own for the package")


def list_ops(spec_dir: Path, namespace: str = "normgen") -> str:
    lines = []
    tuning = pipeline.read_tuning()
    # (the build's checks, names included: --list shows no op the build would refuse)
    for spec in sorted(pipeline.load_buildable(spec_dir, namespace), key=lambda s: s.name):
        lines.append(f"{spec.name}  ({spec.span('op').path})")  # (from the working directory, as messages)
        for target in spec.targets:
            directions = plan(spec, target, tuning[target]).directions
            kernels = sum(len(d.kernels) for d in directions)
            counts = f"{kernels} kernels, {sum(len(d.table) for d in directions)} dispatch entries"
            lines.append(f"  {target.value}: {counts}")
            for direction in directions:
                for kernel in direction.kernels:
                    lines.append(f"    {kernel.name}")
                for dtype in spec.dtypes:
                    entries = [e for e in direction.table if e.dtype is dtype]
                    single = [e for e in entries if e.passes.value == "single"]
                    widest = max((e.cols_hi for e in single), default=0)
                    blocks_m = sorted({e.block_m for e in entries})
                    lines.append(
                        f"    {direction.direction.value} {dtype.value}: {len(entries)} entries; single pass up to "
                        f"{widest} columns, multi pass beyond; BLOCK_M in {blocks_m}"
                    )
    return "\n".join(lines)


def folder(text: str) -> Path:
    """A folder argument; an empty one is refused (Path("") is ".": ``--out "$PKG"`` with PKG unset
    would write the package into the working directory)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("empty (an unset variable?); pass a folder, or . for this one")
    try:
        Path(text).resolve()
    except (RuntimeError, OSError):  # (a symlink loop: an internal error, exit status 1, before)
        raise argparse.ArgumentTypeError(f"{text} is a symbolic link loop") from None
    return Path(text)


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument(
        "--specs", type=folder, default=pipeline.SPECS, help="folder of *.norm specs (default: the shipped dsl/specs)"
    )
    out_default = "generated" if IN_CHECKOUT else "none: required to write; --check compares the installed generated"
    parser.add_argument("--out", type=folder, help=f"package folder to write (default: {out_default})")
    parser.add_argument(
        "--namespace",
        help="torch.library namespace of the ops (default: normgen for generated/, else the --out folder name)",
    )
    what = parser.add_mutually_exclusive_group()  # (one of them would be dropped without a word)
    what.add_argument("--check", action="store_true", help="write nothing; fail with a diff when --out is stale")
    what.add_argument("--list", action="store_true", help="print each op, its kernels and dispatch tables")
    what.add_argument(
        "--tune",
        choices=["cuda", "npu"],
        help="measure configs on this machine's GPU or NPU (benchmarks/tune.py, benchmarks/npu_tune.py; a checkout)",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)
    if args.tune and (args.out is not None or args.namespace is not None):
        parser.error("--tune writes the tuning file (dsl/tuning/), not a package: --out and --namespace do not apply")
    out = args.out
    if out is None:
        if not (IN_CHECKOUT or args.check or args.list or args.tune):
            parser.error("--out DIR is required outside a normgen checkout (the installed generated/ is not written)")
        if not (args.check or args.list or args.tune) and args.specs.resolve() != pipeline.SPECS:
            parser.error(
                "--specs without --out would write your ops into generated/ and remove the shipped ones; "
                "pass --out DIR for your package (python build.py --specs DIR --out DIR)"
            )
        out = pipeline.GENERATED
    elif (
        not (args.check or args.list or args.tune)
        and out.resolve() == pipeline.GENERATED.resolve()
        and args.specs.resolve() != pipeline.SPECS
    ):
        parser.error(  # (--out generated, or a link to it: the same removal as no --out)
            f"--out {out} is the shipped generated/: your ops would replace the shipped ones there; "
            "pass --out DIR for your package"
        )
    try:
        check_folders(args.specs, out)
        if args.tune:
            if not IN_CHECKOUT:
                print("error: --tune needs a source checkout (benchmarks/ is not installed)", file=sys.stderr)
                return 2
            if args.tune == "npu":
                from benchmarks.npu_tune import tune as tune_npu

                tune_npu(args.specs)
                return 0
            from benchmarks.tune import tune

            tune(args.specs)
            return 0
        namespace = namespace_for(out, args.namespace)
        if args.list:
            print(list_ops(args.specs, namespace))
            return 0
        files = pipeline.generate(args.specs, namespace)
        if args.check:
            delta = emit.diff(files, out)
            if delta:
                sys.stdout.write(delta)
                own = out.resolve() != pipeline.GENERATED or args.specs.resolve() != pipeline.SPECS
                own = own or args.namespace is not None
                if not IN_CHECKOUT:
                    rebuild = "normgen-build with the same --specs, --out and --namespace"
                elif own:  # (a bare `python build.py` would rebuild generated/, not this package)
                    rebuild = "python build.py with the same --specs, --out and --namespace"
                else:
                    rebuild = "python build.py"
                stale = f"{pipeline.display_path(out)} is stale: run `{rebuild}` and commit the result"
                print(f"\n{stale}", file=sys.stderr)
                return 1
            print(f"{pipeline.display_path(out)} is up to date ({len(files)} files)")
            return 0
        written, removed = emit.write(files, out)
        for what, names in (("wrote", written), ("removed", removed)):
            for name in names:
                print(f"{what} {pipeline.display_path(out)}/{name}")
        print(f"{len(files)} files, {len(written) + len(removed)} changed")
        return 0
    except SpecError as error:
        if args.debug:
            raise
        print(error.render(), file=sys.stderr)
        return 2
    except (UsageError, TuningError, FileNotFoundError, NotADirectoryError) as error:
        if args.debug:
            raise
        print(f"error: {error}", file=sys.stderr)
        return 2
    except emit.OutError as error:
        if args.debug:
            raise
        for problem in error.problems:
            print(f"error: {problem}", file=sys.stderr)
        return 2
    except OSError as error:
        if args.debug:
            raise
        print(f"error: {error}", file=sys.stderr)
        return 2
    except Exception as error:  # a bug in normgen: one line, the traceback on request
        if args.debug:
            raise
        print(f"internal error: {type(error).__name__}: {error} (run with --debug for the traceback)", file=sys.stderr)
        return 1


def console_main() -> None:
    """The ``normgen-build`` console script."""
    sys.exit(main(prog="normgen-build"))
