"""Input checks of the generated ops (hand-written; ``dsl/surface.py`` calls them).

Each check names the argument and the fix; all of them run before anything is
allocated or launched. ``rows``, ``bump_written`` and ``copy_outputs`` are the
small tensor helpers the op surface shares.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch
from torch.autograd import forward_ad

_increment_version = torch.autograd.graph.increment_version


class NormgenError(ValueError):
    """Bad input to a generated op, raised before anything is launched."""


# ----------------------------------------------------------------------------
# Input checks (shared by every generated op)


def _describe(t: torch.Tensor) -> str:
    return f"shape {tuple(t.shape)}, dtype {t.dtype}, device {t.device}"


def is_dense(t: torch.Tensor) -> bool:
    """Not nested (a jagged one reached the kernels, which read its data pointer, 0) and of the strided
    layout (sparse and mkldnn tensors have no row strides to launch with)."""
    return not t.is_nested and t.layout is torch.strided


def check_dense(op: str, name: str, t: torch.Tensor) -> None:
    """``is_dense``, or an error naming ``name`` and how to make it so."""
    if is_dense(t):
        return
    if t.is_nested:
        hint = (
            f"normalize its rows as {name}.values(), a dense (rows, hidden) tensor, and rebuild with "
            f"torch.nested.nested_tensor_from_jagged(y, {name}.offsets())"
            if t.layout is torch.jagged
            else f"pad it with {name}.to_padded_tensor(0.0)"
        )
        raise NormgenError(f"{op}: {name} is a nested tensor ({t.layout}); normgen's ops take dense tensors: {hint}")
    raise NormgenError(
        f"{op}: {name} is a {t.layout} tensor; normgen's ops take dense tensors of torch.strided layout "
        f"({name}.to_dense() makes one)"
    )


def check_input(op: str, x, dtypes: tuple) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{op}: x must be a torch.Tensor, got {type(x).__name__}")
    check_dense(op, "x", x)
    if x.dim() == 0:
        raise NormgenError(f"{op}: x must have at least one dimension (..., hidden), got a scalar")
    if x.dtype not in dtypes:
        allowed = ", ".join(str(d) for d in dtypes)
        raise NormgenError(f"{op}: x has dtype {x.dtype}; this op is generated for {allowed}")
    if x.shape[-1] == 0:
        raise NormgenError(f"{op}: x has an empty last dimension; the hidden size must be at least 1")
    if x.stride(-1) != 1 and x.shape[-1] > 1:
        raise NormgenError(
            f"{op}: x's last dimension is not contiguous (stride {x.stride(-1)}); "
            "rows may have any stride, but their elements must be adjacent (use .contiguous())"
        )


def check_like(op: str, name: str, t, x: torch.Tensor, any_strides: bool = False) -> None:
    """A second activation (the residual; in the backward, the gradients): same shape, dtype and device
    as x, its rows of adjacent elements unless ``any_strides`` (the backward takes autograd's as they come)."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
    check_dense(op, name, t)
    if t.shape != x.shape or t.dtype != x.dtype or t.device != x.device:
        raise NormgenError(f"{op}: {name} ({_describe(t)}) must match x ({_describe(x)})")
    if not any_strides and t.stride(-1) != 1 and t.shape[-1] > 1:
        raise NormgenError(f"{op}: {name}'s last dimension is not contiguous (stride {t.stride(-1)})")


HALF = (torch.float16, torch.bfloat16)  # activation dtypes whose weight and bias may be fp32


def check_param(op: str, name: str, t, x: torch.Tensor, like: torch.Tensor | None = None) -> None:
    """A per-column parameter (weight, bias): shape (hidden,), x's device, and x's dtype or, with fp16 or
    bf16 x, fp32 (mixed-precision training keeps fp32 weights). ``like``: the weight, whose dtype the
    bias must share (None: the weight itself, or an op without one, whose bias has x's dtype)."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
    check_dense(op, name, t)
    hidden = x.shape[-1]
    if t.shape != (hidden,):
        raise NormgenError(
            f"{op}: {name} must have shape ({hidden},) to match x's last dimension, got {tuple(t.shape)}"
        )
    if t.device != x.device:
        raise NormgenError(f"{op}: {name} ({_describe(t)}) must be on x's device ({x.device})")
    if like is not None and t.dtype != like.dtype:
        raise NormgenError(f"{op}: {name} has dtype {t.dtype}; it must have the weight's dtype ({like.dtype})")
    if not (takes_params(x.dtype, t.dtype) and (t.dtype is x.dtype or like is not None or name == "weight")):
        # (fp32 with 16-bit x: for a weight, and for a bias beside one; a bias alone takes x's dtype)
        fp32_ok = x.dtype in HALF and (name == "weight" or like is not None)
        allowed = f"x's dtype ({x.dtype})" + (" or torch.float32" if fp32_ok else "")
        hint = (
            f"; a normgen module built without dtype= has {torch.get_default_dtype()} parameters: "
            f"build it with dtype={x.dtype} or call module.to({x.dtype})"
            if t.dtype is torch.get_default_dtype()
            else ""
        )
        raise NormgenError(f"{op}: {name} ({_describe(t)}) must have {allowed}{hint}")
    if t.stride(0) != 1 and hidden > 1:
        raise NormgenError(f"{op}: {name} must be contiguous (stride {t.stride(0)})")


def takes_params(dtype: torch.dtype, param_dtype: torch.dtype) -> bool:
    """Whether x of ``dtype`` takes a weight (and bias) of ``param_dtype``: its own, or fp32 if 16-bit."""
    return param_dtype is dtype or (param_dtype is torch.float32 and dtype in HALF)


def param_dtype(x: torch.Tensor, weight) -> torch.dtype:
    """The dtype of a call's weight and bias (checked): the weight's; x's without a weight."""
    return x.dtype if weight is None else weight.dtype


def needs_grad(tensors: dict) -> bool:
    """Autograd will want a gradient through the call: grad mode is on and an input requires grad."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors.values())


def _needing(tensors: dict) -> str:
    needing = [name for name, t in tensors.items() if t is not None and t.requires_grad]
    return ", ".join(needing) + (" requires" if len(needing) == 1 else " require")


def check_no_grad(op: str, tensors: dict, quantized: bool = False) -> None:
    """Refuse a call that would need a gradient from an op without a backward.

    ``tensors`` maps argument names to tensors (or None). Without this check the
    kernel paths would return tensors without ``grad_fn`` and autograd would
    silently leave the inputs without their share of the gradient.
    """
    if not needs_grad(tensors):
        return
    why = "its quantized output has no gradient" if quantized else "its spec says backward = none"
    raise NormgenError(
        f"{op} has no backward ({why}): {_needing(tensors)} grad and grad mode is on, "
        "so autograd would get no gradient through this op. Call it under torch.no_grad() or "
        "torch.inference_mode() (or pass tensors that do not require grad)"
    )


def refuse_inplace_grad(op: str, tensors: dict) -> None:
    """inplace=True overwrites the inputs the backward needs: refused while autograd wants a gradient."""
    raise NormgenError(
        f"{op}: inplace=True cannot be differentiated: {_needing(tensors)} grad, and the in-place call "
        "overwrites the inputs the backward needs; call it with inplace=False, or under torch.no_grad()"
    )


def check_buffer(op: str, name: str, t, x: torch.Tensor, shape: tuple, dtypes: tuple) -> None:
    """A tensor handed to an op to be written or read whole (an in-place call's q, scale, mean or
    rstd; the backward's rstd and mean): of ``shape``, one of ``dtypes``, on x's device, contiguous.
    A shorter or strided one would be read or written past its end."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if tuple(t.shape) != tuple(shape) or t.dtype not in dtypes or t.device != x.device or not t.is_contiguous():
        wanted = " or ".join(str(d) for d in dtypes)
        raise NormgenError(
            f"{op}: {name} ({_describe(t)}{'' if t.is_contiguous() else ', not contiguous'}) must be a "
            f"contiguous tensor of shape {tuple(shape)}, dtype {wanted}, on {x.device}"
        )


def check_not_transformed(op: str, tensors: dict) -> None:
    """torch.func's transforms (vmap, grad, jacrev, ...) wrap tensors the kernels cannot read (a
    batched tensor has no storage) and call autograd formulas functorch cannot run: refused by name."""
    wrapped = torch._C._functorch.is_functorch_wrapped_tensor
    for name, t in tensors.items():
        if isinstance(t, torch.Tensor) and wrapped(t):
            raise NormgenError(
                f"{op}: {name} is a tensor of a torch.func transform (vmap, grad, jacrev, ...), which normgen's "
                "ops do not support; call the op on plain tensors (torch.autograd for gradients, a loop or a "
                "leading batch dimension for vmap)"
            )


def check_not_negated(op: str, tensors: dict) -> None:
    """A tensor with torch's negative bit (``torch._neg_view``; the imaginary part of a conjugated
    complex tensor) is a lazily negated view: its memory holds the negatives of its values, which the
    kernels would read as they are and return wrong values without an error. Refused by name."""
    for name, t in tensors.items():
        if isinstance(t, torch.Tensor) and t.is_neg():
            raise NormgenError(
                f"{op}: {name} is a lazily negated view (torch's negative bit is set: its memory holds the "
                f"negatives of its values, which the kernels would read as they are); pass {name}.resolve_neg()"
            )


def check_no_tangent(op: str, tensors: dict) -> None:
    """Forward-mode AD (torch.autograd.forward_ad): the kernels have no jvp, and a dual tensor needs no
    gradient, so its tangent would be dropped silently. Refused by name while a dual level is open."""
    if forward_ad._current_level < 0:
        return
    for name, t in tensors.items():
        if isinstance(t, torch.Tensor) and forward_ad.unpack_dual(t).tangent is not None:
            raise NormgenError(
                f"{op}: {name} carries a forward-mode AD tangent (torch.autograd.forward_ad), which normgen's "
                "ops do not propagate (they have no jvp); use torch.autograd's backward, or take the "
                "tangent by finite differences"
            )


# The kernels add eps in fp32: a larger one would become inf there, and every row's rstd 0 (y = 0, or
# the bias) where the formula gives tiny nonzero values. The fast paths test the same bound.
EPS_MAX = float(np.finfo(np.float32).max)  # 3.4028234663852886e38


EPS_RULE = f"a finite number >= 0 within fp32's range (at most {EPS_MAX!r}, fp32's largest: the kernels add it in fp32)"


def eps_value(eps) -> tuple[float | None, str]:
    """A number eps as a float, or None and what is wrong with it (``EPS_RULE`` says what is right)."""
    try:
        value = float(eps)
    except OverflowError:  # an int (or a Fraction) beyond any float: 10**400
        return None, f"got a number too large for a float ({type(eps).__name__})"
    if not (0.0 <= value <= EPS_MAX):  # (not math.isfinite: under torch.compile eps may be a torch.SymFloat)
        return None, f"got {value}"
    return value, ""


def check_eps(op: str, eps) -> float:
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real):
        raise TypeError(f"{op}: eps must be a number, got {type(eps).__name__}")
    value, wrong = eps_value(eps)
    if value is None:
        raise NormgenError(f"{op}: eps must be {EPS_RULE}, {wrong}")
    return value


def check_hidden_size(op: str, hidden_size) -> None:
    """A module's hidden size: a positive int, or one in a sequence (torch's ``normalized_shape``).
    torch's norm layers normalize over every dimension a longer shape names; normgen's ops over the
    last one only, so such a module could take no input: refused when it is built."""
    size = hidden_size
    if isinstance(size, (tuple, list, torch.Size)):
        if len(size) != 1:
            raise NormgenError(
                f"{op}: hidden_size {tuple(size)} names {len(size)} dimensions; normgen's norms normalize over the "
                "last dimension only (torch's norm layers normalize over every dimension named): pass the last one"
            )
        size = size[0]
    if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 1:
        raise NormgenError(f"{op}: hidden_size must be a positive integer, got {hidden_size!r}")


def check_flags(op: str, **flags) -> None:
    """The call's switches (inplace, return_mean, return_rstd) are True or False, or a number equal to
    1 or 0 (1.0, numpy's bools and numbers), which the fast path's cached forms, found by equality, take
    as those: a string such as "no" is true, and an in-place call would write into x and the residual."""
    for name, value in flags.items():
        if not (isinstance(value, (bool, np.bool_)) or isinstance(value, numbers.Number) and value in (0, 1)):
            raise TypeError(f"{op}: {name} must be True or False, got {value!r}")


def check_choice(op: str, name: str, value, choices: tuple) -> None:
    if value not in choices:
        allowed = ", ".join(repr(c) for c in choices)
        raise NormgenError(f"{op}: {name} must be one of {allowed}, got {value!r}")


def rows(t: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(tensor, row stride) for t seen as (rows, hidden) rows of adjacent elements.

    A view whenever the leading dimensions collapse into one row stride (any
    2-D tensor, any tensor with padded rows); otherwise a contiguous copy.
    """
    if t.dim() <= 1:
        return t, t.shape[-1]
    if t.dim() == 2:
        return t, t.stride(0)
    try:
        return t, t.view(-1, t.shape[-1]).stride(0)
    except (RuntimeError, ValueError):  # (ValueError: torch's reference view, which traced graphs run)
        return t.reshape(-1, t.shape[-1]), t.shape[-1]


def backward_rows(t: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(rows, row stride) of a gradient or saved tensor: a view where its rows allow it, else a copy
    (autograd may hand the backward expanded or otherwise strided gradients)."""
    if t.shape[-1] > 1 and t.stride(-1) != 1:
        t = t.contiguous()
    return rows(t) if not t.is_contiguous() else (t, t.shape[-1])


def check_inplace(op: str, x: torch.Tensor, residual: torch.Tensor, params: dict | None = None) -> None:
    """x and residual are written in place: each must be writable as rows, they must not overlap, and
    neither may overlap a parameter (``params``: name -> weight, bias or None), which later rows would
    read after earlier ones wrote it.

    (A tensor that requires grad is refused before this, by check_no_grad.)
    """
    if torch.compiler.is_compiling():
        # dynamo cannot trace the memory checks below (they read pointers). Off cuda the in-place custom
        # op's body runs them on the real tensors when the compiled graph runs; on cuda the op decomposes
        # into its kernels, and only what the trace shows is refused: x passed as the residual too
        if x is residual:
            raise NormgenError(f"{op}: inplace=True needs x and residual in separate memory; they share elements")
        return
    for name, t in (("x", x), ("residual", residual)):
        if t.is_inference() and not torch.is_inference_mode_enabled():
            raise NormgenError(
                f"{op}: inplace=True cannot write into {name}, an inference tensor, outside inference mode "
                "(torch refuses such in-place updates too); call it under torch.inference_mode()"
            )
        if t.dim() > 2 and rows(t)[0] is not t:
            raise NormgenError(
                f"{op}: inplace=True needs {name}'s leading dimensions to collapse into one row stride "
                f"(strides {t.stride()}); pass a tensor whose rows can be viewed as (rows, hidden)"
            )
        _, row_stride = rows(t)
        overlapping_rows = t.numel() > t.shape[-1] and abs(row_stride) < t.shape[-1]
        if overlapping_rows or (t.numel() > 1 and torch._debug_has_internal_overlap(t) == 1):
            raise NormgenError(
                f"{op}: inplace=True cannot write into {name}: its elements overlap (stride {t.stride()})"
            )
    if overlap(x, residual):
        raise NormgenError(f"{op}: inplace=True needs x and residual in separate memory; they share elements")
    for name, p in (params or {}).items():
        for written, t in (("x", x), ("residual", residual)):
            if p is not None and overlap(t, p):
                raise NormgenError(
                    f"{op}: inplace=True writes into {written}, and the {name} shares its memory; the kernels "
                    f"would read a {name} that earlier rows overwrote. Pass a {name} in memory of its own"
                )


def overlap(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether a and b (each rows of adjacent elements, as the kernels see them) share an element.

    Exact where one of them is a single row or both are rows of one width and row stride (a buffer's
    interleaved halves, say); otherwise whether the spans from first to last element meet.
    """
    if not a.numel() or not b.numel() or a.untyped_storage().data_ptr() != b.untyped_storage().data_ptr():
        return False
    size = a.element_size()
    a_lo, b_lo = a.data_ptr(), b.data_ptr()
    if not (a_lo < b_lo + _extent(b) * b.element_size() and b_lo < a_lo + _extent(a) * size):
        return False
    if b.element_size() != size or (a_lo - b_lo) % size or a.stride(-1) != 1 or b.stride(-1) != 1:
        return True
    (ra, sa), (rb, sb) = rows(a), rows(b)
    if ra is not a or rb is not b:  # rows that are no view: only the spans
        return True
    na, nb = a.shape[-1], b.shape[-1]
    rows_a, rows_b = a.numel() // na, b.numel() // nb
    if rows_b > 1 and rows_a == 1:  # one row against rows: the rows as a
        sa, sb, na, nb, rows_a, rows_b, a_lo, b_lo = sb, sa, nb, na, rows_b, rows_a, b_lo, a_lo
    d = (b_lo - a_lo) // size  # b's first element, in elements from a's
    if rows_b == 1:  # row i of a, [i * sa, i * sa + na), meets [d, d + nb) where d - na < i * sa < d + nb
        if rows_a == 1 or sa <= 0:  # two rows of adjacent elements whose spans meet; or odd strides
            return True
        lo, hi = (d - na) // sa + 1, -((-(d + nb)) // sa) - 1
        return max(lo, 0) <= min(hi, rows_a - 1)
    if sa == sb and na == nb and sa > 0:  # rows i of a and k of b meet where |d + (k - i) * sa| < na
        m = -d / sa
        candidates = {max(-(rows_a - 1), min(rows_b - 1, c)) for c in (math.floor(m), math.ceil(m))}
        return any(abs(d + c * sa) < na for c in candidates)
    return True


_BUMP_MANY = [True]  # False once torch refused a tuple of tensors to bump (older torch takes one)


def bump_written(written: tuple) -> None:
    """Record a kernel's in-place writes into these tensors, as torch's own in-place ops do.

    Autograd compares a saved tensor's version with its current one; a kernel
    writes behind autograd's back, so the op bumps the counters itself. An
    inference tensor (written only in inference mode) has no counter: nothing
    happens to it.
    """
    if _BUMP_MANY[0]:
        try:
            torch._C._increment_version(written)  # what increment_version calls, without its type test
            return
        except TypeError:
            _BUMP_MANY[0] = False
    for t in written:
        _increment_version(t)


def _extent(t: torch.Tensor) -> int:
    """Elements from the first to one past the last element of t."""
    return 1 + sum((size - 1) * stride for size, stride in zip(t.shape, t.stride(), strict=True))


def copy_outputs(slots: tuple, values: tuple) -> None:
    """Write the reference's results into the op's outputs (fp8 is stored as its bits)."""
    for slot, value in zip(slots, values, strict=True):
        if slot is None or value is None or slot is value:
            continue
        if slot.dtype != value.dtype:
            value = value.view(slot.dtype)
        slot.copy_(value)
