"""The runtime: its use of Triton's private C launcher (only for a known layout, after a probe; else
kernel[grid]), its per-shape caches and the backward's launch grids."""

import importlib
import importlib.util
import itertools
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from dsl import runtime

from .conftest import HAS_GPU


@pytest.fixture
def fresh_probe(monkeypatch):
    monkeypatch.setattr(runtime, "_DIRECT_OK", {})
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: False)


def test_unknown_triton_version_falls_back_with_one_warning(fresh_probe, monkeypatch):
    import triton

    monkeypatch.setattr(triton, "__version__", "3.9.0")
    with pytest.warns(UserWarning, match=r"kernel\[grid\].*triton 3.9.0 is outside"):
        assert runtime.direct_launch_ok(0) is False
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second warning
        assert runtime.direct_launch_ok(0) is False


def test_no_probe_during_graph_capture(monkeypatch):
    monkeypatch.setattr(runtime, "_DIRECT_OK", {})
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: True)
    assert runtime.direct_launch_ok(0) is False
    assert runtime._DIRECT_OK == {}  # decided at the next launch outside the capture


@pytest.mark.gpu
def test_probe_accepts_this_tritons_layout(fresh_probe):
    import triton

    version = tuple(int(v) for v in triton.__version__.split(".")[:2])
    low, high = runtime.DIRECT_LAUNCH_VERSIONS
    assert runtime.direct_launch_ok(torch.cuda.current_device()) is (low <= version <= high)


@pytest.mark.gpu
@pytest.mark.parametrize(
    ("launch", "why"),
    [
        (lambda *args: None, "wrote"),  # a layout the C function accepts but launches nothing with
        (lambda *args: (_ for _ in ()).throw(TypeError("function takes 16 arguments")), "failed"),
    ],
)
def test_probe_rejects_a_launcher_that_does_not_work(fresh_probe, monkeypatch, launch, why):
    import triton

    monkeypatch.setattr(triton, "__version__", "3.6.0")
    real = runtime._direct_launch
    monkeypatch.setattr(runtime, "_direct_launch", lambda *a: (launch, *real(*a)[1:]))
    with pytest.warns(UserWarning, match=f"probe launch through it {why}"):
        assert runtime.direct_launch_ok(torch.cuda.current_device()) is False


@pytest.mark.skipif(not HAS_GPU, reason="needs a CUDA GPU")
def test_ops_still_launch_when_the_direct_path_is_off(monkeypatch):
    import importlib

    import generated
    from dsl import fast_path

    monkeypatch.setattr(runtime, "_DIRECT_OK", {torch.cuda.current_device(): False})
    launcher = importlib.import_module("generated.add_rmsnorm_cuda").LAUNCHER
    monkeypatch.setattr(launcher, "fast", type(launcher.fast)(dict))
    op = importlib.import_module("generated.add_rmsnorm").OP
    # the op's own records keep the direct launches they took from the launcher: start without
    monkeypatch.setattr(op, "_forms", {key: fast_path.Form(op, *key) for key in op._forms})
    x = torch.randn(8, 4096, device="cuda", dtype=torch.bfloat16)
    for _ in range(2):
        y, s = generated.add_rmsnorm(x, x, torch.ones(4096, device="cuda", dtype=torch.bfloat16))
    assert not any(launcher.fast.values())  # every launch took kernel[grid]
    torch.testing.assert_close(s, x + x)


@pytest.mark.skipif(not runtime.INTERPRET or runtime.INTERPRET_TARGET != "cuda", reason="the cuda kernels on CPU")
@pytest.mark.parametrize("op", ["add_rmsnorm", "add_layernorm", "add_rmsnorm_int8"])
@pytest.mark.parametrize(("passes", "block_n", "cols"), [("single", 128, 100), ("multi", 64, 200)])
def test_each_mode_writes_only_its_outputs(op, passes, block_n, cols):
    """Launched through the ABI with every output a tensor of its own: pre mode writes the sum,
    post mode never does (its residual out, when it has one, is the unquantized y)."""
    from benchmarks.calls import check, launcher_for, make_call
    from dsl.abi import Source

    spec = next(s for s in runtime_specs() if s.name == op)
    for mode in ("pre", "post"):
        call = make_call(op, mode, 3, cols, "fp32", "cpu")
        residual_out = call["tensors"][Source.RESIDUAL_OUT].fill_(float("nan"))
        launcher_for(op, "fp32", passes, 2, block_n, 4, "tiles")(call["key"], False, 0, call["args"])
        written = not residual_out.isnan().any()
        assert written == (mode == "pre" or spec.is_quantized), (mode, passes)
        if written:
            check(op, spec, call, mode)


def runtime_specs():
    from dsl import pipeline

    return pipeline.load_specs(pipeline.SPECS)


def test_remember_empties_a_full_cache(monkeypatch):
    monkeypatch.setattr(runtime, "CACHE_LIMIT", 3)
    cache = {}
    for i in range(7):
        assert runtime.remember(cache, i, -i) == -i
        assert len(cache) <= 3 and cache[i] == -i
    assert cache == {6: -6}  # emptied at 3 entries, after 3 and after 6


@pytest.mark.skipif(not (runtime.INTERPRET or HAS_GPU), reason="needs the interpreter or a GPU")
def test_per_shape_caches_stay_bounded_and_right(monkeypatch):
    """Calls at ever-new row counts (a server's token counts) keep every per-shape cache at CACHE_LIMIT
    entries at most, and each call is still right."""
    import generated
    from generated.rmsnorm_reference import rmsnorm_reference

    monkeypatch.setattr(runtime, "CACHE_LIMIT", 4)
    device = "cuda" if HAS_GPU else "cpu"
    op = generated.rmsnorm.__globals__["OP"]
    launcher = op.kernel_launch(runtime.kernel_target(torch.device(device)))[0]
    launcher.slow.clear()
    w = torch.randn(64, device=device)
    for rows in range(1, 12):
        x = torch.randn(rows, 64, device=device)
        torch.testing.assert_close(generated.rmsnorm(x, w), rmsnorm_reference(x, w)[0], rtol=1e-5, atol=1e-5)
        assert len(launcher.slow) <= 4
        assert all(len(f) <= 4 for f in launcher.fast.values())
        assert all(len(form.records) <= 4 for form in op._forms.values())


@pytest.mark.parametrize("name", ["rmsnorm", "add_layernorm"])
def test_cuda_backward_launches_the_split_grid_below_512_rows(name):
    """Below 512 rows (256 at 16384 columns) the cuda backward's single-pass launch is the split grid:
    one program per row tile, then one per 32 columns (128 at 16384), SPLIT_N that width; other
    launches pass SPLIT_N 0 (their programs keep partial sums). Layer norms take it at every row count
    of 16384 columns, and at 8193-16383 below their persistent rows (add_layernorm bf16: 4096)."""
    module = importlib.import_module(f"generated.{name}_cuda")
    launcher = module.BACKWARD_LAUNCHER
    wide = 128 if name == "add_layernorm" else 0  # SPLIT_N of a layer norm's split grid at 8193-16384 columns
    cases = [(1, 111, 32, "single"), (37, 1000, 32, "single"), (300, 4096, 32, "single"), (511, 8192, 32, "single")]
    cases += [
        (255, 16384, 128, "single"),
        (512, 4096, 0, "single"),
        (100, 20000, 0, "multi"),
        (3000, 1000, 0, "single"),
    ]
    cases += [(256, 16384, wide, "single"), (4095, 16384, wide, "single"), (4096, 16384, wide, "single")]
    cases += [(4095, 12288, wide, "single"), (4096, 12288, 0, "single"), (10**6, 16384, wide, "single")]
    for rows, cols, split, passes in cases:
        kernel, grid, options, entry = launcher.decide("bf16", rows, cols, 0, (cols,) * 5)
        assert options["SPLIT_N"] == split, (rows, cols)
        if split:
            assert entry.grid == "split", (rows, cols)
            assert grid == (-(-rows // entry.block_m) + -(-cols // split),), (rows, cols)
        else:
            assert entry.grid == "persistent", (rows, cols)
        assert kernel is module.BACKWARD_KERNELS[passes], (rows, cols)


def test_cuda_layer_backward_wide_rows():
    """Layer norms at 8193-16384 columns: the split grid, 8 warps below 1024 rows and 16 from there
    (H200: 16 warps took 0.78-0.87x the time at 1024-16384 rows and 1.12-1.32x at 64-256), at every
    row count of 16384 columns and below the persistent rows of fewer columns; from those rows (per op
    and dtype, where the persistent single pass won every case measured, 2026-11-28) the persistent
    single pass, one program per SM, 16 warps in fp16 and bf16, 8 in fp32; at exactly 16384 columns too
    for layernorm in bf16 from 1024 rows and fp16 from 2048 (2026-11-29, with int32 row offsets) up to
    131070 rows, the most whose offsets fit in int32 (the split grid beyond, as for torch.compile's
    symbolic rows). The rms norms' split grid below 256 rows keeps 8 warps."""
    persistent_rows = {
        "layernorm": {"bf16": 1024, "fp16": 8192, "fp32": 2048},
        "add_layernorm": {"bf16": 4096, "fp16": 8192, "fp32": 4096},
    }
    # exactly 16384 columns (int32 row offsets: layernorm's persistent pass won there from these rows, up
    # to the most rows whose offsets fit in int32: (rows + 1) * 16384 < 2^31)
    exact_rows = {"layernorm": {"bf16": 1024, "fp16": 2048}}
    rows_of = (1, 255, 1023, 1024, 2047, 2048, 4095, 4096, 8191, 8192, 10**6)
    for name in ("layernorm", "add_layernorm", "rmsnorm"):
        launcher = importlib.import_module(f"generated.{name}_cuda").BACKWARD_LAUNCHER
        for dtype, cols, rows in itertools.product(
            ("bf16", "fp16", "fp32"), (8193, 8200, 12288, 16383, 16384), rows_of
        ):
            where = (name, dtype, cols, rows)
            _, grid, options, entry = launcher.decide(dtype, rows, cols, 0, (cols,) * 5)
            exact = exact_rows.get(name, {}).get(dtype)
            if rows > 255 and (
                name == "rmsnorm"
                or (cols < 16384 and rows >= persistent_rows[name][dtype])
                or (cols == 16384 and exact is not None and exact <= rows <= 131070)
            ):
                assert (entry.grid, options["SPLIT_N"], entry.block_n, entry.block_m) == ("persistent", 0, 16384, 1)
                assert entry.num_warps == (8 if dtype == "fp32" else 16), where
                continue
            assert (entry.grid, options["SPLIT_N"], options["LOOP_STAGES"]) == ("split", 128, 1), where
            assert entry.num_warps == (16 if rows >= 1024 else 8), where
            assert grid == (rows + -(-cols // 128),), where


def test_cuda_backward_small_offsets_only_where_every_offset_fits():
    """SMALL_OFFSETS (the backward's single pass then computes its rows' offsets in int32) is passed
    only where the largest offset a tile's rows reach, masked rows past the last included, fits in
    int32: counted here per tensor (dy, ds, x, the residual, dx: each row stride of the launch key in
    turn the large one), from the entry's rows per tile. And it is passed at the benchmark's shapes,
    where it is meant to serve."""
    seen = set()
    for name in ("layernorm", "add_layernorm"):
        launcher = importlib.import_module(f"generated.{name}_cuda").BACKWARD_LAUNCHER
        n_strides = len(launcher.strides_at)
        for rows, cols, big in itertools.product(
            (1, 3, 2047, 2048, 2146, 2147, 2148, 131069, 131070, 131071, 131072, 10**6),
            (256, 4096, 16384),
            (None, 16400, 10**6, 2**20),
        ):
            for at in range(n_strides):
                strides = tuple((big or cols) if i == at else cols for i in range(n_strides))
                _, _, options, entry = launcher.decide("bf16", rows, cols, 0, (cols, *strides))
                last_row = -(-rows // entry.block_m) * entry.block_m - 1  # a tile's masked rows included
                largest = max(last_row * stride + cols - 1 for stride in strides)
                small = options["SMALL_OFFSETS"]
                seen.add(small)
                assert not small or largest < 2**31, (name, rows, cols, strides, largest)
                if largest < 2**30:  # well inside: taken
                    assert small, (name, rows, cols, strides, largest)
    assert seen == {True, False}
    launcher = importlib.import_module("generated.layernorm_cuda").BACKWARD_LAUNCHER
    for rows, cols in ((2048, 16384), (4096, 8192), (16384, 4096), (32, 4096)):
        assert launcher.decide("bf16", rows, cols, 0, (cols,) * 4)[2]["SMALL_OFFSETS"], (rows, cols)
    assert not launcher.decide("bf16", 2**17, 16384, 0, (16384,) * 4)[2]["SMALL_OFFSETS"]  # 2^31 elements


def _device_stand_ins(current: list, seen: list) -> tuple[type, type]:
    """(torch.cuda.device's stand-in, a kernel's stand-in): the first makes its index current[0] while
    entered; the second, indexed by a grid and called, records in ``seen`` the device current then."""

    class Device:
        def __init__(self, index):
            self.index = index

        def __enter__(self):
            self.before, current[0] = current[0], self.index

        def __exit__(self, *exc):
            current[0] = self.before

    class Kernel:
        def __getitem__(self, grid):
            return lambda *args, **options: seen.append(current[0])

    return Device, Kernel


def test_a_launch_on_another_device_makes_that_device_current(monkeypatch):
    """Launcher.__call__ with the tensors on device 1 while device 0 is current: the kernel launches
    with device 1 current (Triton launches on the current device), and device 0 is current again
    after. Stand-ins for the device count, the current device and torch.cuda.device; a process that
    sees one device does not ask."""
    current, seen, asked = [0], [], []
    Device, Kernel = _device_stand_ins(current, seen)

    def current_device():
        asked.append(1)
        return current[0]

    monkeypatch.setattr(runtime, "INTERPRET", False)
    monkeypatch.setattr(runtime, "current_cuda_device", current_device)
    monkeypatch.setattr(torch.cuda, "device", Device)
    launcher = importlib.import_module("generated.rmsnorm_cuda").LAUNCHER
    monkeypatch.setattr(launcher, "direct", False)
    monkeypatch.setattr(launcher, "decision", lambda key, index: (Kernel(), (1,), {}))
    monkeypatch.setattr(runtime, "device_count", lambda target: 2)
    launcher(("key",), True, 1, ())
    launcher(("key",), True, 0, ())
    assert seen == [1, 0] and current == [0]
    monkeypatch.setattr(runtime, "device_count", lambda target: 1)
    asked.clear()
    launcher(("key",), True, 0, ())
    assert seen == [1, 0, 0] and asked == []


def test_the_sum_of_partial_sums_on_another_device_makes_that_device_current(monkeypatch):
    """The backward's second kernel (runtime.sum_partials, which adds up dw's and db's partial sums)
    with its partials on device 1 while device 0 is current launches with device 1 current, as
    Launcher.__call__ does, and leaves device 0 current. Stand-ins as above, and for the partials
    (a tensor on device 1 as sum_partials reads it: shape, device index, the device to allocate on)."""
    from dsl import device

    current, seen = [0], []
    Device, Kernel = _device_stand_ins(current, seen)

    class Partials:  # (params, programs, n_cols) fp32 on device 1
        shape, device = (2, 4, 8), torch.device("cpu")

        def get_device(self):
            return 1

    monkeypatch.setattr(runtime, "INTERPRET", False)
    monkeypatch.setattr(runtime, "current_cuda_device", lambda: current[0])
    monkeypatch.setattr(torch.cuda, "device", Device)
    monkeypatch.setattr(device, "sum_partials", Kernel())
    monkeypatch.setattr(runtime, "device_count", lambda target: 2)
    out = runtime.sum_partials(Partials(), torch.bfloat16)
    assert seen == [1] and current == [0]
    assert out.shape == (2, 8) and out.dtype is torch.bfloat16
    current[0] = 1  # its device current already: no switch
    runtime.sum_partials(Partials(), torch.bfloat16)
    assert seen == [1, 1] and current == [1]


def _import_generated(code: str = "import generated", **env) -> subprocess.CompletedProcess:
    """`import generated` (or ``code``) in a fresh process with these environment variables (from the checkout)."""
    environment = {**os.environ, **env, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environment, timeout=300)


def test_environment_variables_with_unknown_values_are_refused_at_import():
    """A typo in NORMGEN_HOST ("Python") left the C++ host path on, silently; NORMGEN_INTERPRET_TARGET=npu
    under upstream Triton failed later, inside the interpreter, at most calls. Both refused at import."""
    result = _import_generated(NORMGEN_HOST="Python")
    assert result.returncode != 0 and "NORMGEN_HOST must be 'cxx' or 'python', got 'Python'" in result.stderr
    if importlib.util.find_spec("triton.backends.ascend") is None:  # (the main venv: upstream Triton)
        result = _import_generated(TRITON_INTERPRET="1", NORMGEN_INTERPRET_TARGET="npu")
        assert result.returncode != 0 and "this environment's triton is not triton-ascend" in result.stderr
    for cores in ("abc", "0"):  # ("abc" failed at the first npu launch with int()'s error; 0 and -3 ran)
        result = _import_generated(NORMGEN_NPU_VECTOR_CORES=cores)
        assert (
            result.returncode != 0
            and f"NORMGEN_NPU_VECTOR_CORES must be a positive whole number, got {cores!r}" in result.stderr
        )
    for host in ("python", "cxx"):
        assert _import_generated(NORMGEN_HOST=host).returncode == 0


def test_triton_interpret_is_read_as_the_installed_triton_reads_it():
    """Triton 3.4+ runs its interpreter for TRITON_INTERPRET=true (on, yes, any case) too; normgen took only
    "1", so CPU calls ran the PyTorch reference while Triton interpreted: its kernels never ran. Triton's
    own reading of each value, beside normgen's, in fresh processes."""
    code = (
        "import dsl.runtime as r\n"
        "try:\n    from triton import knobs; t = bool(knobs.runtime.interpret)\n"
        "except ImportError:\n    import os; t = os.environ['TRITON_INTERPRET'] == '1'\n"
        "print(r.INTERPRET, t)"
    )
    for value in ("true", "y", "2"):
        result = _import_generated(code, TRITON_INTERPRET=value)
        normgen, triton = result.stdout.split()
        assert normgen == triton, (value, result.stdout, result.stderr)
