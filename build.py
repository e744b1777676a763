"""normgen's build: regenerate generated/ from dsl/specs/ (see README and dsl/cli.py).

    python build.py                  regenerate (writes only what changed)
    python build.py --check          write nothing; exit 1 with a diff if generated/ is stale
    python build.py --list           each op, its kernels and its dispatch tables
    python build.py --specs DIR --out DIR   your own specs into your own package
    python build.py --tune cuda      measure cuda configs on this GPU, write dsl/tuning/cuda.json
    python build.py --tune npu       measure npu tiles on this NPU, write dsl/tuning/npu.json

Spec, command-line and --out errors exit with status 2, an internal error with
status 1 and one line (no traceback unless --debug). An installed copy
has the same command as ``normgen-build``.
"""

import sys

from dsl.cli import list_ops, main

__all__ = ["list_ops", "main"]

if __name__ == "__main__":
    sys.exit(main())
