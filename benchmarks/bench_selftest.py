"""``python -m benchmarks.bench --self-test``: the benchmark's CPU-only parts, on fake timings (CI).

* argument parsing, the shape groups and the measuring order, bytes per op;
* for every op and mode, on CPU tensors (normgen's kernels in Triton's interpreter):
  normgen's call, the torch eager formula and a stand-in Liger module (the
  arguments bench passes to Liger's functions, with Liger's meaning of offset
  and casting mode) checked against the op's generated reference, and a
  deliberately wrong output caught by the check; the torch.compile builder
  built (not run: it needs a C compiler);
* ``measure_case`` for every op with fake graph timings, a peer that is not
  installed and one that fails;
* the markdown, JSON and plot writers on fake timings of the default run.
"""

from __future__ import annotations

import json
import sys
import tempfile
import types
from pathlib import Path

import torch

from benchmarks import bench, ops, timing
from benchmarks.report import HOST_SHAPE, Case, DeviceRow, HostRow, big, log, write_outputs


def fake_results(all_cases: list[Case], impls: list[str], modes: list[str], copy_gbps: float):
    """Plausible timings from a bandwidth model, with one missing peer, one mismatch and one failure."""
    efficiency = {"normgen": 0.93, "torch": 0.55, "compile": 0.8, "liger": 0.85}
    launch_us = {"normgen": 2.2, "torch": 4.5, "compile": 3.0, "liger": 2.4}
    device = []
    for case in all_cases:
        elem = 4 if case.dtype == "fp32" else 2
        call_bytes = ops.bytes_moved(case.op, case.mode, case.rows, case.cols, elem)
        for impl in (impl for impl in impls if ops.has_impl(case.op, impl)):
            row = DeviceRow(case.op, case.group, case.dtype, case.rows, case.cols, case.mode, impl, call_bytes)
            row.calls, row.sets = 20, 1
            if impl == "liger" and case.group == "seed":
                row.error = "n/a: No module named 'liger_kernel'"
            elif impl == "compile" and case.rows == 1 and case.cols in (7338, 8192):
                row.error = "RuntimeError: fake failure"
            else:
                us = launch_us[impl] + call_bytes / (efficiency[impl] * copy_gbps * 1e3)
                row.samples = [us * (1 + 0.01 * k) for k in range(5)]
                row.us = timing.median(row.samples)
                row.gbps = call_bytes / (row.us * 1e-6) / 1e9
                row.frac = row.gbps / copy_gbps
                row.ok = not (impl == "torch" and case.rows == 64 and case.cols in (5120, 8192))
                row.max_err = 0.0 if row.ok else 0.5
            device.append(row)
    host = []
    fake_host = {"normgen": 6.0, "torch": 14.0, "compile": 22.0, "liger": 9.0}
    for mode in modes:
        for impl in impls:
            host.append(HostRow(impl, mode, *HOST_SHAPE, us=fake_host[impl], samples=[fake_host[impl]] * 3))
    return device, host


def fake_liger() -> None:
    """A stand-in ``liger_kernel.ops`` whose functions compute what Liger's do, from their arguments."""

    def rms(x, w, eps, offset, casting, in_place):
        assert casting in ("llama", "gemma") and in_place is False, (casting, in_place)
        x32 = x.float()
        x_hat = x32 * torch.rsqrt(x32.square().mean(-1, keepdim=True) + eps)
        if casting == "llama":
            return x_hat.to(x.dtype) * (offset + w)
        return (x_hat * (offset + w.float())).to(x.dtype)

    def fused(x, r, w, eps, offset, casting, in_place):
        s = x + r
        return rms(s, w, eps, offset, casting, in_place), s

    def layer(x, w, b, eps):
        return torch.nn.functional.layer_norm(x, (x.shape[-1],), w, b, eps)

    modules = {
        "liger_kernel": {},
        "liger_kernel.ops": {},
        "liger_kernel.ops.rms_norm": {"LigerRMSNormFunction": types.SimpleNamespace(apply=rms)},
        "liger_kernel.ops.fused_add_rms_norm": {"LigerFusedAddRMSNormFunction": types.SimpleNamespace(apply=fused)},
        "liger_kernel.ops.layer_norm": {"LigerLayerNormFunction": types.SimpleNamespace(apply=layer)},
    }
    for name, attributes in modules.items():
        module = types.ModuleType(name)
        module.__dict__.update(attributes)
        sys.modules[name] = module


def check_impls() -> None:
    """Every op's normgen call, torch formula and (stand-in) Liger function against the reference."""
    for name, spec in ops.OPS.items():
        for mode in spec.modes:
            inputs = ops.make_inputs(name, 3, 100, "bf16", 1, device="cpu")[0]
            want = ops.reference(name, mode, inputs)
            impls = ["normgen", "torch", *(["liger"] if spec.liger else [])]
            for impl in impls:
                got = ops.MAKERS[impl](name, mode)(*inputs)
                assert len(got) == len(want), (name, mode, impl)
                assert ops.check(name, mode, got, want)[0], (name, mode, impl)
            wrong = (-got[0].float()).to(got[0].dtype), *got[1:]
            assert not ops.check(name, mode, wrong, want)[0], (name, mode, "a wrong output passed")
            assert callable(ops.compiled_function(name, mode))
        if not spec.liger:
            try:
                ops.liger_function(name, "pre")
                raise AssertionError(f"Liger has no {name}")
            except LookupError:
                pass


def check_measure_case() -> None:
    """measure_case on CPU tensors for every op, graph timing faked; compile not installed, torch failing."""
    saved = bench.DEVICE, timing.graph_time_us, ops.MAKERS["torch"]
    bench.DEVICE = "cpu"
    timing.graph_time_us = lambda fn, sets, calls, reps: [10.0 + k for k in range(reps)]
    ops.MAKERS["torch"] = lambda op, mode: (_ for _ in ()).throw(RuntimeError("fake failure"))
    try:
        impls = ["normgen", "torch", "compile", "liger"]
        for name in ops.OPS:
            for mode in ops.modes_of(name, ["pre", "post"]):
                case = Case(name, "family", "bf16", 2, 64, mode)
                rows = bench.measure_case(case, impls, {"compile": "n/a: skipped"}, 3, 1000.0, 1)
                got = {row.impl: row for row in rows}
                assert list(got) == [i for i in impls if ops.has_impl(name, i)], (name, list(got))
                assert got["normgen"].ok and got["normgen"].us == 11.0, got["normgen"]
                assert got["torch"].error.startswith("RuntimeError"), got["torch"]
                assert got["compile"].error == "n/a: skipped" and got["compile"].us is None
                if "liger" in got:
                    assert got["liger"].ok and got["liger"].frac is not None, got["liger"]
    finally:
        bench.DEVICE, timing.graph_time_us, ops.MAKERS["torch"] = saved


def run(out: Path | None) -> int:
    parse = bench.parse_args
    args = parse(["--quick", "--shapes", "llm", "--modes", "post", "--peers", "liger,torch", "--ops", "rmsnorm"])
    assert args.quick and args.shapes == ["llm"] and args.modes == ["post"] and args.peers == ["liger", "torch"]
    assert args.ops == ["rmsnorm"] and parse([]).ops == list(ops.OPS) and parse([]).shapes == ["family"]
    assert parse(["--peers", "none"]).peers == []
    n_combos = sum(len(ops.modes_of(op, ["pre", "post"])) for op in ops.OPS)
    full = bench.cases(list(ops.OPS), ["family"], ["pre", "post"], quick=False)
    n_family = len(bench.FAMILY_ROWS) * len(bench.FAMILY_HIDDEN) + len(bench.FAMILY_EXTRA)
    assert n_combos == 17 and len(full) == n_combos * n_family, len(full)
    assert full[0].elements == max(c.elements for c in full) and full[-1].rows == 1
    assert {c.op for c in full[:n_combos]} == set(ops.OPS)  # the largest shape of every op comes first
    old = bench.cases(["add_rmsnorm"], ["seed", "llm"], ["pre", "post"], quick=False)
    assert len(old) == 2 * (8 + len(bench.LLM_ROWS) * len(bench.LLM_HIDDEN)) and old[-1].group == "seed"
    assert ops.bytes_moved("add_rmsnorm", "pre", 2, 8, 2) == 2 * (4 * 16 + 8)
    assert ops.bytes_moved("rmsnorm", "-", 2, 8, 2) == 2 * (2 * 16 + 8)
    assert ops.bytes_moved("layernorm", "-", 2, 8, 2) == 2 * (2 * 16 + 16)
    assert ops.bytes_moved("add_rmsnorm_int8", "post", 2, 8, 2) == 2 * 3 * 16 + 16 + 2 * 8 + 4 * 2
    assert timing.rotation_sets(1 << 20, 50 << 20) == 200

    fake_liger()
    check_impls()
    check_measure_case()

    impls = ["normgen", *bench.PEERS]
    modes = ["pre", "post"]
    copy = {"bytes": 1 << 30, "ms": 0.72, "gbps": 2983.0, "samples_ms": [0.72] * 10}
    device, host = fake_results(full, impls, modes, copy["gbps"])
    big_bytes = sorted({row.bytes for row in device if big(row.case)})
    copy["same_bytes"] = {str(size): 2983.0 * (0.85 + 0.1 * k / len(big_bytes)) for k, size in enumerate(big_bytes)}
    versions = {"python": "3.12", "torch": "2.11.0", "triton": "3.6.0", "liger-kernel": "0.8.5"}
    meta = {"date": "2026-01-01 00:00", "device": "Fake H100 (132 SMs)", "versions": versions, "l2_mib": 50.0}
    meta |= {"ops": list(ops.OPS), "groups": ["family"], "modes": modes, "peers": list(bench.PEERS), "reps": 10}
    meta |= {"quick": False, "time_limit_s": 420.0, "complete": False}
    with tempfile.TemporaryDirectory() as scratch:
        folder = out or Path(scratch)
        text = write_outputs(folder, meta, copy, device, host, impls, plots=True)
        data = json.loads((folder / "bench.json").read_text(encoding="utf-8"))
        assert len(data["device"]) == len(device) and len(data["host"]) == len(host)
        assert data["device"][0]["samples"] == device[0].samples
        table_rows = [line for line in text.splitlines() if line.startswith("| ") and " × " in line]
        assert len(table_rows) == len(full), (len(table_rows), len(full))
        for op in ops.OPS:
            assert (
                f"## {op}: device time per call" in text and f"| {op} | {n_family * len(ops.OPS[op].modes)} |" in text
            )
        assert "✗" in text and "n/a" in text and "| err |" in text and "**incomplete**" in text and "MISSED" in text
        assert (
            "a copy of the same bytes: 85.0%" in text and "; copy of the same bytes " in text
        )  # the size-matched copy
        assert "of that bandwidth" in text and all(e["copy_frac_at_min"] for e in data["summary"] if e["big"])
        assert text == (folder / "bench.md").read_text(encoding="utf-8")
        assert len(data["summary"]) == len(ops.OPS) and len(data["targets"]) == 2 * len(ops.OPS)
        for entry in data["targets"]:
            assert entry["met"] <= entry["of"], entry
        pngs = sorted(p.name for p in folder.glob("*.png"))
        try:
            import matplotlib  # noqa: F401

            assert pngs == ["bench_bf16_post.png", "bench_bf16_pre.png", "family_bf16.png"], pngs
            from benchmarks import plots  # the plots again, from bench.json alone

            assert plots.main([str(folder / "bench.json"), "--out", str(folder / "redrawn")]) == 0
            assert sorted(p.name for p in (folder / "redrawn").glob("*.png")) == pngs
        except ImportError:
            log("matplotlib not installed: plots not tested")
        print(text)
        log(f"self-test passed ({'wrote ' + str(folder) if out else 'in a temporary folder'})")
    return 0
