#!/usr/bin/env bash
# Build the triton-ascend virtual environment that the npu tests run in (with ascendnpu-ir,
# whose bishengir-compile is the Ascend compiler that triton-ascend's last stage calls).
#
#   bash scripts/npu_env.sh            -> .venv-npu in the repo root
#   NORMGEN_NPU_VENV=DIR bash scripts/npu_env.sh
#
# triton-ascend ships its own package named `triton`, so it cannot share the main
# venv with upstream Triton. Its wheel is cp311 x86-64, hence Python 3.11 (set
# PYTHON to pick the interpreter). The build is skipped when the venv already
# holds exactly these requirements for this checkout (a marker file records them).
set -euo pipefail

cd "$(dirname "$0")/.."
venv="${NORMGEN_NPU_VENV:-.venv-npu}"
python="${PYTHON:-python3.11}"

requirements=(
    torch==2.13.0         # pinned: the CPU build lies on local disk; a bare `torch` pulls a CUDA one
    triton-ascend==3.2.0
    ascendnpu-ir==1.2.0   # bishengir-compile: the npu checks plan every kernel's memory with it (no deps, 161 MB)
    pybind11              # triton-ascend's driver and interpreter build helpers need it
    "numpy<2.3"           # triton-ascend's interpreter breaks on numpy 2.3+
    jinja2
    "lark[interegular]"
    pytest
    pytest-xdist          # scripts/npu_checks.sh runs the npu suite on both cores
)
marker="$venv/.normgen-npu-env"
# The checkout goes on the venv's path (a .pth file), so the marker names it as well.
wanted="$(printf '%s\n' "${requirements[@]}" "checkout $(pwd)")"

if [[ -x "$venv/bin/python" && -f "$marker" && "$(cat "$marker")" == "$wanted" ]]; then
    echo "npu env: $venv is up to date"
    exit 0
fi

if ! "$python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
    echo "npu env: needs Python 3.11 (triton-ascend 3.2.0 ships cp311 wheels); set PYTHON=/path/to/python3.11" >&2
    exit 1
fi

echo "npu env: building $venv"
rm -f "$marker"  # written last: an interrupted build is redone
source scripts/venv.sh  # pip, or uv where NORMGEN_UV is set (.ci/run)
new_venv "$python" "$venv"
install_torch "$venv"
venv_install "$venv" "${requirements[@]}"
# The checkout on the path by a .pth file, not `pip install -e .`: that would write normgen.egg-info into
# the checkout, which the main venv's editable install writes too (CI builds both venvs at once).
site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')"
printf '%s\n' "$(pwd)" >"$site/normgen-checkout.pth"
venv_python="$(cd "$venv" && pwd)/bin/python"
(cd / && "$venv_python" -c 'import dsl.model, generated' </dev/null)  # (from elsewhere: by the .pth alone)
# The interpreter needs triton-ascend's `triton`, not upstream's (pulled in by no one here, but check).
"$venv/bin/python" -c 'import importlib.util as u, sys; sys.exit(u.find_spec("triton.backends.ascend") is None)'
# bishengir-compile must be where benchmarks/npu_compiler.py looks for it.
"$venv/bin/python" -c 'import importlib.util as u, pathlib, sys; s = u.find_spec("ascendnpuir"); sys.exit(not any((pathlib.Path(p) / "bin" / "bishengir-compile").is_file() for p in s.submodule_search_locations))'
printf '%s\n' "$wanted" >"$marker"
echo "npu env: $venv is ready"
