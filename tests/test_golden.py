"""Golden text: a five-line spec through each template this checkout owns, compared exactly.

When a template changes on purpose, print the new text (python -m tests.test_golden) and paste it here.
"""

from dsl import pipeline, render
from dsl.model import Target
from dsl.op_view import op_plan
from dsl.plan import plan

TINY = """\
op tiny {
    norm     = rms
    weight   = none
    dtypes   = fp32
    targets  = cuda
    backward = none
}
"""

KERNEL = '''\
@triton.jit
def tiny_forward_single(
    X_ptr, X_row_stride, Y_ptr, Y_row_stride,
    n_rows, n_cols, eps,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, EVEN_M: tl.constexpr, EVEN_N: tl.constexpr,
    PERSISTENT: tl.constexpr, VEC: tl.constexpr,
):
    """y = x / sqrt(mean(x^2) + eps): forward, single pass, each row in one tile."""
    dtype = X_ptr.dtype.element_ty
    n_cols, X_row_stride, Y_row_stride = vec_multiples((n_cols, X_row_stride, Y_row_stride), VEC)
    pid = tl.program_id(0)
    EVEN: tl.constexpr = EVEN_M and EVEN_N
    eps = tl.cast(eps, tl.float32)  # fp32 however the launch typed it (Inductor's: fp64)
    cols, col_mask = column_block(0, n_cols, BLOCK_N)
    first, stop, step = tile_range(pid, n_rows, BLOCK_M, PERSISTENT)  # one tile, or a grid-size stride
    for i in range(first, stop, step):
        tile = i if PERSISTENT else pid
        rows, row_mask = row_tile(tile, n_rows, BLOCK_M)
        mask = tile_mask(row_mask, col_mask, EVEN_M, EVEN_N)
        s = tl.load(X_ptr + rows[:, None] * X_row_stride + cols[None, :], mask=None if EVEN else mask, other=None if EVEN else 0.0).to(tl.float32)
        rstd = tl.math.rsqrt(tl.sum(s * s, axis=1) / n_cols + eps)
        x_hat = s * rstd[:, None]
        # llama casting: x_hat is rounded to the input dtype before the affine part
        x_hat = x_hat.to(dtype).to(tl.float32)
        y = x_hat
        y = y.to(dtype)
        tl.store(Y_ptr + rows[:, None] * Y_row_stride + cols[None, :], y, mask=None if EVEN else mask)
'''

ABI = """\
ABI_1 = Signature.of(
    *strided("X", Source.X, "x"),
    *strided("Y", Source.OUT, "x"),
    *SHAPE,
    Param("eps", Kind.SCALAR, Source.EPS),
    *FORWARD_DECIDED,
)
KERNELS = {"single": tiny_forward_single, "multi": tiny_forward_multi}
ABI = ABI_1.extended(abi.VEC)
TABLE = runtime.DispatchTable("tiny", "cuda", TABLE_1)
LAUNCHER = runtime.Launcher(TABLE, KERNELS, ABI, "cuda", {})
"""

REFERENCE = '''\
def tiny_reference(x, eps=1e-6):
    """y = x / sqrt(mean(x^2) + eps).

    Returns (out, residual_out, scale, mean, rstd); None where the op has no such output.
    """
    dtype = x.dtype
    s = x.float()
    rstd = torch.rsqrt(s.square().mean(dim=-1, keepdim=True) + eps)
    x_hat = s * rstd
    # llama casting: x_hat is rounded to the input dtype before the affine part
    x_hat = x_hat.to(dtype).float()
    y = x_hat
    y = y.to(dtype)
    return y, None, None, None, rstd.squeeze(-1).to(torch.float32)
'''


BACKWARD_SPEC = """\
op tiny {
    norm    = rms
    dtypes  = fp32
    targets = cuda
}
"""

BACKWARD_KERNEL = '''\
@triton.jit
def tiny_backward_single(
    DY_ptr, DY_row_stride, X_ptr, X_row_stride, W_ptr, RSTD_ptr, DX_ptr, DX_row_stride, DW_ptr,
    n_rows, n_cols,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, EVEN_M: tl.constexpr, EVEN_N: tl.constexpr, VEC: tl.constexpr,
    LOOP_STAGES: tl.constexpr, SPLIT_N: tl.constexpr, SMALL_OFFSETS: tl.constexpr,
):
    """y = x / sqrt(mean(x^2) + eps) * w: backward, single pass, each row in one tile; dx and dw from dy, a persistent grid, each program keeping fp32 partial sums (or a split grid: SPLIT_N)."""
    dtype = X_ptr.dtype.element_ty
    n_cols, DY_row_stride, X_row_stride, DX_row_stride = vec_multiples((n_cols, DY_row_stride, X_row_stride, DX_row_stride), VEC)
    pid = tl.program_id(0)
    num_tiles = tl.cdiv(n_rows, BLOCK_M)
    if SPLIT_N:
        if pid >= num_tiles:
            cols, col_mask = column_block((pid - num_tiles) * SPLIT_N, n_cols, SPLIT_N)
            SPLIT_M: tl.constexpr = (8192 if SPLIT_N >= 128 else 4096) // SPLIT_N
            dw = tl.zeros([SPLIT_M, SPLIT_N], dtype=tl.float32)
            split_tiles = tl.cdiv(n_rows, SPLIT_M)
            for tile in range(0, split_tiles):
                rows, row_mask = row_tile(split_tiles - 1 - tile, n_rows, SPLIT_M)
                mask = tile_mask(row_mask, col_mask, False, False)
                rstd = tl.load(RSTD_ptr + rows, mask=row_mask, other=0.0).to(tl.float32)
                dy = tl.load(DY_ptr + rows[:, None] * DY_row_stride + cols[None, :], mask=mask, other=0.0).to(tl.float32)
                s = tl.load(X_ptr + rows[:, None] * X_row_stride + cols[None, :], mask=mask, other=0.0).to(tl.float32)
                x_hat = s * rstd[:, None]
                dw += dy * x_hat.to(dtype).to(tl.float32)  # the forward multiplied the rounded x_hat by w
            tl.store(DW_ptr + cols, tl.sum(dw, axis=0).to(DW_ptr.dtype.element_ty), mask=col_mask)
    EVEN: tl.constexpr = EVEN_M and EVEN_N
    cols, col_mask = column_block(0, n_cols, BLOCK_N)
    W_PER_TILE: tl.constexpr = BLOCK_N > 8192  # w reloaded per tile: held across the loop, it would spill
    if not W_PER_TILE:
        w = tl.load(W_ptr + cols, mask=None if EVEN_N else col_mask, other=None if EVEN_N else 0.0).to(tl.float32)
    dw = tl.zeros([BLOCK_N], dtype=tl.float32)
    EARLY_SUMS: tl.constexpr = BLOCK_N > 8192  # each tile's share of them before the row's sums
    for tile in tl.range(pid, num_tiles, tl.num_programs(0), num_stages=LOOP_STAGES):
        rows, row_mask = row_tile(tile, n_rows, BLOCK_M, not SMALL_OFFSETS)
        mask = tile_mask(row_mask, col_mask, EVEN_M, EVEN_N)
        if W_PER_TILE:
            w = tl.load(W_ptr + cols, mask=None if EVEN_N else col_mask, other=None if EVEN_N else 0.0).to(tl.float32)
        rstd = tl.load(RSTD_ptr + rows, mask=None if EVEN_M else row_mask, other=None if EVEN_M else 0.0).to(tl.float32)
        dy = tl.load(DY_ptr + rows[:, None] * DY_row_stride + cols[None, :], mask=None if EVEN else mask, other=None if EVEN else 0.0).to(tl.float32)
        s = tl.load(X_ptr + rows[:, None] * X_row_stride + cols[None, :], mask=None if EVEN else mask, other=None if EVEN else 0.0).to(tl.float32)
        x_hat = s * rstd[:, None]
        g = dy * w[None, :]
        if EARLY_SUMS and not SPLIT_N:  # before the row's sums: dy is dead across them
            dw += tl.sum(dy * x_hat.to(dtype).to(tl.float32), axis=0)  # the forward multiplied the rounded x_hat by w
        c1 = tl.sum(g * x_hat, axis=1) / n_cols
        dx = (g - x_hat * c1[:, None]) * rstd[:, None]
        tl.store(DX_ptr + rows[:, None] * DX_row_stride + cols[None, :], dx.to(dtype), mask=None if EVEN else mask)
        if not EARLY_SUMS and not SPLIT_N:  # (wide rows: above; the split grid's column programs sum dw)
            dw += tl.sum(dy * x_hat.to(dtype).to(tl.float32), axis=0)  # the forward multiplied the rounded x_hat by w
    if not SPLIT_N:  # this program's partial sums: row pid of DW, which the op adds up
        tl.store(DW_ptr + pid * n_cols + cols, dw.to(DW_ptr.dtype.element_ty), mask=None if EVEN_N else col_mask)
'''


def spec():
    (tiny,) = pipeline.load_text(TINY, "tiny.norm")
    return tiny


def target_text(kernel_plan=None) -> str:
    kernel_plan = kernel_plan or plan(spec(), Target.CUDA, None)
    tables, abis = render.shared_tables([kernel_plan]), render.shared_abis([kernel_plan])
    directions = [d.direction.value for d in kernel_plan.directions]
    return render.render_target(
        kernel_plan, {d: tables["tiny", d] for d in directions}, {d: abis["tiny", d] for d in directions}
    )


def kernel_text() -> str:
    text = target_text()
    start = text.index("@triton.jit\ndef tiny_forward_single")
    return text[start : text.index("\n\n\n@triton.jit\ndef tiny_forward_multi")] + "\n"


def abi_text() -> str:
    """The target-neutral signature in the ABI module, and the kernel module's ABI built from it."""
    kernel_plan = plan(spec(), Target.CUDA, None)
    (shared,) = set(render.shared_abis([kernel_plan]).values())
    text, module = render.render_abis([shared], ["tiny.norm"]), target_text(kernel_plan)
    return text[text.index("ABI_1 = ") :] + module[module.index("KERNELS = ") :]


def reference_text() -> str:
    text = render.render_reference(op_plan(spec(), "normgen"))
    return text[text.index("def tiny_reference") :]


def test_target_template_backward_kernel():
    (tiny,) = pipeline.load_text(BACKWARD_SPEC, "tiny.norm")
    text = target_text(plan(tiny, Target.CUDA, None))
    start = text.index("@triton.jit\ndef tiny_backward_single")
    assert text[start : text.index("\n\n\n@triton.jit\ndef tiny_backward_multi")] + "\n" == BACKWARD_KERNEL


def test_target_template_kernel():
    assert kernel_text() == KERNEL


def test_target_template_abi():
    assert abi_text() == ABI


def test_reference_template():
    assert reference_text() == REFERENCE


if __name__ == "__main__":
    print(kernel_text(), abi_text(), reference_text(), sep="\n")
