// memoptim's native CPU kernels: one memory pass per tensor per step for every update rule.
//
// Why a hand-written kernel: the rules of memoptim.optim.functional, run as torch ops, make
// one pass over memory per operation; compiled by inductor they still make ~14 passes for
// Adam+CM because the buffer slot is a read-modify-write that inductor materialises.  Here
// each tensor is visited once: the priority keys come from one read of the gradients
// (grad_norms), the insert/replace decision is a few scalar operations on the keys, and one
// loop then updates the moments, the parameter and -- only when the decision accepted the
// offer -- the chosen slot and the running sum.  The per-element maths is written in the
// same order as the eager kernels, so results agree with them to rounding.
//
// Semantics are those of memoptim.buffer.offer and memoptim.optim.functional; see there (and
// the project's spec) for the equations.  Supported: CPU, dense, contiguous tensors; float32
// or float64 parameters; buffer values in the parameter dtype or, for float32 parameters,
// bfloat16.  The Python side checks this and falls back to torch.compile otherwise.

#include <torch/extension.h>

#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>

#include <cmath>
#include <limits>
#include <vector>

namespace {

using at::Tensor;
using TensorList = std::vector<Tensor>;

// Elements per parallel chunk: large enough that a chunk amortises the thread hand-off,
// small enough that mid-sized tensors still use both cores.
constexpr int64_t kGrain = 1 << 15;

// Norm partial sums are taken over fixed chunks and added in order, so the key does not
// depend on the number of threads.
constexpr int64_t kNormChunk = 1 << 14;

template <typename T>
double sum_squares(const T* x, int64_t n) {
  const int64_t chunks = (n + kNormChunk - 1) / kNormChunk;
  std::vector<double> partial(chunks, 0.0);
  at::parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      const int64_t b = c * kNormChunk, e = std::min(n, b + kNormChunk);
      // Eight independent lanes in a fixed order: vectorisable and deterministic.
      double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
      int64_t j = b;
      for (; j + 8 <= e; j += 8) {
        for (int l = 0; l < 8; ++l) {
          const double v = static_cast<double>(x[j + l]);
          acc[l] += v * v;
        }
      }
      for (; j < e; ++j) {
        const double v = static_cast<double>(x[j]);
        acc[0] += v * v;
      }
      partial[c] = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    }
  });
  double total = 0.0;
  for (double p : partial) total += p;
  return total;
}

// One buffer's insert/replace decision (memoptim.buffer.offer), then the key decay.
// keys: the (C,) keys, -inf in empty slots.  Returns the chosen slot, or -1 if the offer
// was refused.
template <typename K>
int64_t decide(K* keys, int64_t capacity, double offered_d, double decay, int64_t* replacements) {
  const K offered = static_cast<K>(offered_d);
  int64_t slot = 0;
  for (int64_t c = 1; c < capacity; ++c) {
    if (keys[c] < keys[slot]) slot = c;  // first minimum; empty slots (-inf) come first
  }
  const K current = keys[slot];
  const bool accept = std::isfinite(offered) && offered > current;
  if (accept) {
    if (std::isfinite(current)) ++*replacements;
    keys[slot] = offered;
  }
  const K d = static_cast<K>(decay);
  for (int64_t c = 0; c < capacity; ++c) keys[c] = keys[c] * d;
  return accept ? slot : -1;
}

// torch.lerp's formula (two forms for accuracy near weight 1).
template <typename T>
inline T lerp(T start, T end, T weight) {
  const T low = start + weight * (end - start), high = end - (end - start) * (T(1) - weight);
  return weight < T(0.5) ? low : high;
}

// The buffer of one tensor as the kernels see it.
template <typename B, typename A>
struct Slot {
  A* sum = nullptr;      // running sum: read for the aggregation, moved when the offer is accepted;
                         // null when the memory is off
  B* value = nullptr;    // the chosen slot, or null when the offer was refused
  A inv_capacity = A(0);
};

// Stores x into the accepted slot and moves the running sum by (new - old), as
// memoptim.buffer.offer does: values in the buffer dtype, the sum in its wider dtype.
template <typename B, typename A>
inline void store(B* __restrict__ value, A* __restrict__ sum, int64_t j, A x) {
  const B nv = static_cast<B>(x);
  const A delta = static_cast<A>(nv) - static_cast<A>(value[j]);
  value[j] = nv;
  sum[j] = sum[j] + delta;
}

struct AdamScalars {
  double lr, beta1, beta2, eps, weight_decay, step_size, sqrt_bc2;
  bool amsgrad, decoupled, maximize;
};

enum AdamMode : int64_t { kCriticalMomenta = 0, kCriticalGradients = 1, kAdaMomentum = 2 };

// Loop constants, in the parameter dtype.  Options become exact arithmetic (x * -1, x * 1,
// g + 0 * theta) rather than branches, so that the loops have no control flow.
template <typename T>
struct AdamConsts {
  T w1, b2, w2, eps, sign, l2, shrink, step_size, sqrt_bc2;
};

// The elementwise loop over [b, e).  Everything it reads is a by-value argument or behind a
// restrict pointer (distinct state tensors never alias), which is what lets GCC vectorise it;
// the same loop written inside the parallel_for lambda, reading captured references, is not.
template <typename T, typename B, typename A, int64_t MODE, bool HAS_BUF, bool ACCEPT, bool AMSGRAD>
void adam_range(T* __restrict__ P, const T* __restrict__ G, T* __restrict__ M, T* __restrict__ V,
                T* __restrict__ VM, A* __restrict__ S, B* __restrict__ VAL, const A inv_c,
                const AdamConsts<T> c, const int64_t b, const int64_t e) {
  for (int64_t j = b; j < e; ++j) {
    const T p0 = P[j];
    const T grad = G[j] * c.sign + c.l2 * p0;
    const T param = p0 * c.shrink;
    T num, sq;
    if constexpr (MODE == kCriticalGradients) {
      // g_hat = aggr(g, B); Adam on g_hat; g is offered.
      const T ghat = HAS_BUF ? static_cast<T>(static_cast<A>(grad) + S[j] * inv_c) : grad;
      const T mj = lerp(M[j], ghat, c.w1);
      M[j] = mj;
      num = mj;
      sq = ghat;
      if constexpr (ACCEPT) store(VAL, S, j, static_cast<A>(grad));
    } else {
      // m_t; a_t = aggr(m_t, B) feeds both moments (AdaMomentum: a_t = m_t); m_t is offered.
      const T mj = lerp(M[j], grad, c.w1);
      M[j] = mj;
      num = HAS_BUF ? static_cast<T>(static_cast<A>(mj) + S[j] * inv_c) : mj;
      sq = num;
      if constexpr (ACCEPT) store(VAL, S, j, static_cast<A>(mj));
    }
    T vj = V[j] * c.b2 + c.w2 * sq * sq;
    if constexpr (MODE == kAdaMomentum) vj = vj + c.eps;
    V[j] = vj;
    if constexpr (AMSGRAD) {
      const T old = VM[j];
      vj = old > vj ? old : vj;
      VM[j] = vj;
    }
    T denom = std::sqrt(vj) / c.sqrt_bc2;
    if constexpr (MODE != kAdaMomentum) denom = denom + c.eps;
    P[j] = param + c.step_size * (num / denom);
  }
}

template <typename T, typename B, typename A, int64_t MODE, bool HAS_BUF, bool ACCEPT, bool AMSGRAD>
void adam_loop(T* p, const T* g, T* m, T* v, T* vmax, const Slot<B, A>& s, int64_t n,
               const AdamScalars& k) {
  const T wd = static_cast<T>(k.weight_decay);
  const AdamConsts<T> c{
      static_cast<T>(1.0 - k.beta1), static_cast<T>(k.beta2), static_cast<T>(1.0 - k.beta2),
      static_cast<T>(k.eps), k.maximize ? T(-1) : T(1),
      k.weight_decay != 0.0 && !k.decoupled ? wd : T(0),
      k.weight_decay != 0.0 && k.decoupled ? static_cast<T>(1.0 - k.lr * k.weight_decay) : T(1),
      static_cast<T>(k.step_size),
      // as the eager path: divide by sqrt(1 - beta2^t), computed in double, rounded to T
      static_cast<T>(k.sqrt_bc2)};
  B* const value = s.value;
  A* const sum = s.sum;
  const A inv_c = s.inv_capacity;
  at::parallel_for(0, n, kGrain, [&](int64_t b, int64_t e) {
    adam_range<T, B, A, MODE, HAS_BUF, ACCEPT, AMSGRAD>(p, g, m, v, vmax, sum, value, inv_c, c, b, e);
  });
}

template <typename T, typename B, typename A, int64_t MODE, bool AMSGRAD>
void adam_dispatch_buf(T* p, const T* g, T* m, T* v, T* vmax, const Slot<B, A>& s, int64_t n,
                       const AdamScalars& k) {
  if (s.sum == nullptr) adam_loop<T, B, A, MODE, false, false, AMSGRAD>(p, g, m, v, vmax, s, n, k);
  else if (s.value == nullptr) adam_loop<T, B, A, MODE, true, false, AMSGRAD>(p, g, m, v, vmax, s, n, k);
  else adam_loop<T, B, A, MODE, true, true, AMSGRAD>(p, g, m, v, vmax, s, n, k);
}

template <typename T, typename B, typename A, int64_t MODE>
void adam_dispatch(T* p, const T* g, T* m, T* v, T* vmax, const Slot<B, A>& s, int64_t n,
                   const AdamScalars& k) {
  if (k.amsgrad) adam_dispatch_buf<T, B, A, MODE, true>(p, g, m, v, vmax, s, n, k);
  else adam_dispatch_buf<T, B, A, MODE, false>(p, g, m, v, vmax, s, n, k);
}

struct SGDScalars {
  double lr, momentum, dampening, weight_decay;
  bool maximize;
};

enum SGDMode : int64_t { kSGDCriticalMomenta = 0, kSGDCriticalGradients = 1 };

template <typename T>
struct SGDConsts {
  T mu, w, wd, lr, sign;
};

template <typename T, typename B, typename A, int64_t MODE, bool HAS_BUF, bool ACCEPT, bool MOMENTUM>
void sgd_range(T* __restrict__ P, const T* __restrict__ G, T* __restrict__ MOM, A* __restrict__ S,
               B* __restrict__ VAL, const A inv_c, const SGDConsts<T> c, const int64_t b,
               const int64_t e) {
  for (int64_t j = b; j < e; ++j) {
    const T param = P[j];
    const T grad = G[j] * c.sign + c.wd * param;  // wd = 0: exactly g (up to the sign of a zero)
    T dir;
    if constexpr (MODE == kSGDCriticalMomenta) {
      // m_t (heavy ball); theta -= lr * aggr(m_t, B); m_t is offered.
      T mj = grad;
      if constexpr (MOMENTUM) {
        mj = MOM[j] * c.mu + c.w * grad;
        MOM[j] = mj;
      }
      dir = HAS_BUF ? static_cast<T>(static_cast<A>(mj) + S[j] * inv_c) : mj;
      if constexpr (ACCEPT) store(VAL, S, j, static_cast<A>(mj));
    } else {
      // g_hat = aggr(g, B); heavy ball on g_hat; g is offered.
      const T ghat = HAS_BUF ? static_cast<T>(static_cast<A>(grad) + S[j] * inv_c) : grad;
      dir = ghat;
      if constexpr (MOMENTUM) {
        dir = MOM[j] * c.mu + c.w * ghat;
        MOM[j] = dir;
      }
      if constexpr (ACCEPT) store(VAL, S, j, static_cast<A>(grad));
    }
    P[j] = param - c.lr * dir;
  }
}

template <typename T, typename B, typename A, int64_t MODE, bool HAS_BUF, bool ACCEPT, bool MOMENTUM>
void sgd_loop(T* p, const T* g, T* mom, bool seed, const Slot<B, A>& s, int64_t n,
              const SGDScalars& k) {
  // A momentum buffer created this step (zero-filled) is seeded with b_1 = x_1 as
  // 0 * b + 1 * x, so that the loop stays branch-free.
  const SGDConsts<T> c{seed ? T(0) : static_cast<T>(k.momentum),
                       seed ? T(1) : static_cast<T>(1.0 - k.dampening),
                       static_cast<T>(k.weight_decay), static_cast<T>(k.lr),
                       k.maximize ? T(-1) : T(1)};
  B* const value = s.value;
  A* const sum = s.sum;
  const A inv_c = s.inv_capacity;
  at::parallel_for(0, n, kGrain, [&](int64_t b, int64_t e) {
    sgd_range<T, B, A, MODE, HAS_BUF, ACCEPT, MOMENTUM>(p, g, mom, sum, value, inv_c, c, b, e);
  });
}

template <typename T, typename B, typename A, int64_t MODE, bool MOMENTUM>
void sgd_dispatch_buf(T* p, const T* g, T* mom, bool seed, const Slot<B, A>& s, int64_t n,
                      const SGDScalars& k) {
  if (s.sum == nullptr) sgd_loop<T, B, A, MODE, false, false, MOMENTUM>(p, g, mom, seed, s, n, k);
  else if (s.value == nullptr) sgd_loop<T, B, A, MODE, true, false, MOMENTUM>(p, g, mom, seed, s, n, k);
  else sgd_loop<T, B, A, MODE, true, true, MOMENTUM>(p, g, mom, seed, s, n, k);
}

template <typename T, typename B, typename A, int64_t MODE>
void sgd_dispatch(T* p, const T* g, T* mom, bool seed, const Slot<B, A>& s, int64_t n,
                  const SGDScalars& k) {
  if (mom != nullptr) sgd_dispatch_buf<T, B, A, MODE, true>(p, g, mom, seed, s, n, k);
  else sgd_dispatch_buf<T, B, A, MODE, false>(p, g, mom, seed, s, n, k);
}

// The buffer arguments of one call: either all empty (memory off) or one entry per tensor.
struct Buffers {
  const TensorList& values;
  const TensorList& sums;
  const TensorList& keys;
  const TensorList& replacements;
  const Tensor& offered;  // (N,) float64 keys offered this step
  double decay;

  bool on() const { return !values.empty(); }

  // Decides for tensor i and returns the slot view the elementwise loop uses.
  template <typename B, typename A>
  Slot<B, A> take(size_t i) const {
    Slot<B, A> s;
    if (!on()) return s;
    const int64_t capacity = values[i].size(0);
    int64_t* repl = replacements[i].data_ptr<int64_t>();
    const double key = offered.data_ptr<double>()[i];
    int64_t slot;
    if (keys[i].scalar_type() == at::kDouble) slot = decide(keys[i].data_ptr<double>(), capacity, key, decay, repl);
    else slot = decide(keys[i].data_ptr<float>(), capacity, key, decay, repl);
    s.sum = sums[i].data_ptr<A>();
    s.inv_capacity = static_cast<A>(1.0 / static_cast<double>(capacity));
    if (slot >= 0) s.value = values[i].data_ptr<B>() + slot * (values[i].numel() / capacity);
    return s;
  }
};

// Increments a 0-d float32 step counter and returns its new value, as _step_values does.
double next_step(const Tensor& step) {
  float* s = step.data_ptr<float>();
  *s = *s + 1.0f;
  return static_cast<double>(*s);
}

// Calls f with the C++ types of (parameter, buffer value, running sum) for tensor i.
template <typename F>
void with_types(const Tensor& param, const Buffers& bufs, size_t i, F&& f) {
  const bool bf16 = bufs.on() && bufs.values[i].scalar_type() == at::kBFloat16;
  if (param.scalar_type() == at::kDouble) {
    TORCH_CHECK(!bf16, "memoptim native kernel: bfloat16 buffers of float64 parameters are not supported");
    f(double{}, double{}, double{});
  } else if (param.scalar_type() == at::kFloat) {
    if (bf16) f(float{}, c10::BFloat16{}, float{});
    else f(float{}, float{}, float{});
  } else {
    TORCH_CHECK(false, "memoptim native kernel: unsupported parameter dtype ", param.scalar_type());
  }
}

template <typename T>
T* ptr_or_null(const TensorList& list, size_t i) {
  return list.empty() || !list[i].defined() ? nullptr : list[i].data_ptr<T>();
}

bool plain_cpu(const Tensor& t) {
  return t.defined() && t.device().is_cpu() && t.layout() == at::kStrided && !t.is_sparse();
}

bool same_dense(const Tensor& t, const Tensor& like) {
  return plain_cpu(t) && t.is_contiguous() && t.scalar_type() == like.scalar_type() &&
         t.sizes() == like.sizes();
}

// Recomputes tensor i's running sum exactly from its values every 256 steps (the same
// torch.sum as memoptim.buffer.CriticalBuffer.resync, so the same rounding).
void maybe_resync(const Buffers& bufs, size_t i, double step, int64_t interval) {
  if (bufs.on() && interval > 0 && std::fmod(step, static_cast<double>(interval)) == 0.0) {
    at::sum_out(const_cast<Tensor&>(bufs.sums[i]), bufs.values[i], {0}, false, bufs.sums[i].scalar_type());
  }
}

}  // namespace

// Whether the kernels handle these tensors (see the Python wrapper's docstring); cheap, so it
// runs on every step.  `states` are per-tensor lists, each empty or with one entry per tensor
// (undefined entries allowed: a momentum buffer created this step).
bool supports(const TensorList& params, const TensorList& grads, const std::vector<TensorList>& states,
              const TensorList& steps, const TensorList& values, const TensorList& sums,
              const TensorList& keys) {
  const bool buffers = !values.empty();
  for (size_t i = 0; i < params.size(); ++i) {
    const Tensor& p = params[i];
    const auto dt = p.scalar_type();
    if ((dt != at::kFloat && dt != at::kDouble) || !plain_cpu(p) || !p.is_contiguous()) return false;
    const Tensor& g = grads[i];  // may be non-contiguous: the wrapper passes a contiguous copy
    if (!plain_cpu(g) || g.scalar_type() != dt || g.sizes() != p.sizes()) return false;
    for (const TensorList& st : states) {
      if (!st.empty() && st[i].defined() && !same_dense(st[i], p)) return false;
    }
    const Tensor& s = steps[i];
    if (!plain_cpu(s) || s.dim() != 0 || s.scalar_type() != at::kFloat) return false;
    if (buffers) {
      const Tensor& v = values[i];
      const auto vt = v.scalar_type();
      if (!(vt == dt || (dt == at::kFloat && vt == at::kBFloat16))) return false;
      if (!plain_cpu(v) || !v.is_contiguous() || v.dim() != p.dim() + 1) return false;
      if (!plain_cpu(sums[i]) || !sums[i].is_contiguous() || !plain_cpu(keys[i]) || !keys[i].is_contiguous())
        return false;
      const auto st = sums[i].scalar_type(), kt = keys[i].scalar_type();
      if (st != (vt == at::kDouble ? at::kDouble : at::kFloat)) return false;
      if (kt != (dt == at::kDouble ? at::kDouble : at::kFloat)) return false;
    }
  }
  return true;
}

// ||g||_2 of every tensor, as a float64 tensor of shape (N,), from one read of each.
Tensor grad_norms(const TensorList& grads) {
  Tensor out = at::empty({static_cast<int64_t>(grads.size())}, at::kDouble);
  double* o = out.data_ptr<double>();
  for (size_t i = 0; i < grads.size(); ++i) {
    const Tensor& g = grads[i];
    if (g.scalar_type() == at::kDouble) o[i] = std::sqrt(sum_squares(g.data_ptr<double>(), g.numel()));
    else if (g.scalar_type() == at::kFloat) o[i] = std::sqrt(sum_squares(g.data_ptr<float>(), g.numel()));
    else TORCH_CHECK(false, "memoptim native kernel: unsupported gradient dtype ", g.scalar_type());
  }
  return out;
}

// One Adam+CM (mode 0), Adam+CG (mode 1) or AdaMomentum (mode 2) step over a group's tensors.
void adam_step(const TensorList& params, const TensorList& grads, const TensorList& exp_avgs,
               const TensorList& exp_avg_sqs, const TensorList& max_exp_avg_sqs,
               const TensorList& steps, const TensorList& values, const TensorList& sums,
               const TensorList& keys, const TensorList& replacements, const Tensor& offered,
               double lr, double beta1, double beta2, double eps, double weight_decay,
               bool amsgrad, bool decoupled, bool maximize, double decay, int64_t mode,
               int64_t resync_interval) {
  const Buffers bufs{values, sums, keys, replacements, offered, decay};
  for (size_t i = 0; i < params.size(); ++i) {
    const double t = next_step(steps[i]);
    AdamScalars k{lr, beta1, beta2, eps, weight_decay, 0.0, 0.0, amsgrad, decoupled, maximize};
    k.step_size = -lr / (1.0 - std::pow(beta1, t));
    k.sqrt_bc2 = std::sqrt(1.0 - std::pow(beta2, t));
    const int64_t n = params[i].numel();
    with_types(params[i], bufs, i, [&](auto t_tag, auto b_tag, auto a_tag) {
      using T = decltype(t_tag);
      using B = decltype(b_tag);
      using A = decltype(a_tag);
      const Slot<B, A> s = bufs.take<B, A>(i);
      T* p = params[i].data_ptr<T>();
      const T* g = grads[i].data_ptr<T>();
      T* m = exp_avgs[i].data_ptr<T>();
      T* v = exp_avg_sqs[i].data_ptr<T>();
      T* vmax = ptr_or_null<T>(max_exp_avg_sqs, i);
      if (mode == kCriticalMomenta) adam_dispatch<T, B, A, kCriticalMomenta>(p, g, m, v, vmax, s, n, k);
      else if (mode == kCriticalGradients) adam_dispatch<T, B, A, kCriticalGradients>(p, g, m, v, vmax, s, n, k);
      else adam_dispatch<T, B, A, kAdaMomentum>(p, g, m, v, vmax, s, n, k);
    });
    maybe_resync(bufs, i, t, resync_interval);
  }
}

// One SGD+CM (mode 0) or SGD+CG (mode 1) step.  momentum_buffers is empty when momentum is 0;
// seed[i] != 0 marks a momentum buffer created (zero-filled) this step: b_1 = x_1.
void sgd_step(const TensorList& params, const TensorList& grads, const TensorList& momentum_buffers,
              const std::vector<int64_t>& seed, const TensorList& steps, const TensorList& values,
              const TensorList& sums, const TensorList& keys, const TensorList& replacements,
              const Tensor& offered, double lr, double momentum, double dampening,
              double weight_decay, bool maximize, double decay, int64_t mode,
              int64_t resync_interval) {
  const Buffers bufs{values, sums, keys, replacements, offered, decay};
  const SGDScalars k{lr, momentum, dampening, weight_decay, maximize};
  for (size_t i = 0; i < params.size(); ++i) {
    const double t = next_step(steps[i]);
    const int64_t n = params[i].numel();
    with_types(params[i], bufs, i, [&](auto t_tag, auto b_tag, auto a_tag) {
      using T = decltype(t_tag);
      using B = decltype(b_tag);
      using A = decltype(a_tag);
      const Slot<B, A> s = bufs.take<B, A>(i);
      T* p = params[i].data_ptr<T>();
      const T* g = grads[i].data_ptr<T>();
      T* mom = ptr_or_null<T>(momentum_buffers, i);
      const bool fresh = !seed.empty() && seed[i] != 0;
      if (mode == kSGDCriticalMomenta) sgd_dispatch<T, B, A, kSGDCriticalMomenta>(p, g, mom, fresh, s, n, k);
      else sgd_dispatch<T, B, A, kSGDCriticalGradients>(p, g, mom, fresh, s, n, k);
    });
    maybe_resync(bufs, i, t, resync_interval);
  }
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("supports", &supports, "whether the kernels handle these tensors");
  m.def("grad_norms", &grad_norms, "L2 norm of every tensor (float64)");
  m.def("adam_step", &adam_step, "fused Adam+CM / Adam+CG / AdaMomentum step");
  m.def("sgd_step", &sgd_step, "fused SGD+CM / SGD+CG step");
}
