"""Why the generated layer norm backward (persistent, 1x16384 tiles) is slower than a plain 1-D copy.
python lnprobe.py [rows] [cols]"""
# ruff: noqa: B023  (each closure is called within its own loop iteration)

import os
import statistics
import sys

import torch
import triton
import triton.language as tl

import generated.layernorm_cuda as L

INTERP = os.environ.get("TRITON_INTERPRET") == "1"
dev = "cpu" if INTERP else "cuda"


@triton.jit
def ref(
    DY,
    dy_stride,
    X,
    x_stride,
    W,
    RSTD,
    MEAN,
    DX,
    dx_stride,
    DW,
    DB,
    n_rows,
    n_cols,
    N: tl.constexpr,
    OFF64: tl.constexpr,
    RUNTIME: tl.constexpr,
    TWO_D: tl.constexpr,
):
    pid = tl.program_id(0)
    if TWO_D:
        c = tl.arange(0, N)[None, :]
    else:
        c = tl.arange(0, N)
    dtype = DX.dtype.element_ty
    if TWO_D:
        dw = tl.zeros([1, N], tl.float32)
        db = tl.zeros([1, N], tl.float32)
    else:
        dw = tl.zeros([N], tl.float32)
        db = tl.zeros([N], tl.float32)
    for row in tl.range(pid, n_rows, tl.num_programs(0)):
        r = tl.cast(row, tl.int64) if OFF64 else row
        rstd = tl.load(RSTD + row).to(tl.float32)
        mean = tl.load(MEAN + row).to(tl.float32)
        if RUNTIME:
            dy = tl.load(DY + r * dy_stride + c).to(tl.float32)
            s = tl.load(X + r * x_stride + c).to(tl.float32)
        else:
            dy = tl.load(DY + r * N + c).to(tl.float32)
            s = tl.load(X + r * N + c).to(tl.float32)
        w = tl.load(W + c).to(tl.float32)
        x_hat = (s - mean) * rstd
        g = dy * w
        dw += dy * x_hat
        db += dy
        if TWO_D:
            c1 = tl.sum(g * x_hat, axis=1) / n_cols
            c2 = tl.sum(g, axis=1) / n_cols
            dx = (g - x_hat * c1[:, None] - c2[:, None]) * rstd
        else:
            c1 = tl.sum(g * x_hat, 0) / n_cols
            c2 = tl.sum(g, 0) / n_cols
            dx = (g - x_hat * c1 - c2) * rstd
        if RUNTIME:
            tl.store(DX + r * dx_stride + c, dx.to(dtype))
        else:
            tl.store(DX + r * N + c, dx.to(dtype))
    if TWO_D:
        tl.store(DW + pid * N + c, dw)
        tl.store(DB + pid * N + c, db)
    else:
        tl.store(DW + pid * N + c, dw)
        tl.store(DB + pid * N + c, db)


def main():
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 2048
    N = int(sys.argv[2]) if len(sys.argv) > 2 else 16384
    torch.manual_seed(0)
    sms = 4 if INTERP else torch.cuda.get_device_properties(0).multi_processor_count
    if not INTERP:
        a = torch.empty(256 * 2**20, dtype=torch.uint8, device=dev)
        b = torch.empty_like(a)
        copy = triton.testing.do_bench(lambda: b.copy_(a), rep=200)
        copy_gbs = 2 * a.numel() / copy / 1e6
        print(f"copy 256MiB {copy * 1e3:.1f} us {copy_gbs:.0f} GB/s", flush=True)
    x = torch.randn(rows, N, device=dev).to(torch.bfloat16)
    dy = torch.randn(rows, N, device=dev).to(torch.bfloat16)
    w = (torch.rand(N, device=dev) + 0.5).to(torch.bfloat16)
    xf, dyf, wf = x.double(), dy.double(), w.double()
    mean = xf.mean(1)
    var = ((xf - mean[:, None]) ** 2).mean(1)
    rstd = 1 / torch.sqrt(var + 1e-6)
    xh = (xf - mean[:, None]) * rstd[:, None]
    g = dyf * wf
    dx_ref = (g - xh * (g * xh).mean(1, keepdim=True) - g.mean(1, keepdim=True)) * rstd[:, None]
    dw_ref = (dyf * xh).sum(0)
    rstd32, mean32 = rstd.float(), mean.float()
    nbytes = 3 * rows * N * 2
    warps = 4 if INTERP else 16
    cases = []
    for off64 in (False, True):
        for runtime in (False, True):
            for two_d in (False, True):
                cases.append(
                    (
                        f"ref off64={int(off64)} runtime={int(runtime)} 2d={int(two_d)}",
                        "ref",
                        dict(N=N, OFF64=off64, RUNTIME=runtime, TWO_D=two_d),
                    )
                )
    cases.append(("generated persistent", "gen", dict(SPLIT_N=0)))
    cases.append(("generated split 128", "gen", dict(SPLIT_N=128)))
    for tag, kind, kw in cases:
        programs = sms if kind == "ref" or kw["SPLIT_N"] == 0 else rows + N // kw["SPLIT_N"]
        dx = torch.empty_like(x)
        dw = torch.empty(programs, N, dtype=torch.float32, device=dev)
        db = torch.empty_like(dw)
        if kind == "ref":

            def call():
                ref[(programs,)](dy, N, x, N, w, rstd32, mean32, dx, N, dw, db, rows, N, num_warps=warps, **kw)
        else:

            def call():
                L.layernorm_backward_single[(programs,)](
                    dy,
                    N,
                    x,
                    N,
                    w,
                    mean32,
                    rstd32,
                    dx,
                    N,
                    dw,
                    db,
                    rows,
                    N,
                    HAS_BIAS=True,
                    BLOCK_M=1,
                    BLOCK_N=N,
                    EVEN_M=True,
                    EVEN_N=True,
                    VEC=8,
                    LOOP_STAGES=1,
                    num_warps=warps,
                    **kw,
                )

        call()
        err = ((dx.double() - dx_ref).abs() / (dx_ref.abs() + 1e-2)).max().item()
        dws = dw.double()[0] if kind == "gen" and kw["SPLIT_N"] else dw.double().sum(0)
        dwerr = ((dws - dw_ref).abs() / (dw_ref.abs() + 1)).max().item()
        ok = err < 2e-2 and dwerr < 1e-3
        if INTERP:
            print(tag, "ok" if ok else "WRONG", f"{err:.1e} {dwerr:.1e}", flush=True)
            continue
        t = statistics.median([triton.testing.do_bench(call, rep=100) for _ in range(5)]) * 1e3
        print(
            f"layer {rows}x{N} {tag}: {t:.1f} us {nbytes / t / 1e3 / copy_gbs:.2f} of copy {'ok' if ok else 'WRONG'}",
            flush=True,
        )


main()
