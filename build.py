"""normgen's build: regenerate generated/ from dsl/specs/ (see README).

    python build.py                  regenerate (writes only what changed)
    python build.py --check          write nothing; exit 1 with a diff if generated/ is stale
    python build.py --list           each op, its kernels and its dispatch tables
    python build.py --specs DIR --out DIR   your own specs into your own package
    python build.py --tune cuda      measure cuda configs on this GPU, write dsl/tuning/cuda.json

Spec errors exit with status 2 (no traceback unless --debug).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dsl import emit, pipeline
from dsl.diagnostics import SpecError
from dsl.plan import plan


def list_ops(spec_dir: Path) -> str:
    lines = []
    tuning = pipeline.read_tuning()
    for spec in sorted(pipeline.load_specs(spec_dir), key=lambda s: s.name):
        lines.append(f"{spec.name}  ({spec.path})")
        for target in spec.targets:
            kernel_plan = plan(spec, target, tuning[target])
            counts = f"{len(kernel_plan.kernels)} kernels, {len(kernel_plan.table)} dispatch entries"
            lines.append(f"  {target.value}: {counts}")
            for kernel in kernel_plan.kernels:
                lines.append(f"    {kernel.name}")
            for dtype in spec.dtypes:
                entries = [e for e in kernel_plan.table if e.dtype is dtype]
                single = [e for e in entries if e.passes.value == "single"]
                widest = max((e.cols_hi for e in single), default=0)
                blocks_m = sorted({e.block_m for e in entries})
                lines.append(
                    f"    {dtype.value}: {len(entries)} entries; single pass up to {widest} columns, "
                    f"multi pass beyond; BLOCK_M in {blocks_m}"
                )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--specs", type=Path, default=pipeline.SPECS, help="folder of *.norm specs (default dsl/specs)")
    parser.add_argument(
        "--out", type=Path, default=pipeline.GENERATED, help="package folder to write (default generated)"
    )
    parser.add_argument(
        "--namespace",
        help="torch.library namespace of the ops (default: normgen for generated/, else the --out folder name)",
    )
    parser.add_argument("--check", action="store_true", help="write nothing; fail with a diff when --out is stale")
    parser.add_argument("--list", action="store_true", help="print each op, its kernels and dispatch tables")
    parser.add_argument(
        "--tune", choices=["cuda"], help="measure configs on this machine's GPU (see benchmarks/tune.py)"
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)
    out = args.out
    namespace = args.namespace or ("normgen" if out.resolve() == pipeline.GENERATED else out.resolve().name)
    try:
        if args.tune:
            from benchmarks.tune import tune

            tune(args.specs)
            return 0
        if args.list:
            print(list_ops(args.specs))
            return 0
        files = pipeline.generate(args.specs, namespace)
        if args.check:
            delta = emit.diff(files, out)
            if delta:
                sys.stdout.write(delta)
                stale = f"{pipeline.display_path(out)} is stale: run `python build.py` and commit the result"
                print(f"\n{stale}", file=sys.stderr)
                return 1
            print(f"{pipeline.display_path(out)} is up to date ({len(files)} files)")
            return 0
        changed = emit.write(files, out)
        for name in changed:
            print(f"wrote {pipeline.display_path(out)}/{name}")
        print(f"{len(files)} files, {len(changed)} changed")
        return 0
    except SpecError as error:
        if args.debug:
            raise
        print(error.render(), file=sys.stderr)
        return 2
    except (FileNotFoundError, NotADirectoryError) as error:
        if args.debug:
            raise
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
