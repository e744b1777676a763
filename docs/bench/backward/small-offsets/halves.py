"""Prototype: layer/rms norm backward at 16384 cols, one row per persistent iteration, in two column halves:
phase 1 loads each half, adds its share of dw (and db) and the row's sums; phase 2 reloads each half
(L1/L2) for dx. dw/db kept in registers as two half-width tensors each.
python halves.py [rows] [cols]"""
# ruff: noqa: B023  (each closure is called within its own loop iteration)

import os
import statistics
import sys

import torch
import triton
import triton.language as tl

INTERP = os.environ.get("TRITON_INTERPRET") == "1"
dev = "cpu" if INTERP else "cuda"


@triton.jit
def bwd_halves(
    DY,
    X,
    W,
    RSTD,
    MEAN,
    DX,
    DW,
    DB,
    n_rows,
    N: tl.constexpr,
    LAYER: tl.constexpr,
    STAGES: tl.constexpr,
    HINT: tl.constexpr,
):
    H: tl.constexpr = N // 2
    pid = tl.program_id(0)
    c = tl.arange(0, H)
    dtype = DX.dtype.element_ty
    dw0 = tl.zeros([H], tl.float32)
    dw1 = tl.zeros([H], tl.float32)
    db0 = tl.zeros([H], tl.float32)
    db1 = tl.zeros([H], tl.float32)
    for row in tl.range(pid, n_rows, tl.num_programs(0), num_stages=STAGES):
        rstd = tl.load(RSTD + row)
        mean = tl.load(MEAN + row) if LAYER else 0.0
        base = row * N
        # phase 1, half 0
        dy = tl.load(DY + base + c, eviction_policy="evict_last" if HINT else "").to(tl.float32)
        s = tl.load(X + base + c, eviction_policy="evict_last" if HINT else "").to(tl.float32)
        w = tl.load(W + c).to(tl.float32)
        x_hat = (s - mean) * rstd
        if LAYER:
            dw0 += dy * x_hat
            db0 += dy
        else:
            dw0 += dy * x_hat.to(dtype).to(tl.float32)
        g = dy * w
        a1 = tl.sum(g * x_hat, 0)
        a2 = tl.sum(g, 0)
        # phase 1, half 1
        dy = tl.load(DY + base + H + c, eviction_policy="evict_last" if HINT else "").to(tl.float32)
        s = tl.load(X + base + H + c, eviction_policy="evict_last" if HINT else "").to(tl.float32)
        w = tl.load(W + H + c).to(tl.float32)
        x_hat = (s - mean) * rstd
        if LAYER:
            dw1 += dy * x_hat
            db1 += dy
        else:
            dw1 += dy * x_hat.to(dtype).to(tl.float32)
        g = dy * w
        a1 += tl.sum(g * x_hat, 0)
        a2 += tl.sum(g, 0)
        c1 = a1 / N
        c2 = a2 / N if LAYER else 0.0
        # phase 2: dx per half, reloading
        for h in tl.static_range(2):
            dy = tl.load(DY + base + h * H + c, eviction_policy="evict_first" if HINT else "").to(tl.float32)
            s = tl.load(X + base + h * H + c, eviction_policy="evict_first" if HINT else "").to(tl.float32)
            w = tl.load(W + h * H + c).to(tl.float32)
            x_hat = (s - mean) * rstd
            dx = (dy * w - x_hat * c1 - c2) * rstd
            tl.store(DX + base + h * H + c, dx.to(dtype))
    tl.store(DW + pid * N + c, dw0)
    tl.store(DW + pid * N + H + c, dw1)
    if LAYER:
        tl.store(DB + pid * N + c, db0)
        tl.store(DB + pid * N + H + c, db1)


@triton.jit
def bwd_ref(
    DY,
    X,
    W,
    RSTD,
    MEAN,
    DX,
    DW,
    DB,
    n_rows,
    N: tl.constexpr,
    LAYER: tl.constexpr,
    STAGES: tl.constexpr,
    HINT: tl.constexpr,
):
    pid = tl.program_id(0)
    c = tl.arange(0, N)
    dtype = DX.dtype.element_ty
    dw = tl.zeros([N], tl.float32)
    db = tl.zeros([N], tl.float32)
    for row in tl.range(pid, n_rows, tl.num_programs(0), num_stages=STAGES):
        rstd = tl.load(RSTD + row)
        mean = tl.load(MEAN + row) if LAYER else 0.0
        dy = tl.load(DY + row * N + c).to(tl.float32)
        s = tl.load(X + row * N + c).to(tl.float32)
        w = tl.load(W + c).to(tl.float32)
        x_hat = (s - mean) * rstd
        if LAYER:
            dw += dy * x_hat
            db += dy
        else:
            dw += dy * x_hat.to(dtype).to(tl.float32)
        g = dy * w
        c1 = tl.sum(g * x_hat, 0) / N
        c2 = tl.sum(g, 0) / N if LAYER else 0.0
        dx = (g - x_hat * c1 - c2) * rstd
        tl.store(DX + row * N + c, dx.to(dtype))
    tl.store(DW + pid * N + c, dw)
    if LAYER:
        tl.store(DB + pid * N + c, db)


def main():
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 2048
    N = int(sys.argv[2]) if len(sys.argv) > 2 else 16384
    torch.manual_seed(0)
    sms = 4 if INTERP else torch.cuda.get_device_properties(0).multi_processor_count
    variants = [
        ("ref", 16, 1, False, 1),
        ("halves", 16, 1, False, 1),
        ("halves", 16, 1, True, 1),
        ("halves", 16, 2, True, 1),
        ("halves", 8, 1, True, 1),
        ("halves", 8, 1, True, 2),
        ("halves", 8, 2, True, 1),
        ("halves", 32, 1, True, 1),
    ]
    if INTERP:
        variants = [("ref", 4, 1, False, 1), ("halves", 4, 1, False, 1), ("halves", 4, 2, True, 1)]
    if not INTERP:
        a = torch.empty(256 * 2**20, dtype=torch.uint8, device=dev)
        b = torch.empty_like(a)
        copy = triton.testing.do_bench(lambda: b.copy_(a), rep=200)
        copy_gbs = 2 * a.numel() / copy / 1e6
        print(f"copy 256MiB {copy * 1e3:.1f} us {copy_gbs:.0f} GB/s", flush=True)
    for layer in (True, False):
        x = torch.randn(rows, N, device=dev).to(torch.bfloat16)
        dy = torch.randn(rows, N, device=dev).to(torch.bfloat16)
        w = (torch.rand(N, device=dev) + 0.5).to(torch.bfloat16)
        xf, dyf, wf = x.double(), dy.double(), w.double()
        mean = xf.mean(1) if layer else torch.zeros(rows, dtype=torch.float64, device=dev)
        var = ((xf - mean[:, None]) ** 2).mean(1) if layer else (xf * xf).mean(1)
        rstd = 1 / torch.sqrt(var + 1e-6)
        xh = (xf - mean[:, None]) * rstd[:, None]
        g = dyf * wf
        c1 = (g * xh).mean(1, keepdim=True)
        c2 = g.mean(1, keepdim=True) if layer else 0
        dx_ref = (g - xh * c1 - c2) * rstd[:, None]
        dw_ref = (dyf * (xh if layer else xh.to(torch.bfloat16).double())).sum(0)
        rstd32, mean32 = rstd.float(), mean.float()
        nbytes = 3 * rows * N * 2
        for name, warps, stages, hint, per_sm in variants:
            kern = bwd_ref if name == "ref" else bwd_halves
            programs = sms * per_sm
            dx = torch.empty_like(x)
            dw = torch.empty(programs, N, dtype=torch.float32, device=dev)
            db = torch.empty_like(dw)

            def call():
                kern[(programs,)](
                    dy,
                    x,
                    w,
                    rstd32,
                    mean32,
                    dx,
                    dw,
                    db,
                    rows,
                    N=N,
                    LAYER=layer,
                    STAGES=stages,
                    HINT=hint,
                    num_warps=warps,
                )

            try:
                call()
                err = ((dx.double() - dx_ref).abs() / (dx_ref.abs() + 1e-2)).max().item()
                dwerr = ((dw.double().sum(0) - dw_ref).abs() / (dw_ref.abs() + 1)).max().item()
                ok = err < 2e-2 and dwerr < (1e-3 if layer else 3e-2)
                tag = f"{'layer' if layer else 'rms'} {rows}x{N} {name} w{warps} st{stages} hint{int(hint)} x{per_sm}"
                if INTERP:
                    print(tag, "ok" if ok else "WRONG", f"{err:.1e} {dwerr:.1e}", flush=True)
                    continue
                times = [triton.testing.do_bench(call, rep=100) for _ in range(5)]
                t = statistics.median(times) * 1e3
                print(
                    f"{tag}: {t:.1f} us {nbytes / t / 1e3:.0f} GB/s {nbytes / t / 1e3 / copy_gbs:.2f} of copy "
                    f"{'ok' if ok else 'WRONG'} {err:.1e} {dwerr:.1e}",
                    flush=True,
                )
            except Exception as e:  # noqa: BLE001
                print(name, warps, stages, "FAILED", type(e).__name__, str(e)[:300], flush=True)


main()
