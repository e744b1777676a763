"""What torch.compile sees of an op on cuda (hand-written): its Triton kernels, not a Python call.

Each op is one custom op (``<namespace>::<op>``, ``<op>_inplace`` and ``<op>_inplace_<mode>``, ``<op>_backward``,
registered by ``dsl/custom_ops.py`` and ``dsl/backward.py``). Eagerly its body runs the
runtime's launcher, as before. This module adds, per op, what ``torch.library.triton_op``
adds to a custom op: when AOTAutograd traces a graph (under ``FunctionalTensorMode``),
a call on cuda tensors is decomposed into the op's traceable body, which allocates the
outputs with ``torch.empty*`` and launches the kernels through
``torch.library.wrap_triton``; Inductor then launches them from its own generated code
(no call back into Python) and can plan memory around them, and CUDA graphs capture
them like Inductor's own kernels.

Why not ``triton_op`` itself: it decomposes a call on every device and runs the
traceable body eagerly. Here the decomposition is taken only where it can serve:
cuda tensors with Triton's compiler (not its interpreter). npu tensors (triton-ascend
kernels are not Inductor's), CPU tensors (the reference, or the interpreter, whose
kernels ``wrap_triton`` cannot trace) and ``torch.export`` keep the opaque custom op,
under the same name; and eager calls keep the launcher's lean launch path.

The traceable launch uses the launcher's own decision (``runtime.Launcher.decide``):
the same dispatch table, kernels, constexprs, launch options and grid as an eager call.
A row count Dynamo keeps symbolic (``dynamic=True``) is never tested: the decision
takes the table's entry for the most rows with the row mask on, and the grid is an
expression of the rows (``Launcher.decide``), so one graph serves every row count.
The columns and row strides are specialized (the table, VEC and the column mask depend
on them; a model's hidden size is a constant).
"""

from __future__ import annotations

import torch

from . import runtime


def decide(launcher: runtime.Launcher, key: tuple, device_index: int) -> tuple:
    """(kernel, grid, options) of a launch key whose values may be symbolic (torch.SymInt).

    A key of plain ints is decided as an eager call decides it (and cached with it);
    otherwise columns and row strides are specialized to ints and the rows left symbolic.
    """
    if all(not isinstance(value, torch.SymInt) for value in key):
        return launcher.decision(key, device_index)
    specialized = {launcher.cols_at, *launcher.strides_at}
    key = tuple(int(value) if i in specialized else value for i, value in enumerate(key))
    return launcher.decide_key(key, device_index)


def launch(decision: tuple, args: tuple) -> None:
    """Launch a decided kernel where a graph is traced: Inductor records the Triton kernel itself."""
    kernel, grid, options = decision
    # a symbolic eps (dynamic=True makes Python floats graph inputs) is specialized: it is a model constant
    args = tuple(float(a) if isinstance(a, torch.SymFloat) else a for a in args)
    torch.library.wrap_triton(kernel)[grid](*args, **options)


def sum_partials(partials: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``runtime.sum_partials`` where a graph is traced: the same kernel and blocks, through wrap_triton."""
    from . import device

    params, programs, n_cols = partials.shape
    out = torch.empty((params, n_cols), dtype=dtype, device=partials.device)
    block_p, block_n, grid = runtime.sum_partials_blocks(params, n_cols)
    torch.library.wrap_triton(device.sum_partials)[grid](
        partials, out, programs, n_cols, BLOCK_P=block_p, BLOCK_N=block_n
    )
    return out


def traceable(device: torch.device) -> bool:
    """Whether a call on this device is decomposed into its Triton kernels when a graph is traced."""
    return device.type == "cuda" and not runtime.INTERPRET


def decompose(custom, params: tuple, body, kernels) -> None:
    """Register ``body`` (the op's traceable body, taking its arguments by ``params``) as the
    op's decomposition under torch.compile for cuda tensors, as ``triton_op`` does for all.

    ``kernels()``: the op's cuda Triton kernels, named for AOTAutograd's cache key (their
    source is part of the key, as a ``triton_op``'s are); asked when the key is computed,
    so that importing the op does not import the kernels (and Triton).
    """
    from torch._library import triton as library_triton
    from torch._subclasses.fake_tensor import FakeTensor
    from torch._subclasses.functional_tensor import FunctionalTensor, FunctionalTensorMode

    known = (FakeTensor, FunctionalTensor, torch.Tensor)

    def decomposition(mode, op, types, args, kwargs):
        given = dict(zip(params, args, strict=False))
        given.update(kwargs)
        first = next(v for v in given.values() if isinstance(v, torch.Tensor))
        if _export_keeps_ops() or not traceable(first.device) or any(t not in known for t in types):
            return mode.__torch_dispatch__(op, types, args, kwargs)  # the opaque custom op
        with mode:
            return body(*[given[p] for p in params])

    custom.register_torch_dispatch(FunctionalTensorMode, decomposition)
    library_triton.triton_ops_to_kernels[custom._qualname] = _Kernels(kernels)


class _Kernels(list):
    """An op's kernels for torch's list of Triton-backed ops, imported when first read."""

    def __init__(self, kernels):
        super().__init__()
        self._kernels = kernels

    def __iter__(self):
        if not self and not runtime.INTERPRET:
            self.extend(self._kernels())
        return super().__iter__()


def _export_keeps_ops() -> bool:
    """torch.export keeps Triton-backed custom ops whole (as it does triton_op's)."""
    try:
        from torch.export._trace import custom_triton_ops_decomposition_disabled
    except ImportError:
        return False
    return custom_triton_ops_decomposition_disabled()
