# Making and filling a virtual environment, sourced by .ci/run, scripts/npu_env.sh and
# scripts/wheel_smoke.sh (not run on its own).
#
# By default `python -m venv` and pip, as a user would. Where NORMGEN_UV names a uv binary
# (.ci/run installs one for its run), uv makes and fills the venv instead: in CI on a 2-core
# machine (2026-11-29, uv's cache empty, other steps running beside it) the main venv's step took
# 17-19 s with uv against 58 s with pip, most of pip's time being `venv`'s own pip install and
# torch's unpacking; CI builds three venvs.
# torch is pip's choice either way: under uv, NORMGEN_TORCH_WHEEL is the file that
# `pip download torch==2.13.0` picked (the CPU build on local disk; .ci/run fetches it once),
# installed by its path, so uv never looks for torch on an index (where 2.13.0 is a CUDA build
# of several GB).

# new_venv PYTHON DIR
new_venv() {
    if [[ -n "${NORMGEN_UV:-}" ]]; then
        "$NORMGEN_UV" venv --quiet --clear --python "$1" "$2"  # (--clear: a rebuild over an old one; venv reuses it)
    else
        "$1" -m venv "$2"
    fi
}

# install_torch DIR: torch 2.13.0, the CPU build, into the venv at DIR
install_torch() {
    if [[ -n "${NORMGEN_UV:-}" ]]; then
        "$NORMGEN_UV" pip install --quiet --python "$1/bin/python" "${NORMGEN_TORCH_WHEEL:?NORMGEN_UV needs NORMGEN_TORCH_WHEEL}"
    else
        "$1/bin/python" -m pip install --quiet --no-compile torch==2.13.0
    fi
}

# venv_install DIR REQUIREMENT...: with torch installed first (install_torch), which these keep
venv_install() {
    local venv=$1
    shift
    if [[ -n "${NORMGEN_UV:-}" ]]; then
        "$NORMGEN_UV" pip install --quiet --python "$venv/bin/python" "$@"
    else
        "$venv/bin/python" -m pip install --quiet --no-compile "$@"
    fi
}
