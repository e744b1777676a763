"""The eager fast path's caches (hand-written): an op's call forms and their per-shape records.

``Op.__call__`` (``dsl/surface.py``) proves a common eager call valid with a few attribute
reads; what does not change between such calls is kept here: the call's form (``Form``:
what it allocates, writes, returns) and, per shape, dtype and device, a record (``Record``:
launch key, fixed arguments, direct launch).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from . import runtime
from .launch_layout import PER_CALL

if TYPE_CHECKING:
    from .surface import Op


class Form:
    """One call form of an op for the fast path: residual mode, statistics asked, in place or not.

    ``outputs(x, residual, record)`` allocates a call's outputs and returns its slots
    (out, residual_out, scale, mean, rstd), what the op returns and the inputs that the
    kernels write in place. Which slot is which tensor comes from ``Op.slots``, asked
    once here with stand-ins, so the fast path allocates, writes and returns what the
    checked path does (tests/test_fast_path.py compares the two).
    """

    def __init__(self, op: Op, norm_pos, mean: bool, rstd: bool, inplace: bool):
        self.norm_pos, self.mean, self.rstd, self.inplace = norm_pos, mean, rstd, inplace
        self.records: dict[tuple, Record] = {}  # (x's shape, dtype, device, bias is None, weight's dtype) -> record
        x, residual = object(), object()
        slots = op.slots([object() for _ in range(5)], x, residual, norm_pos, mean, rstd, inplace)
        write_x, write_residual = (inplace and any(s is t for s in slots) for t in (x, residual))
        self.write_x, self.write_residual = write_x, write_residual
        if write_x:
            written = (lambda x, r: (x, r)) if write_residual else (lambda x, r: (x,))
        else:
            written = (lambda x, r: (r,)) if write_residual else None
        # what out and residual out are (as dsl/host.py registers them): x, the residual, out, or new
        out, residual_out = slots[:2]
        residual_out_is = "x" if residual_out is x else "residual" if residual_out is residual else None
        if residual_out is not None and residual_out_is is None:
            residual_out_is = "out" if residual_out is out else "new"
        self.out_is_x, self.residual_out_is = out is x, residual_out_is
        if op.quant_storage is not None:
            self.outputs = self._quantized_outputs(op, residual_out_is, written)
        else:
            self.outputs = self._plain_outputs(op, out is x, residual_out_is, written)

    def _quantized_outputs(self, op: Op, residual_out_is: str | None, written):
        """Quantized ops: q in its storage dtype (returned as its public view), the residual out, the
        per-row scale, the statistics (the last two as the plain forms make them); no call of the checked
        path's ``Op.new_outputs``, ``Op.slots`` and ``Op.public`` (tests/test_fast_path.py compares the two)."""
        like, has_residual, mean, rstd = torch.empty_like, op.has_residual, self.mean, self.rstd
        storage, stats_dtype, f32, contiguous = op.quant_storage, op.stats_dtype, torch.float32, torch.contiguous_format
        view = op.quant_dtype if op.quant_dtype is not storage else None  # fp8 is allocated as its bits

        def outputs(x, residual, rec):
            q = like(x, dtype=storage, memory_format=contiguous)  # (as the checked and C++ paths: row-major)
            residual_out = _residual_out(residual_out_is, q, x, residual)
            scale = x.new_empty(x.shape[:-1] + (1,), dtype=f32)
            public = q.view(view) if view is not None else q
            result = (public, residual_out, scale) if has_residual else (public, scale)
            m, r = _statistics(x, rec, mean, rstd, stats_dtype) if mean or rstd else (None, None)
            result += tuple(t for t in (m, r) if t is not None)
            return (q, residual_out, scale, m, r), result, written(x, residual) if written else ()

        return outputs

    def _plain_outputs(self, op: Op, out_is_x: bool, residual_out_is: str | None, written):
        """Ops whose output is like x: at most two tensors like x, the statistics; straight-line code."""
        like, has_residual, mean, rstd = torch.empty_like, op.has_residual, self.mean, self.rstd
        stats_dtype = op.stats_dtype  # None: x's dtype

        if not (mean or rstd or written):  # the common forms, in the fewest steps
            if residual_out_is == "new":
                return lambda x, residual, rec: ((out := like(x), new := like(x), None, None, None), (out, new), ())
            if residual_out_is == "out":
                return lambda x, residual, rec: ((out := like(x), out, None, None, None), (out, out), ())
            if residual_out_is is None:
                return lambda x, residual, rec: ((out := like(x), None, None, None, None), out, ())

        def outputs(x, residual, rec):
            out = x if out_is_x else like(x)
            residual_out = _residual_out(residual_out_is, out, x, residual)
            result = (out, residual_out) if has_residual else (out,)
            m, r = _statistics(x, rec, mean, rstd, stats_dtype) if mean or rstd else (None, None)
            result += tuple(t for t in (m, r) if t is not None)
            slots = (out, residual_out, None, m, r)
            return slots, result[0] if len(result) == 1 else result, written(x, residual) if written else ()

        return outputs


def _residual_out(kind: str | None, out, x, residual):
    """A call's residual out, by what ``Form`` found it to be: none, new, out itself, x or the residual."""
    if kind is None:
        return None
    if kind == "new":
        return torch.empty_like(x)
    if kind == "out":
        return out
    return x if kind == "x" else residual


def _statistics(x, rec, mean: bool, rstd: bool, dtype) -> tuple:
    """(mean, rstd) for a call's rows where asked (else None), in ``dtype`` (None: x's)."""
    dtype = dtype or x.dtype
    return (
        x.new_empty(*rec.rows, dtype=dtype) if mean else None,
        x.new_empty(*rec.rows, dtype=dtype) if rstd else None,
    )


class Record:
    """What the fast path knows of one call form at one shape, dtype and device (see ``Op._record``)."""

    __slots__ = ("n_rows", "param_shape", "rows", "device_index", "nbytes", "launcher", "key", "args", "tail")
    __slots__ += ("stream", "direct", "native", "one_device")

    def __init__(self, n_rows, param_shape, rows_shape, device, nbytes, launcher, layout, tail, stream):
        self.n_rows, self.param_shape, self.device_index, self.nbytes = n_rows, param_shape, device.index, nbytes
        self.rows = tuple(rows_shape) or ((),)  # x.shape[:-1] as new_empty's positional sizes (faster than a Size)
        self.launcher, self.tail, self.args = launcher, tail, layout.args
        self.key = layout.key((None,) * PER_CALL + tail)  # the launch key follows from the tail
        self.stream = stream  # cuda: the current stream's getter; None: no direct launch (npu)
        # the direct launch goes to the current device: with one device it is the tensors' (no check)
        self.one_device = stream is None or runtime.device_count("cuda") < 2
        self.direct = None  # the launcher's direct launch of the key, once it has one
        # handed to the op's C++ host path (dsl/host.py): None not yet, True done, False never (Python path)
        self.native = None if stream is not None else False
