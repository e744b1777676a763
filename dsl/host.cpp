// The eager host path in C++ (hand-written): a common cuda call proven, allocated and launched
// without Python bytecode (the launch itself: host_serve.h; here the module call and the Op type).
// dsl/host.py builds this file on first use and registers, per call form
// and shape, what the Python fast path (dsl/surface.py) has already decided and launched once:
// the kernel (a CUfunction of Triton's compiled kernel), its grid, warps, shared memory and its
// parameters' sources. A call it cannot prove returns None and the Python path runs it; nothing
// here decides anything the Python path did not decide first.
//
// One op:  _normgen_host.Op(has_residual, has_weight, has_bias, modes, types)
//   op(x, residual, weight, bias, eps, norm_pos, return_mean, return_rstd, inplace) -> result | None
//   op.add_form(index, out_is_x, residual_out, mean, rstd, stats_dtype, write_x, write_residual,
//               quant_storage, quant_view)
//   op.add_record(form, sizes, dtype, device, bias_none, pdtype, function, grid, warps, shared, params)
//   op.set_module(namespace, methods); op.call_module(module, x[, residual]) -> result | None: a module
//     call, where nn.Module's __call__ would only have called forward (see op_call_module)
//   op.records() -> the number of records held; op.served() -> the calls it launched (tests, benchmarks)
//   op.declined() -> where the last call it declined was declined (tests; see host_serve.h)
//   op.clear()
// A form index is mode * 4 + return_mean * 2 + return_rstd, plus 4 * modes for inplace
// (see dsl/host.py, which computes the same one).

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <dlfcn.h>

#include <ATen/core/Tensor.h>
#include <ATen/core/grad_mode.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_strided.h>
#include <c10/core/InferenceMode.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/csrc/Exceptions.h>
#include <torch/csrc/autograd/python_variable.h>
#include <torch/csrc/autograd/variable.h>

#include <algorithm>
#include <array>
#include <cfloat>
#include <cmath>
#include <cstdlib>
#include <unordered_map>
#include <vector>

namespace {

#include "host_serve.h"

// host.cpp's own declines: its line numbers
#undef DECLINE
#define DECLINE() DECLINE_AT(__LINE__)

// ---------------------------------------------------------------------------------------------
// A module call: op.call_module(module, x[, residual]) serves module(x[, residual]) where
// nn.Module's __call__ would only call the op's own forward (no hook, no compiled call, the
// class's forward and _run the ones registered by set_module, none set on the instance), with
// the parameters from the module's parameter dict and its eps (and norm_pos). Anything else:
// None, and dsl/modules.py calls nn.Module's __call__.

struct Names {
  PyObject *parameters, *weight, *bias, *eps, *norm_pos, *compiled_call_impl, *dtype_rule;
  std::array<PyObject*, 4> hooks, global_hooks;
};
Names names;

bool intern_names() {
  auto intern = [](const char* text) { return PyUnicode_InternFromString(text); };
  names.parameters = intern("_parameters");
  names.weight = intern("weight");
  names.bias = intern("bias");
  names.eps = intern("eps");
  names.norm_pos = intern("norm_pos");
  names.compiled_call_impl = intern("_compiled_call_impl");
  names.dtype_rule = intern("dtype_rule");
  const char* hooks[] = {"_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks"};
  for (int i = 0; i < 4; ++i) {
    names.hooks[i] = intern(hooks[i]);
    names.global_hooks[i] = PyUnicode_FromFormat("_global%s", hooks[i]);
    if (names.global_hooks[i] != nullptr) PyUnicode_InternInPlace(&names.global_hooks[i]);
  }
  return !PyErr_Occurred();
}

// An empty dict under `name` in `dict` (a hook registry): false where absent, not a dict or not empty.
bool empty_dict_at(PyObject* dict, PyObject* name) {
  PyObject* value = PyDict_GetItemWithError(dict, name);
  return value != nullptr && PyDict_Check(value) && PyDict_GET_SIZE(value) == 0;
}

#define DECLINE_MODULE()     \
  do {                       \
    Py_DECREF(dict);         \
    DECLINE();               \
  } while (0)

PyObject* op_call_module(PyObject* self, PyObject* const* args, Py_ssize_t nargs) {
  auto* op = reinterpret_cast<OpObject*>(self);
  if (op->module_globals == nullptr || nargs != 2 + op->has_residual) DECLINE();
  PyObject* module = args[0];
  // nn.Module's global hooks, read from its module's namespace as its __call__ reads them
  for (PyObject* name : names.global_hooks)
    if (!empty_dict_at(op->module_globals, name)) DECLINE();
  // the class's forward and _run are the registered ones, and the instance sets neither
  PyTypeObject* type = Py_TYPE(module);
  Py_ssize_t n_methods = PyTuple_GET_SIZE(op->module_methods);
  for (Py_ssize_t i = 0; i < n_methods; i += 2) {
    if (_PyType_Lookup(type, PyTuple_GET_ITEM(op->module_methods, i)) != PyTuple_GET_ITEM(op->module_methods, i + 1))
      DECLINE();
  }
  PyObject* dict = PyObject_GenericGetDict(module, nullptr);
  if (dict == nullptr) {
    PyErr_Clear();
    DECLINE();
  }
  for (Py_ssize_t i = 0; i < n_methods; i += 2) {
    if (PyDict_GetItemWithError(dict, PyTuple_GET_ITEM(op->module_methods, i)) != nullptr) DECLINE_MODULE();
  }
  for (PyObject* name : names.hooks)
    if (!empty_dict_at(dict, name)) DECLINE_MODULE();
  PyObject* compiled = PyDict_GetItemWithError(dict, names.compiled_call_impl);
  if (compiled == nullptr) compiled = _PyType_Lookup(type, names.compiled_call_impl);
  if (compiled != nullptr && compiled != Py_None) DECLINE_MODULE();
  // the parameters as nn.Module's dict holds them (absent: a parametrization computes one; the
  // module's own forward reads it)
  PyObject* params = PyDict_GetItemWithError(dict, names.parameters);
  if (params == nullptr || !PyDict_Check(params)) DECLINE_MODULE();
  PyObject* weight = Py_None;
  PyObject* bias = Py_None;
  if (op->has_weight && (weight = PyDict_GetItemWithError(params, names.weight)) == nullptr) DECLINE_MODULE();
  if (op->has_bias && (bias = PyDict_GetItemWithError(params, names.bias)) == nullptr) DECLINE_MODULE();
  // a module with a dtype rule (dsl/modules.py: swap_norms's, which runs the replaced layer on
  // mixed dtypes) is served only where x and the weight have one dtype; the rest goes to the rule
  PyObject* rule = PyDict_GetItemWithError(dict, names.dtype_rule);
  if (rule == nullptr) rule = _PyType_Lookup(type, names.dtype_rule);
  if (rule != nullptr && rule != Py_None &&
      !(op->has_weight && THPVariable_Check(args[1]) && THPVariable_Check(weight) &&
        THPVariable_Unpack(args[1]).scalar_type() == THPVariable_Unpack(weight).scalar_type()))
    DECLINE_MODULE();
  PyObject* eps = PyDict_GetItemWithError(dict, names.eps);
  PyObject* mode = op->has_residual ? PyDict_GetItemWithError(dict, names.norm_pos) : Py_None;
  if (eps == nullptr || mode == nullptr) DECLINE_MODULE();
  PyObject* call[9] = {args[1], op->has_residual ? args[2] : Py_None, weight, bias, eps, mode, Py_False, Py_False,
                       Py_False};
  PyObject* result = serve_or_raise(op, call);
  Py_DECREF(dict);
  return result;
}

// set_module(namespace, methods): nn.Module's module namespace (its global hook registries) and
// (name, function, ...) that a module's class must resolve those names to.
PyObject* op_set_module(PyObject* self, PyObject* args) {
  auto* op = reinterpret_cast<OpObject*>(self);
  PyObject *globals, *methods;
  if (!PyArg_ParseTuple(args, "O!O!", &PyDict_Type, &globals, &PyTuple_Type, &methods)) return nullptr;
  if (PyTuple_GET_SIZE(methods) % 2 != 0) {
    PyErr_SetString(PyExc_ValueError, "set_module: methods must be (name, function) pairs");
    return nullptr;
  }
  for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(methods); i += 2) {
    if (!PyUnicode_CheckExact(PyTuple_GET_ITEM(methods, i))) {
      PyErr_SetString(PyExc_TypeError, "set_module: a method name must be a str");
      return nullptr;
    }
  }
  Py_INCREF(globals);
  Py_INCREF(methods);
  Py_XSETREF(op->module_globals, globals);
  Py_XSETREF(op->module_methods, methods);
  Py_RETURN_NONE;
}

// ---------------------------------------------------------------------------------------------
// The Op type.

PyObject* op_new(PyTypeObject* type, PyObject* args, PyObject* kwargs) {
  int has_residual, has_weight, has_bias;
  PyObject *modes, *types;
  if (!PyArg_ParseTuple(args, "pppO!O!", &has_residual, &has_weight, &has_bias, &PyTuple_Type, &modes, &PyTuple_Type,
                        &types))
    return nullptr;
  auto* op = reinterpret_cast<OpObject*>(type->tp_alloc(type, 0));
  if (op == nullptr) return nullptr;
  op->vectorcall = op_call;
  op->has_residual = has_residual;
  op->has_weight = has_weight;
  op->has_bias = has_bias;
  op->n_modes = static_cast<int>(PyTuple_GET_SIZE(modes));
  Py_INCREF(modes);
  op->modes = modes;
  Py_INCREF(types);
  op->types = types;
  op->forms = new std::vector<Form>(8 * op->n_modes);
  op->records = new std::unordered_map<Key, Record, KeyHash>();
  op->module_globals = op->module_methods = nullptr;
  op->served = 0;
  op->declined = 0;
  return reinterpret_cast<PyObject*>(op);
}

void op_dealloc(PyObject* self) {
  auto* op = reinterpret_cast<OpObject*>(self);
  Py_XDECREF(op->modes);
  Py_XDECREF(op->types);
  Py_XDECREF(op->module_globals);
  Py_XDECREF(op->module_methods);
  delete op->forms;
  delete op->records;
  Py_TYPE(self)->tp_free(self);
}

PyObject* op_add_form(PyObject* self, PyObject* args) {
  auto* op = reinterpret_cast<OpObject*>(self);
  int index, out_is_x, residual_out, mean, rstd, stats_dtype, write_x, write_residual, quant_storage, quant_view;
  if (!PyArg_ParseTuple(args, "ipipp" "ipp" "ii", &index, &out_is_x, &residual_out, &mean, &rstd, &stats_dtype,
                        &write_x, &write_residual, &quant_storage, &quant_view))
    return nullptr;
  if (index < 0 || index >= static_cast<int>(op->forms->size()) || residual_out < NONE || residual_out > IS_RESIDUAL) {
    PyErr_SetString(PyExc_ValueError, "add_form: form index or residual_out out of range");
    return nullptr;
  }
  if (quant_view >= 0 && quant_storage < 0) {
    PyErr_SetString(PyExc_ValueError, "add_form: a view of q needs q's storage dtype");
    return nullptr;
  }
  if (quant_storage >= 0 && out_is_x) {
    PyErr_SetString(PyExc_ValueError, "add_form: a quantized output cannot be x");
    return nullptr;
  }
  Form& form = (*op->forms)[index];
  form.present = true;
  form.out_is_x = out_is_x;
  form.residual_out = static_cast<ResidualOut>(residual_out);
  form.mean = mean;
  form.rstd = rstd;
  form.stats_dtype = stats_dtype;
  form.write_x = write_x;
  form.write_residual = write_residual;
  form.quant_storage = quant_storage;
  form.quant_view = quant_view;
  Py_RETURN_NONE;
}

// add_record(form, sizes, dtype, device, bias_none, pdtype, function, grid, warps, shared, params)
// params: a tuple of (kind, slot, value). Checked against the kernel's own parameter sizes where
// the driver tells them (cuFuncGetParamInfo); a mismatch raises.
PyObject* add_record(PyObject* self, PyObject* args) {
  auto* op = reinterpret_cast<OpObject*>(self);
  int form, dtype, device, bias_none, pdtype;
  PyObject *sizes, *params;
  unsigned long long function;
  unsigned grid, warps, shared;
  if (!PyArg_ParseTuple(args, "iO!iipiKIIIO!", &form, &PyTuple_Type, &sizes, &dtype, &device, &bias_none, &pdtype,
                        &function, &grid, &warps, &shared, &PyTuple_Type, &params))
    return nullptr;
  if (form < 0 || form >= static_cast<int>(op->forms->size()) || !(*op->forms)[form].present) {
    PyErr_SetString(PyExc_ValueError, "add_record: no such form");
    return nullptr;
  }
  Py_ssize_t n_dims = PyTuple_GET_SIZE(sizes), n_params = PyTuple_GET_SIZE(params);
  if (n_dims < 1 || n_dims > MAX_DIMS || n_params > 32 || grid == 0 || warps == 0) {
    PyErr_SetString(PyExc_ValueError, "add_record: rank, parameter count, grid or warps out of range");
    return nullptr;
  }
  std::vector<int64_t> dims(n_dims);
  int64_t numel = 1;
  for (Py_ssize_t i = 0; i < n_dims; ++i) numel *= dims[i] = PyLong_AsLongLong(PyTuple_GET_ITEM(sizes, i));
  if (PyErr_Occurred()) return nullptr;
  if (dims.back() < 1) {
    PyErr_SetString(PyExc_ValueError, "add_record: no columns (a record's last size must be at least 1)");
    return nullptr;
  }
  Key key;
  make_key(key, form, dtype, device, bias_none, pdtype, dims);  // (n_dims checked above)
  Record rec;
  rec.function = reinterpret_cast<void*>(function);
  rec.grid = grid;
  rec.block = 32 * warps;
  rec.shared = shared;
  rec.n_rows = numel / dims.back();
  rec.nbytes = numel * c10::elementSize(static_cast<c10::ScalarType>(dtype));
  for (Py_ssize_t i = 0; i < n_params; ++i) {
    int kind, slot;
    long long value;
    if (!PyArg_ParseTuple(PyTuple_GET_ITEM(params, i), "iiL", &kind, &slot, &value)) return nullptr;
    if (kind < PTR || kind > I64 || (kind == PTR && (slot < X || slot > RSTD)) || (kind == F32 && slot != EPS)) {
      PyErr_SetString(PyExc_ValueError, "add_record: a parameter's kind or slot is out of range");
      return nullptr;
    }
    rec.params.push_back(Param{static_cast<ParamKind>(kind), static_cast<int8_t>(slot), value});
  }
  if (!load_driver()) {
    PyErr_SetString(PyExc_RuntimeError, "add_record: libcuda.so.1 or its cuLaunchKernel was not found");
    return nullptr;
  }
  if (func_get_param_info == nullptr) {
    PyErr_SetString(PyExc_RuntimeError, "add_record: this driver has no cuFuncGetParamInfo to check the parameters");
    return nullptr;
  }
  // the kernel's parameters: ours, then Triton's two scratch pointers, and nothing after
  for (size_t i = 0; i <= rec.params.size() + 2; ++i) {
    size_t offset = 0, size = 0;
    int status = func_get_param_info(rec.function, i, &offset, &size);
    size_t want = i < rec.params.size() ? ((rec.params[i].kind == F32 || rec.params[i].kind == I32) ? 4 : 8) : 8;
    if (i == rec.params.size() + 2) {
      if (status == 0) {
        PyErr_Format(PyExc_ValueError, "add_record: the kernel has more than %zu parameters", i);
        return nullptr;
      }
    } else if (status != 0 || size != want) {
      PyErr_Format(PyExc_ValueError, "add_record: the kernel's parameter %zu is %zu bytes (status %d), not %zu", i,
                   size, status, want);
      return nullptr;
    }
  }
  (*op->records)[key] = std::move(rec);
  Py_RETURN_NONE;
}

// add_record, with a C++ exception (c10's, e.g. an unknown dtype code) raised in Python, not ending the process
PyObject* op_add_record(PyObject* self, PyObject* args) {
  HANDLE_TH_ERRORS
  return add_record(self, args);
  END_HANDLE_TH_ERRORS
}

PyObject* op_records(PyObject* self, PyObject*) {
  return PyLong_FromSize_t(reinterpret_cast<OpObject*>(self)->records->size());
}

PyObject* op_served(PyObject* self, PyObject*) {
  return PyLong_FromUnsignedLongLong(reinterpret_cast<OpObject*>(self)->served);
}

PyObject* op_declined(PyObject* self, PyObject*) {
  return PyLong_FromLong(reinterpret_cast<OpObject*>(self)->declined);
}

PyObject* op_clear(PyObject* self, PyObject*) {
  reinterpret_cast<OpObject*>(self)->records->clear();
  Py_RETURN_NONE;
}

PyMethodDef op_methods[] = {
    {"add_form", op_add_form, METH_VARARGS, "Register a call form."},
    {"set_module", op_set_module, METH_VARARGS, "Register what a module call must find (see call_module)."},
    {"call_module", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(op_call_module)), METH_FASTCALL,
     "module(x[, residual]) where nn.Module's __call__ would only call forward; else None."},
    {"add_record", op_add_record, METH_VARARGS, "Register a record: a form at one shape, dtype and device."},
    {"records", op_records, METH_NOARGS, "The number of records held."},
    {"served", op_served, METH_NOARGS, "The number of calls launched."},
    {"declined", op_declined, METH_NOARGS, "The line of host.cpp that declined the last declined call."},
    {"clear", op_clear, METH_NOARGS, "Forget every record."},
    {nullptr, nullptr, 0, nullptr},
};

PyTypeObject OpType = {PyVarObject_HEAD_INIT(nullptr, 0)};

PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_normgen_host", "normgen's eager host path in C++.", -1, nullptr};

}  // namespace

PyMODINIT_FUNC PyInit__normgen_host() {
  OpType.tp_name = "_normgen_host.Op";
  OpType.tp_basicsize = sizeof(OpObject);
  OpType.tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_VECTORCALL;
  OpType.tp_vectorcall_offset = offsetof(OpObject, vectorcall);
  OpType.tp_call = PyVectorcall_Call;
  OpType.tp_new = op_new;
  OpType.tp_dealloc = op_dealloc;
  OpType.tp_methods = op_methods;
  OpType.tp_doc = "One op's C++ host path (see dsl/host.py).";
  if (PyType_Ready(&OpType) < 0 || !intern_names()) return nullptr;
  PyObject* module = PyModule_Create(&module_def);
  if (module == nullptr) return nullptr;
  Py_INCREF(&OpType);
  if (PyModule_AddObject(module, "Op", reinterpret_cast<PyObject*>(&OpType)) < 0) {
    Py_DECREF(&OpType);
    Py_DECREF(module);
    return nullptr;
  }
  return module;
}
