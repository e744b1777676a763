#!/usr/bin/env bash
# The wheel as a user gets it: build it from the checkout's files, install it
# into a fresh venv outside the checkout, and run scripts/wheel_smoke.py from
# an empty folder there (import, one op on CPU, normgen-build on a user's spec
# folder). Called by .ci/run; PYTHON picks the interpreter (default python3.11).
#
#   bash scripts/wheel_smoke.sh
#
# The venv is made by `python -m venv` and pip, or by uv where NORMGEN_UV is set (.ci/run;
# scripts/venv.sh); their caches are kept, so torch and triton install from them in seconds after
# the first run. The temporary folder is removed at the end.
set -euo pipefail

cd "$(dirname "$0")/.."
python="${PYTHON:-python3.11}"
export PIP_DISABLE_PIP_VERSION_CHECK=1
tmp="$(mktemp -d "${TMPDIR:-/tmp}/normgen-wheel.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

# Build from a copy of the files git knows (tracked and not ignored): a build/
# folder left in the checkout by an earlier build cannot leak into the wheel.
mkdir -p "$tmp/src"
git ls-files -z --cached --others --exclude-standard \
    | while IFS= read -r -d '' f; do [[ -e $f ]] && printf '%s\0' "$f"; done \
    | tar --null -T - -cf - | tar -xf - -C "$tmp/src"
"$python" -m pip wheel --quiet --no-deps "$tmp/src" -w "$tmp/dist"
wheel=("$tmp"/dist/normgen-*.whl)
echo "built ${wheel[0]##*/} ($SECONDS s)"

source scripts/venv.sh  # pip, or uv where NORMGEN_UV is set (.ci/run)
new_venv "$python" "$tmp/venv"
# torch first, pinned as in .ci/run (the CPU build; see the README's install note).
install_torch "$tmp/venv"
venv_install "$tmp/venv" "${wheel[0]}"
echo "installed into a fresh venv ($SECONDS s)"

mkdir "$tmp/run"
cp scripts/wheel_smoke.py "$tmp/run/"
cd "$tmp/run"
env -u PYTHONPATH -u TRITON_INTERPRET -u NORMGEN_INTERPRET_TARGET \
    PATH="$tmp/venv/bin:$PATH" "$tmp/venv/bin/python" wheel_smoke.py
