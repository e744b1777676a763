"""Trace normgen's ops on fake cuda tensors as torch.compile's AOTAutograd does; print JSON.

Run in a subprocess with TRITON_INTERPRET=0 (tests/test_compiled.py does): the generated
kernels are then Triton JITFunctions, which ``torch.library.wrap_triton`` can record, and
fake cuda tensors need no GPU. Per op and call form: which ops and Triton kernels the
traced forward graph holds, the kernels' constexprs and grid, and the guards the trace
added (with ``--dynamic`` the row count is a symbol, so a guard on it would show here).
"""

from __future__ import annotations

import importlib
import json
import logging
import operator
import sys

import torch
from torch._dynamo.source import ConstantSource
from torch._functorch.aot_autograd import aot_module_simplified
from torch._guards import TracingContext, tracing
from torch._higher_order_ops.triton_kernel_wrap import kernel_side_table
from torch._library import triton as library_triton
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.fx.experimental.symbolic_shapes import DimDynamic, ShapeEnv
from triton.runtime.jit import JITFunction

from dsl import runtime

from . import fake_cuda

# Without a driver Triton cannot say which arguments a kernel writes (it assumes all): quiet.
logging.getLogger("torch._higher_order_ops.triton_kernel_wrap").setLevel(logging.ERROR)
fake_cuda.install()  # no GPU to ask: 132 SMs, no native fp8 or int8 (tests/test_compiled.py compares on the same)


def trace(name: str, norm_pos, inplace: bool, rstd: bool, rows: int, cols: int, dynamic: bool, device: str) -> dict:
    op = importlib.import_module(f"generated.{name}").OP
    env = ShapeEnv()
    mode = FakeTensorMode(shape_env=env)
    n_rows = rows
    if dynamic:
        symbol = env.create_symbol(rows, ConstantSource("rows"), dynamic_dim=DimDynamic.DYNAMIC)
        n_rows = env.create_symintnode(symbol, hint=rows, source=ConstantSource("rows"))
    dtype = op.dtypes[-1]
    with mode:
        tensors = {"x": torch.empty(n_rows, cols, device=device, dtype=dtype)}
        if op.has_residual:
            tensors["residual"] = torch.empty(n_rows, cols, device=device, dtype=dtype)
        if op.has_weight:
            tensors["weight"] = torch.empty(cols, device=device, dtype=dtype)
        if op.has_bias:
            tensors["bias"] = torch.empty(cols, device=device, dtype=dtype)
        values = {"eps": 1e-5, "norm_pos": norm_pos, "return_mean": False, "return_rstd": rstd}
        if inplace:
            new = op.new_outputs(tensors["x"], norm_pos, False, rstd, True)
            out, _, scale, mean, rstd_out = op.slots(
                new, tensors["x"], tensors.get("residual"), norm_pos, False, rstd, True
            )
            values.update(mean=None, rstd=None)
            if op.quant_storage is not None:
                tensors.update(q=out, scale=scale)
            if rstd_out is not None:
                tensors["rstd"] = rstd_out
            params, target = op.inplace_params, op.inplace_ops[norm_pos]  # (the one mode's op compiled calls record)
        else:
            params, target = op.call_params, op.functional_op
            new = op.new_outputs(tensors["x"], norm_pos, False, rstd, False)
    # the graph Dynamo would record: the op, then a use of each result (inputs written in place, or outputs)
    graph = torch.fx.Graph()
    nodes = {name: graph.placeholder(name) for name in tensors}
    call = graph.call_function(target, tuple(nodes.get(p, values.get(p)) for p in params))
    results = (
        [nodes[n] for n in tensors]
        if inplace
        else [graph.call_function(operator.getitem, (call, i)) for i in range(len(new))]
    )
    graph.output(tuple(graph.call_function(torch.ops.aten.mul.Tensor, (r, 1)) for r in results))
    captured = {}

    def compiler(gm, inputs):
        captured["gm"] = gm
        return gm

    with tracing(TracingContext(mode)):
        aot_module_simplified(torch.fx.GraphModule({}, graph), list(tensors.values()), fw_compiler=compiler)
    result = {"ops": [], "kernels": [], "guards": [str(g.expr) for g in env.guards]}
    # the kernels torch's AOTAutograd cache key reads for the op (as for a triton_op)
    qualname = f"{op.custom_op}_inplace_{norm_pos}" if inplace else op.custom_op
    result["registered"] = [k.fn.__name__ for k in library_triton.get_triton_kernels_for_op(qualname)]
    for node in captured["gm"].graph.nodes:
        if node.op != "call_function":
            continue
        if node.target is torch.ops.higher_order.triton_kernel_wrapper_functional:
            kernel = kernel_side_table.get_kernel(node.kwargs["kernel_idx"])
            constants = kernel_side_table.get_constant_args(node.kwargs["constant_args_idx"])
            constants.update(node.kwargs["kwargs"])
            warps = [config.num_warps for config in getattr(kernel, "configs", ())]  # num_warps: an autotune config
            while not isinstance(kernel, JITFunction):
                kernel = kernel.fn
            result["kernels"].append(
                {
                    "name": kernel.fn.__name__,
                    "module": kernel.fn.__module__,
                    "constexprs": {
                        k: v for k, v in constants.items() if k.isupper() and not isinstance(v, torch.fx.Node)
                    },
                    "num_warps": warps[0] if warps else None,
                    "grid": [str(g.meta["val"] if isinstance(g, torch.fx.Node) else g) for g in node.kwargs["grid"][0]],
                }
            )
        elif isinstance(node.target, torch._ops.OpOverload) and node.target.namespace == "normgen":
            result["ops"].append(node.target.name())
    return result


def trace_backward(name: str, rows: int, cols: int, dynamic: bool) -> dict:
    """The backward op's traced body (pre mode, with weight and bias where the op has them) on fake
    tensors: the kernels it launches through wrap_triton (name, grid, constexprs and options), its
    outputs and the guards added on the row count. Fake cuda tensors cannot take views without CUDA,
    so the tensors are on the meta device and the body is told it runs on cuda."""
    from dsl import backward

    op = importlib.import_module(f"generated.{name}").OP
    runtime.kernel_target = lambda device: "cuda"
    launches = []
    wrap = torch.library.wrap_triton

    def spy(kernel):
        def launcher(grid):
            def launch(*args, **options):
                launches.append({"name": kernel.__name__, "grid": [str(g) for g in grid], "options": options})
                return wrap(kernel)[grid](*args, **options)

            return launch

        return type("Spy", (), {"__getitem__": lambda self, grid: launcher(grid)})()

    torch.library.wrap_triton = spy
    env = ShapeEnv()
    n_rows, symbol = rows, None
    if dynamic:
        symbol = env.create_symbol(rows, ConstantSource("rows"), dynamic_dim=DimDynamic.DYNAMIC)
        n_rows = env.create_symintnode(symbol, hint=rows, source=ConstantSource("rows"))
    dtype = op.dtypes[-1]
    with FakeTensorMode(shape_env=env):
        x = torch.empty(n_rows, cols, device="meta", dtype=dtype)
        weight = torch.empty(cols, device="meta", dtype=dtype)
        stats = torch.empty(n_rows, device="meta", dtype=torch.float32)
        mean = stats if "mean" in op.saved else None
        norm_pos = "pre" if op.has_residual else None
        out = backward.run(op, x, x if op.has_residual else None, x, None, weight, mean, stats, 1e-5, op.has_bias,
                           norm_pos, traced=True)  # fmt: skip
    torch.library.wrap_triton = wrap
    return {
        "launches": launches,
        "outputs": [[str(d) for d in t.shape] for t in out],
        "guards": [str(g.expr) for g in env.guards],
    }


if __name__ == "__main__":
    cases = json.loads(sys.argv[1])
    print(json.dumps([trace_backward(**case["backward"]) if "backward" in case else trace(**case) for case in cases]))
