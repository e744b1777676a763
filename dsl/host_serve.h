// The eager host path's launch (hand-written; included by dsl/host.cpp, inside its anonymous
// namespace): the driver's launch call, what a call form and a record hold, and ``serve``, which
// proves one call, allocates its outputs and launches its kernel, or declines it (None).
//
// op.declined() (tests) tells where the last declined call was declined: 10000 + the line in this
// file, or the line in host.cpp.

#pragma once

// ---------------------------------------------------------------------------------------------
// The driver's launch call, found in libcuda at first use (no CUDA headers needed to build).

using LaunchKernel = int (*)(void* f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                             unsigned bz, unsigned shared, void* stream, void** params, void** extra);
using FuncGetParamInfo = int (*)(void* f, size_t index, size_t* offset, size_t* size);
using CtxGetCurrent = int (*)(void** context);

LaunchKernel launch_kernel = nullptr;
FuncGetParamInfo func_get_param_info = nullptr;
CtxGetCurrent ctx_get_current = nullptr;

bool load_driver() {
  if (launch_kernel != nullptr) return true;
  void* lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD);
  if (lib == nullptr) lib = dlopen("libcuda.so.1", RTLD_NOW);
  if (lib == nullptr) return false;
  launch_kernel = reinterpret_cast<LaunchKernel>(dlsym(lib, "cuLaunchKernel"));
  func_get_param_info = reinterpret_cast<FuncGetParamInfo>(dlsym(lib, "cuFuncGetParamInfo"));
  ctx_get_current = reinterpret_cast<CtxGetCurrent>(dlsym(lib, "cuCtxGetCurrent"));
  if (ctx_get_current == nullptr) launch_kernel = nullptr;  // (every driver has it; without it, no launch here)
  return launch_kernel != nullptr;
}

// ---------------------------------------------------------------------------------------------
// What a call form allocates, writes and returns; what a record launches.

enum Slot : int8_t { X, RESIDUAL, WEIGHT, BIAS, OUT, RESIDUAL_OUT, SCALE, MEAN, RSTD, EPS };
enum ParamKind : int8_t { PTR, F32, I32, I64 };
enum ResidualOut : int8_t { NONE, NEW, SAME_AS_OUT, IS_X, IS_RESIDUAL };

struct Param {
  ParamKind kind;
  int8_t slot;    // PTR: the slot whose pointer; F32: EPS
  int64_t value;  // I32, I64: the constant
};

struct Form {
  bool present = false;
  bool out_is_x = false;
  ResidualOut residual_out = NONE;
  bool mean = false, rstd = false;
  int stats_dtype = -1;  // a c10::ScalarType, or -1 for x's dtype
  bool write_x = false, write_residual = false;
  int quant_storage = -1;  // quantized ops: q's storage dtype (a c10::ScalarType), else -1
  int quant_view = -1;     // and the dtype q is returned as, where it differs (fp8 is stored as its bits)
};

constexpr int MAX_DIMS = 8;

struct Key {
  std::array<int64_t, MAX_DIMS + 6> v{};
  bool operator==(const Key& other) const { return v == other.v; }
};

struct KeyHash {
  size_t operator()(const Key& key) const {
    size_t h = 1469598103934665603ull;
    for (int64_t part : key.v) h = (h ^ static_cast<size_t>(part)) * 1099511628211ull;
    return h;
  }
};

struct Record {
  void* function;
  unsigned grid, block, shared;
  std::vector<Param> params;
  int64_t n_rows;
  int64_t nbytes;
};

// A record's key: form, x's dtype, device, bias given, parameters' dtype, rank, sizes (false: too
// many dimensions). The call's lookup and the registration both build it here.
bool make_key(Key& key, int form, int dtype, int device, bool bias_none, int pdtype, c10::IntArrayRef sizes) {
  if (sizes.size() > MAX_DIMS) return false;
  key.v[0] = form;
  key.v[1] = dtype;
  key.v[2] = device;
  key.v[3] = bias_none;
  key.v[4] = pdtype;
  key.v[5] = static_cast<int64_t>(sizes.size());
  for (size_t i = 0; i < sizes.size(); ++i) key.v[6 + i] = sizes[i];
  return true;
}

struct OpObject {
  PyObject_HEAD
  vectorcallfunc vectorcall;
  bool has_residual, has_weight, has_bias;
  int n_modes;
  PyObject* modes;  // tuple of the call modes (str, or None for an op without residual)
  PyObject* types;  // tuple of the tensor types a call may pass (torch.Tensor, torch.nn.Parameter)
  std::vector<Form>* forms;
  std::unordered_map<Key, Record, KeyHash>* records;
  PyObject* module_globals;  // nn.Module's module namespace (set_module), or null
  PyObject* module_methods;  // (name, function, ...) of a module's class (set_module)
  unsigned long long served;
  int declined;  // the line of host.cpp where the last declined call was declined
};

// Every key of `keys` is one of `allowed` (bit for bit: DispatchKeySet's `-` keeps backend bits).
bool within(c10::DispatchKeySet keys, c10::DispatchKeySet allowed) {
  return (keys.raw_repr() & ~allowed.raw_repr()) == 0;
}

// A dense cuda tensor, of one of the accepted Python types, whose dispatch keys are only those
// of a plain cuda tensor (no subclass with a Python key, no functorch wrapper, no conj/neg bit).
const at::Tensor* plain_cuda(OpObject* op, PyObject* obj) {
  PyTypeObject* type = Py_TYPE(obj);
  Py_ssize_t n = PyTuple_GET_SIZE(op->types);
  bool accepted = false;
  for (Py_ssize_t i = 0; i < n; ++i) accepted |= reinterpret_cast<PyObject*>(type) == PyTuple_GET_ITEM(op->types, i);
  if (!accepted) return nullptr;
  const at::Tensor& t = THPVariable_Unpack(obj);
  if (!t.defined()) return nullptr;
  static const c10::DispatchKeySet allowed =
      c10::DispatchKeySet({c10::DispatchKey::CUDA, c10::DispatchKey::AutogradCUDA, c10::DispatchKey::ADInplaceOrView,
                           c10::DispatchKey::AutocastCUDA});
  auto keys = t.key_set();
  if (!keys.has(c10::DispatchKey::CUDA) || !within(keys, allowed)) return nullptr;
  return &t;
}

bool needs_grad(const at::Tensor& t, bool grad) { return grad && t.requires_grad(); }

bool aligned(const at::Tensor& t) { return (reinterpret_cast<uintptr_t>(t.data_ptr()) & 15) == 0; }

// A call this path does not serve: remember where (op.declined(), for tests), answer None.
#define DECLINE_AT(where)    \
  do {                       \
    op->declined = (where);  \
    Py_RETURN_NONE;          \
  } while (0)
#define DECLINE() DECLINE_AT(10000 + __LINE__)

// A call: args are the 9 of op(x, residual, weight, bias, eps, norm_pos, return_mean, return_rstd, inplace).
PyObject* serve(OpObject* op, PyObject* const* args) {
  PyObject *x_obj = args[0], *residual_obj = args[1], *weight_obj = args[2], *bias_obj = args[3];
  PyObject *eps_obj = args[4], *mode_obj = args[5];
  // the form: mode (by identity, then by value), statistics and in place as True or False
  int mode = -1;
  for (int i = 0; i < op->n_modes; ++i) {
    PyObject* m = PyTuple_GET_ITEM(op->modes, i);
    if (m == mode_obj || (m != Py_None && PyUnicode_CheckExact(mode_obj) && PyUnicode_Compare(m, mode_obj) == 0)) {
      mode = i;
      break;
    }
  }
  if (mode < 0) DECLINE();
  int flags[3];
  for (int i = 0; i < 3; ++i) {
    PyObject* flag = args[6 + i];
    if (flag != Py_True && flag != Py_False) DECLINE();
    flags[i] = flag == Py_True;
  }
  bool inplace = flags[2];
  int form_index = mode * 4 + flags[0] * 2 + flags[1] + (inplace ? 4 * op->n_modes : 0);
  if (form_index >= static_cast<int>(op->forms->size())) DECLINE();
  const Form& form = (*op->forms)[form_index];
  if (!form.present) DECLINE();
  if (!PyFloat_CheckExact(eps_obj)) DECLINE();
  double eps = PyFloat_AS_DOUBLE(eps_obj);
  // (the Python checks' bound, EPS_MAX: the kernels add eps in fp32)
  if (!(eps >= 0.0 && eps <= static_cast<double>(FLT_MAX))) DECLINE();
  // no dispatch mode or functorch transform may see this call (they add keys beyond these two to
  // the thread's included set): the Python path decides
  static const c10::DispatchKeySet always_included =
      c10::DispatchKeySet({c10::DispatchKey::BackendSelect, c10::DispatchKey::ADInplaceOrView});
  if (!within(c10::impl::tls_local_dispatch_key_set().included_, always_included)) DECLINE();

  const at::Tensor* x = plain_cuda(op, x_obj);
  if (x == nullptr || !x->is_contiguous()) DECLINE();
  const at::Tensor *residual = nullptr, *weight = nullptr, *bias = nullptr;
  if (op->has_residual && ((residual = plain_cuda(op, residual_obj)) == nullptr)) DECLINE();
  if (op->has_weight && ((weight = plain_cuda(op, weight_obj)) == nullptr)) DECLINE();
  if (op->has_bias && bias_obj != Py_None && ((bias = plain_cuda(op, bias_obj)) == nullptr)) DECLINE();
  if (!op->has_bias && bias_obj != Py_None) DECLINE();

  const int device = x->get_device();
  const auto* guard = c10::impl::getDeviceGuardImpl(c10::DeviceType::CUDA);
  if (guard->getDevice().index() != device) DECLINE();
  // A thread's first launch: no CUDA context is current on it yet (torch's calls may not have needed
  // one), and cuLaunchKernel would fail (CUresult 201). Triton's launcher makes the device's context
  // current first: the Python path's call does, and the thread's later calls come here.
  // (The driver's functions are loaded by the first record's add_record: a twin whose first
  // registration failed before that has none, and serves nothing until one is loaded.)
  if (!load_driver()) DECLINE();
  void* context = nullptr;
  if (ctx_get_current(&context) != 0 || context == nullptr) DECLINE();
  const int pdtype = static_cast<int>(weight != nullptr ? weight->scalar_type() : x->scalar_type());
  Key key;
  if (!make_key(key, form_index, static_cast<int>(x->scalar_type()), device, bias == nullptr, pdtype, x->sizes()))
    DECLINE();
  auto found = op->records->find(key);
  if (found == op->records->end()) DECLINE();
  const Record& rec = found->second;

  const bool grad = at::GradMode::is_enabled();
  if (needs_grad(*x, grad) || !aligned(*x)) DECLINE();
  const int64_t n_cols = x->sizes().back();
  if (residual != nullptr &&
      (residual->sizes() != x->sizes() || residual->scalar_type() != x->scalar_type() ||
       residual->get_device() != device || !residual->is_contiguous() || needs_grad(*residual, grad) ||
       !aligned(*residual)))
    DECLINE();
  for (const at::Tensor* param : {weight, bias}) {
    if (param != nullptr &&
        (param->dim() != 1 || param->sizes()[0] != n_cols || static_cast<int>(param->scalar_type()) != pdtype ||
         param->get_device() != device || !param->is_contiguous() || needs_grad(*param, grad) || !aligned(*param)))
      DECLINE();
  }
  if (inplace) {
    // torch's rules for in-place writes: x and residual must not overlap, and inference
    // tensors are written only in inference mode
    auto xp = reinterpret_cast<intptr_t>(x->data_ptr()), rp = reinterpret_cast<intptr_t>(residual->data_ptr());
    if (std::llabs(xp - rp) < rec.nbytes) DECLINE();
    // and no parameter in what the kernels write: later rows would read what earlier ones wrote
    for (const at::Tensor* param : {weight, bias}) {
      if (param == nullptr) continue;
      auto pp = reinterpret_cast<intptr_t>(param->data_ptr());
      auto pn = static_cast<intptr_t>(param->nbytes());
      for (intptr_t tp : {xp, rp})
        if (pp < tp + rec.nbytes && tp < pp + pn) DECLINE();
    }
    if (!c10::InferenceMode::is_enabled() && (x->is_inference() || residual->is_inference())) DECLINE();
  }

  // outputs
  std::array<at::Tensor, 10> slot_tensors;
  slot_tensors[X] = *x;
  if (residual) slot_tensors[RESIDUAL] = *residual;
  if (weight) slot_tensors[WEIGHT] = *weight;
  if (bias) slot_tensors[BIAS] = *bias;
  // outputs like x, as the Python path's torch.empty_like(x): x's own strides, which a contiguous x
  // may have other than the standard ones in its size-1 dimensions (e.g. (N, 1, 1, C) channels last)
  bool standard = true;
  for (int64_t i = x->dim() - 1, expected = 1; i >= 0; expected *= x->sizes()[i], --i)
    standard = standard && x->strides()[i] == expected;
  auto like_x = [&]() {
    return standard ? at::empty(x->sizes(), x->options()) : at::empty_strided(x->sizes(), x->strides(), x->options());
  };
  at::Tensor& out = slot_tensors[OUT];
  if (form.quant_storage >= 0) {
    // q contiguous in its storage dtype, and one fp32 scale per row: (*x.shape[:-1], 1)
    out = at::empty(x->sizes(), x->options().dtype(static_cast<c10::ScalarType>(form.quant_storage)));
    std::array<int64_t, MAX_DIMS> scale_sizes;
    std::copy(x->sizes().begin(), x->sizes().end(), scale_sizes.begin());
    scale_sizes[x->dim() - 1] = 1;
    slot_tensors[SCALE] = at::empty(c10::IntArrayRef(scale_sizes.data(), x->dim()), x->options().dtype(at::kFloat));
  } else {
    out = form.out_is_x ? *x : like_x();
  }
  switch (form.residual_out) {
    case NEW: slot_tensors[RESIDUAL_OUT] = like_x(); break;
    case SAME_AS_OUT: slot_tensors[RESIDUAL_OUT] = out; break;
    case IS_X: slot_tensors[RESIDUAL_OUT] = *x; break;
    case IS_RESIDUAL: slot_tensors[RESIDUAL_OUT] = *residual; break;
    case NONE: break;
  }
  if (form.mean || form.rstd) {
    auto rows = x->sizes().slice(0, x->dim() - 1);
    auto options = x->options();
    if (form.stats_dtype >= 0) options = options.dtype(static_cast<c10::ScalarType>(form.stats_dtype));
    if (form.mean) slot_tensors[MEAN] = at::empty(rows, options);
    if (form.rstd) slot_tensors[RSTD] = at::empty(rows, options);
  }

  // the launch
  constexpr size_t MAX_PARAMS = 32;
  std::array<int64_t, MAX_PARAMS + 2> storage{};
  std::array<void*, MAX_PARAMS + 2> params{};
  const size_t n = rec.params.size();
  for (size_t i = 0; i < n; ++i) {
    const Param& p = rec.params[i];
    void* where = &storage[i];
    switch (p.kind) {
      case PTR: storage[i] = reinterpret_cast<int64_t>(slot_tensors[p.slot].data_ptr()); break;
      case F32: *static_cast<float*>(where) = static_cast<float>(eps); break;
      case I32: *static_cast<int32_t*>(where) = static_cast<int32_t>(p.value); break;
      case I64: storage[i] = p.value; break;
    }
    params[i] = where;
  }
  // Triton's two trailing scratch pointers (the registration admits only kernels without scratch)
  storage[n] = storage[n + 1] = 0;
  params[n] = &storage[n];
  params[n + 1] = &storage[n + 1];
  if (rec.n_rows > 0) {
    void* stream = guard->getStreamNativeHandle(guard->getStream(c10::Device(c10::DeviceType::CUDA, device)));
    int status = launch_kernel(rec.function, rec.grid, 1, 1, rec.block, 1, 1, rec.shared, stream, params.data(), nullptr);
    if (status != 0) {
      PyErr_Format(PyExc_RuntimeError, "normgen: cuLaunchKernel failed with CUresult %d", status);
      return nullptr;
    }
  }
  ++op->served;
  if (form.write_x && !x->is_inference()) torch::autograd::impl::bump_version(*x);
  if (form.write_residual && !residual->is_inference()) torch::autograd::impl::bump_version(*residual);

  // the result: (out, residual_out) where the op has a residual, the scale where it quantizes,
  // then the statistics asked for
  at::Tensor q;
  if (form.quant_view >= 0) q = out.view(static_cast<c10::ScalarType>(form.quant_view));
  std::array<at::Tensor*, 5> result;
  int count = 0;
  result[count++] = form.quant_view >= 0 ? &q : &out;
  if (op->has_residual) result[count++] = &slot_tensors[RESIDUAL_OUT];
  if (form.quant_storage >= 0) result[count++] = &slot_tensors[SCALE];
  if (form.mean) result[count++] = &slot_tensors[MEAN];
  if (form.rstd) result[count++] = &slot_tensors[RSTD];
  if (count == 1) return THPVariable_Wrap(*result[0]);
  PyObject* tuple = PyTuple_New(count);
  if (tuple == nullptr) return nullptr;
  for (int i = 0; i < count; ++i) {
    PyObject* item = THPVariable_Wrap(*result[i]);
    if (item == nullptr) {
      Py_DECREF(tuple);
      return nullptr;
    }
    PyTuple_SET_ITEM(tuple, i, item);
  }
  return tuple;
}

// serve, with any C++ exception (an allocation's c10::OutOfMemoryError, a device guard's error) raised
// in Python as torch raises it, instead of leaving the call and ending the process (std::terminate)
PyObject* serve_or_raise(OpObject* op, PyObject* const* args) {
  HANDLE_TH_ERRORS
  return serve(op, args);
  END_HANDLE_TH_ERRORS
}

PyObject* op_call(PyObject* self, PyObject* const* args, size_t nargsf, PyObject* kwnames) {
  if (PyVectorcall_NARGS(nargsf) != 9 || kwnames != nullptr) {
    PyErr_SetString(PyExc_TypeError, "_normgen_host.Op takes 9 positional arguments");
    return nullptr;
  }
  return serve_or_raise(reinterpret_cast<OpObject*>(self), args);
}
