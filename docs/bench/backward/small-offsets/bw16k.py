"""Prototype: rms/layer norm backward at wide rows (16384 cols), one row per persistent-loop iteration.
Variants: ref (1-D, as generated), 2d (row viewed [R, C], num_stages), tma (tensor descriptors, pipelined).
python bw16k.py [rows] [cols]"""
# ruff: noqa: B023  (each closure is called within its own loop iteration)

import os
import statistics
import sys

import torch
import triton
import triton.language as tl
from triton.tools.tensor_descriptor import TensorDescriptor

INTERP = os.environ.get("TRITON_INTERPRET") == "1"
dev = "cpu" if INTERP else "cuda"


@triton.jit
def bwd(
    DY,
    X,
    W,
    RSTD,
    MEAN,
    DX,
    DW,
    DB,
    dy_desc,
    x_desc,
    dx_desc,
    n_rows,
    R: tl.constexpr,
    C: tl.constexpr,
    MODE: tl.constexpr,
    STAGES: tl.constexpr,
    LAYER: tl.constexpr,
    TMA_STORE: tl.constexpr,
):
    N: tl.constexpr = R * C
    pid = tl.program_id(0)
    offs = tl.arange(0, R)[:, None] * C + tl.arange(0, C)[None, :]
    dtype = DX.dtype.element_ty
    dw = tl.zeros([R, C], tl.float32)
    db = tl.zeros([R, C], tl.float32)
    for row in tl.range(pid, n_rows, tl.num_programs(0), num_stages=STAGES):
        rstd = tl.load(RSTD + row)
        if MODE == 1:
            dy = dy_desc.load([row * R, 0]).to(tl.float32)
            s = x_desc.load([row * R, 0]).to(tl.float32)
        else:
            dy = tl.load(DY + row * N + offs).to(tl.float32)
            s = tl.load(X + row * N + offs).to(tl.float32)
        w = tl.load(W + offs).to(tl.float32)
        if LAYER:
            mean = tl.load(MEAN + row)
            x_hat = (s - mean) * rstd
            dw += dy * x_hat
            db += dy
        else:
            x_hat = s * rstd
            dw += dy * x_hat.to(dtype).to(tl.float32)
        g = dy * w
        c1 = tl.sum(tl.sum(g * x_hat, 1), 0) / N
        if LAYER:
            c2 = tl.sum(tl.sum(g, 1), 0) / N
            dx = (g - x_hat * c1 - c2) * rstd
        else:
            dx = (g - x_hat * c1) * rstd
        if TMA_STORE:
            dx_desc.store([row * R, 0], dx.to(dtype))
        else:
            tl.store(DX + row * N + offs, dx.to(dtype))
    tl.store(DW + pid * N + offs, dw)
    if LAYER:
        tl.store(DB + pid * N + offs, db)


def run(variant, dy, x, w, rstd, mean, layer, programs):
    mode, R, C, stages, warps, tstore = variant
    n_rows, N = x.shape
    dx = torch.empty_like(x)
    dw = torch.empty(programs, N, dtype=torch.float32, device=x.device)
    db = torch.empty_like(dw)
    descs = [TensorDescriptor.from_tensor(t.view(-1, C), [R, C]) for t in (dy, x, dx)] if mode == 1 else [None] * 3

    def call():
        bwd[(programs,)](
            dy,
            x,
            w,
            rstd,
            mean,
            dx,
            dw,
            db,
            *descs,
            n_rows,
            R=R,
            C=C,
            MODE=mode,
            STAGES=stages,
            LAYER=layer,
            TMA_STORE=tstore,
            num_warps=warps,
        )

    return call, dx, dw, db


def main():
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 2048
    N = int(sys.argv[2]) if len(sys.argv) > 2 else 16384
    torch.manual_seed(0)
    if not INTERP:
        triton.set_allocator(lambda size, align, stream: torch.empty(size, dtype=torch.int8, device="cuda"))
    programs = 4 if INTERP else torch.cuda.get_device_properties(0).multi_processor_count
    variants = [  # (mode, R, C, stages, warps, tma store)
        (0, 1, N, 1, 16, False),
        (0, 64, N // 64, 1, 16, False),
        (0, 64, N // 64, 2, 16, False),
        (0, 64, N // 64, 3, 16, False),
        (1, 256, N // 256, 2, 16, False),
        (1, 128, N // 128, 2, 16, False),
        (1, 256, N // 256, 3, 16, False),
        (1, 256, N // 256, 2, 16, True),
        (1, 256, N // 256, 2, 8, False),
        (1, 128, N // 128, 3, 16, True),
    ]
    if INTERP:
        variants = [
            (0, 1, N, 1, 4, False),
            (0, 4, N // 4, 2, 4, False),
            (1, 8, N // 8, 2, 4, False),
            (1, 8, N // 8, 2, 4, True),
        ]
    if not INTERP:
        a = torch.empty(256 * 2**20, dtype=torch.uint8, device=dev)
        b = torch.empty_like(a)
        copy = triton.testing.do_bench(lambda: b.copy_(a), rep=200)
        copy_gbs = 2 * a.numel() / copy / 1e6
        print(f"copy 256MiB {copy * 1e3:.1f} us {copy_gbs:.0f} GB/s", flush=True)
    for layer in (False, True):
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
        for v in variants:
            try:
                call, dx, dw, db = run(v, dy, x, w, rstd32, mean32, layer, programs)
                call()
                err = ((dx.double() - dx_ref).abs() / (dx_ref.abs() + 1e-2)).max().item()
                dwerr = ((dw.double().sum(0) - dw_ref).abs() / (dw_ref.abs() + 1)).max().item()
                ok = err < 2e-2 and dwerr < (1e-3 if layer else 3e-2)
                if INTERP:
                    print(
                        ("layer" if layer else "rms"), v, "ok" if ok else "WRONG", f"{err:.2e} {dwerr:.2e}", flush=True
                    )
                    continue
                times = [triton.testing.do_bench(call, rep=100) for _ in range(5)]
                t = statistics.median(times) * 1e3
                print(
                    f"{'layer' if layer else 'rms'} {rows}x{N} {v}: {t:.1f} us {nbytes / t / 1e3:.0f} GB/s "
                    f"{nbytes / t / 1e3 / copy_gbs:.2f} of copy {'ok' if ok else 'WRONG'} {err:.1e} {dwerr:.1e}",
                    flush=True,
                )
            except Exception as e:  # noqa: BLE001
                print(("layer" if layer else "rms"), v, "FAILED", type(e).__name__, str(e)[:300], flush=True)


main()
