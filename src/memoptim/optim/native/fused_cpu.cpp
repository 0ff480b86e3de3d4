// memoptim's native CPU kernels: one pass over memory per step for the critical-momenta rules,
// two (a read of the gradients for the priority keys, then the update) for the others.
//
// Why a hand-written kernel: the rules of memoptim.optim.functional, run as torch ops, make
// one pass over memory per operation; compiled by inductor they still make ~14 passes for
// Adam+CM because the buffer slot is a read-modify-write that inductor materialises.  Here:
//
// * critical gradients (and group keys under ZeRO): grad_norms reads every gradient once for
//   the keys; then, per tensor, the insert/replace decision is a few scalar operations on its
//   keys, and one loop updates the moments and the parameter and -- only when the offer was
//   accepted -- writes the chosen slot and moves the running sum;
// * critical momenta (`pending` given): the offer is deferred by one step.  m_t, offered at
//   step t, is what step t+1 reads as the old momentum, so step t+1's loop first stores it
//   into the slot accepted at step t and moves the sum (take_pending), then aggregates, as
//   Algorithm 1 orders it, and meanwhile sums the squares of the gradient; the decision for
//   step t+1 follows the pass (offer_deferred).  8 numbers per parameter move without a
//   replacement, 11 with one, against Adam's 7.
//
// Each pass is one parallel region over all the tensors of the group (see `cut`).  The
// per-element maths follows the eager kernels operation by operation (no FMA contraction), so
// results agree with them to rounding.
//
// Semantics are those of memoptim.buffer.offer and memoptim.optim.functional; see there (and
// the project's spec) for the equations.  Supported: CPU, dense, contiguous tensors; float32
// or float64 parameters; buffer values in the parameter dtype or, for float32 parameters,
// bfloat16.  `supports` checks this; the Python side falls back to torch.compile otherwise.

#include <torch/extension.h>

#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

namespace {

using at::Tensor;
using TensorList = std::vector<Tensor>;

// Work is cut into items of at most kChunk elements of one tensor, and all the items of a
// step (every tensor of the group) go through ONE parallel region: a region per tensor would
// cost a thread hand-off per tensor (~100 per step for a ResNet), and small tensors would run
// serially.  The cut is fixed, so norms (partial sums per item, added in item order) do not
// depend on the number of threads.
constexpr int64_t kChunk = 1 << 14;

struct Item {
  int64_t job, begin, end;
};

std::vector<Item> cut(const std::vector<int64_t>& sizes) {
  std::vector<Item> items;
  for (size_t j = 0; j < sizes.size(); ++j) {
    for (int64_t b = 0; b < sizes[j]; b += kChunk) {
      items.push_back({static_cast<int64_t>(j), b, std::min(sizes[j], b + kChunk)});
    }
  }
  return items;
}

// f(item index, item) for every item, the items split evenly between the threads.
template <typename F>
void for_items(const std::vector<Item>& items, const F& f) {
  at::parallel_for(0, static_cast<int64_t>(items.size()), 1, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) f(i, items[i]);
  });
}

// Sums of squares use kLanes lanes in a fixed layout: element j of a range starting at b goes
// to lane (j - b) mod kLanes, the last (e - b) mod kLanes elements to lane 0, and the lanes are
// added pairwise (lanes_total).  Deterministic, vectorisable without reassociation, and the same
// in grad_norms and in the one-pass loops (adam_range, sgd_range), so both give the same bits.
constexpr int kLanes = 16;

inline double lanes_total(double* acc) {
  for (int width = kLanes / 2; width > 0; width /= 2) {
    for (int l = 0; l < width; ++l) acc[l] = acc[l] + acc[l + width];
  }
  return acc[0];
}

template <typename T>
double sum_squares(const T* __restrict__ x, int64_t b, int64_t e) {
  double acc[kLanes] = {};
  int64_t j = b;
  for (; j + kLanes <= e; j += kLanes) {
    for (int l = 0; l < kLanes; ++l) {
      const double v = static_cast<double>(x[j + l]);
      acc[l] += v * v;
    }
  }
  for (; j < e; ++j) {
    const double v = static_cast<double>(x[j]);
    acc[0] += v * v;
  }
  return lanes_total(acc);
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

// decide on a (C,) float32 or float64 key tensor.
int64_t decide(const Tensor& keys, double offered, double decay, const Tensor& replacements) {
  int64_t* repl = replacements.data_ptr<int64_t>();
  if (keys.scalar_type() == at::kDouble) return decide(keys.data_ptr<double>(), keys.size(0), offered, decay, repl);
  return decide(keys.data_ptr<float>(), keys.size(0), offered, decay, repl);
}

// torch.lerp's formula (two forms for accuracy near weight 1).
template <typename T>
inline T lerp(T start, T end, T weight) {
  const T low = start + weight * (end - start), high = end - (end - start) * (T(1) - weight);
  return weight < T(0.5) ? low : high;
}

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
template <typename T, typename B, typename A, int64_t MODE, bool HAS_BUF, bool ACCEPT, bool SETTLE,
          bool AMSGRAD>
__attribute__((always_inline)) inline void adam_elem(
    T* __restrict__ P, const T* __restrict__ G, T* __restrict__ M, T* __restrict__ V, T* __restrict__ VM,
    A* __restrict__ S, B* __restrict__ VAL, B* __restrict__ PEND, const A inv_c, const AdamConsts<T> c,
    const int64_t j) {
  {
    // Deferred offer (critical momenta only): m_{t-1}, accepted last step and still in M,
    // goes into its slot now, before this step aggregates -- the order Algorithm 1 prescribes.
    if constexpr (SETTLE) store(PEND, S, j, static_cast<A>(M[j]));
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

// The loop over [b, e).  NORM (a deferred offer): also the squares of the raw gradient, in the
// lanes of sum_squares, returned as their total.  Inside the update loop the squares cost
// nothing measurable; a separate read of the chunk for them, even from cache, serialises with
// the update's memory streams and costs as much as a norm pass over memory.
template <typename T, typename B, typename A, int64_t MODE, bool HAS_BUF, bool ACCEPT, bool SETTLE,
          bool AMSGRAD, bool NORM>
double adam_range(T* __restrict__ P, const T* __restrict__ G, T* __restrict__ M, T* __restrict__ V,
                  T* __restrict__ VM, A* __restrict__ S, B* __restrict__ VAL, B* __restrict__ PEND,
                  const A inv_c, const AdamConsts<T> c, const int64_t b, const int64_t e) {
  if constexpr (!NORM) {
    // omp simd: the elements are independent (each j touches index j of distinct tensors only);
    // it spares GCC the alias checks it would otherwise need between the inlined body's pointers.
#pragma omp simd
    for (int64_t j = b; j < e; ++j) {
      adam_elem<T, B, A, MODE, HAS_BUF, ACCEPT, SETTLE, AMSGRAD>(P, G, M, V, VM, S, VAL, PEND, inv_c, c, j);
    }
    return 0.0;
  } else {
    double acc[kLanes] = {};
    int64_t j = b;
    for (; j + kLanes <= e; j += kLanes) {
#pragma omp simd
      for (int l = 0; l < kLanes; ++l) {
        const double g = static_cast<double>(G[j + l]);
        acc[l] += g * g;
        adam_elem<T, B, A, MODE, HAS_BUF, ACCEPT, SETTLE, AMSGRAD>(P, G, M, V, VM, S, VAL, PEND, inv_c, c,
                                                                   j + l);
      }
    }
    for (; j < e; ++j) {
      const double g = static_cast<double>(G[j]);
      acc[0] += g * g;
      adam_elem<T, B, A, MODE, HAS_BUF, ACCEPT, SETTLE, AMSGRAD>(P, G, M, V, VM, S, VAL, PEND, inv_c, c, j);
    }
    return lanes_total(acc);
  }
}

// One tensor's share of an Adam-family step: pointers, the slot decision, its scalars, and the
// instantiation of adam_range that fits its dtypes and options.
struct AdamJob {
  double (*run)(const AdamJob&, int64_t, int64_t);  // returns the range's sum of squares if deferred
  void* p;
  const void* g;
  void* m;
  void* v;
  void* vmax;
  void* sum;    // null: memory off
  void* value;  // the accepted slot, or null
  void* settle; // the slot that receives m_{t-1} (deferred offer), or null
  double inv_capacity;
  AdamScalars k;
};

template <typename T, typename B, typename A, int64_t MODE, bool HAS_BUF, bool ACCEPT, bool SETTLE,
          bool AMSGRAD, bool NORM>
double adam_job(const AdamJob& j, int64_t b, int64_t e) {
  const AdamScalars& k = j.k;
  const T wd = static_cast<T>(k.weight_decay);
  const AdamConsts<T> c{
      static_cast<T>(1.0 - k.beta1), static_cast<T>(k.beta2), static_cast<T>(1.0 - k.beta2),
      static_cast<T>(k.eps), k.maximize ? T(-1) : T(1),
      k.weight_decay != 0.0 && !k.decoupled ? wd : T(0),
      k.weight_decay != 0.0 && k.decoupled ? static_cast<T>(1.0 - k.lr * k.weight_decay) : T(1),
      static_cast<T>(k.step_size),
      // as the eager path: divide by sqrt(1 - beta2^t), computed in double, rounded to T
      static_cast<T>(k.sqrt_bc2)};
  return adam_range<T, B, A, MODE, HAS_BUF, ACCEPT, SETTLE, AMSGRAD, NORM>(
      static_cast<T*>(j.p), static_cast<const T*>(j.g), static_cast<T*>(j.m), static_cast<T*>(j.v),
      static_cast<T*>(j.vmax), static_cast<A*>(j.sum), static_cast<B*>(j.value),
      static_cast<B*>(j.settle), static_cast<A>(j.inv_capacity), c, b, e);
}

using AdamRun = double (*)(const AdamJob&, int64_t, int64_t);

// deferred: a deferred offer's pass (the norms in the loop; the previous offer stored if settle).
template <typename T, typename B, typename A, int64_t MODE, bool AMSGRAD>
AdamRun pick_adam_buf(bool has_buf, bool accept, bool deferred, bool settle) {
  if (!has_buf) return &adam_job<T, B, A, MODE, false, false, false, AMSGRAD, false>;
  if (accept) return &adam_job<T, B, A, MODE, true, true, false, AMSGRAD, false>;
  if constexpr (MODE == kCriticalMomenta) {
    if (deferred && settle) return &adam_job<T, B, A, MODE, true, false, true, AMSGRAD, true>;
    if (deferred) return &adam_job<T, B, A, MODE, true, false, false, AMSGRAD, true>;
  }
  return &adam_job<T, B, A, MODE, true, false, false, AMSGRAD, false>;
}

template <typename T, typename B, typename A>
AdamRun pick_adam(int64_t mode, bool amsgrad, bool has_buf, bool accept, bool deferred, bool settle) {
  if (mode == kCriticalMomenta) {
    return amsgrad ? pick_adam_buf<T, B, A, kCriticalMomenta, true>(has_buf, accept, deferred, settle)
                   : pick_adam_buf<T, B, A, kCriticalMomenta, false>(has_buf, accept, deferred, settle);
  }
  if (mode == kCriticalGradients) {
    return amsgrad ? pick_adam_buf<T, B, A, kCriticalGradients, true>(has_buf, accept, false, false)
                   : pick_adam_buf<T, B, A, kCriticalGradients, false>(has_buf, accept, false, false);
  }
  return amsgrad ? pick_adam_buf<T, B, A, kAdaMomentum, true>(false, false, false, false)
                 : pick_adam_buf<T, B, A, kAdaMomentum, false>(false, false, false, false);
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

template <typename T, typename B, typename A, int64_t MODE, bool HAS_BUF, bool ACCEPT, bool SETTLE,
          bool MOMENTUM>
__attribute__((always_inline)) inline void sgd_elem(
    T* __restrict__ P, const T* __restrict__ G, T* __restrict__ MOM, A* __restrict__ S, B* __restrict__ VAL,
    B* __restrict__ PEND, const A inv_c, const SGDConsts<T> c, const int64_t j) {
  {
    if constexpr (SETTLE) store(PEND, S, j, static_cast<A>(MOM[j]));  // deferred offer of m_{t-1}
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

// As adam_range.
template <typename T, typename B, typename A, int64_t MODE, bool HAS_BUF, bool ACCEPT, bool SETTLE,
          bool MOMENTUM, bool NORM>
double sgd_range(T* __restrict__ P, const T* __restrict__ G, T* __restrict__ MOM, A* __restrict__ S,
                 B* __restrict__ VAL, B* __restrict__ PEND, const A inv_c, const SGDConsts<T> c,
                 const int64_t b, const int64_t e) {
  if constexpr (!NORM) {
#pragma omp simd
    for (int64_t j = b; j < e; ++j) {
      sgd_elem<T, B, A, MODE, HAS_BUF, ACCEPT, SETTLE, MOMENTUM>(P, G, MOM, S, VAL, PEND, inv_c, c, j);
    }
    return 0.0;
  } else {
    double acc[kLanes] = {};
    int64_t j = b;
    for (; j + kLanes <= e; j += kLanes) {
#pragma omp simd
      for (int l = 0; l < kLanes; ++l) {
        const double g = static_cast<double>(G[j + l]);
        acc[l] += g * g;
        sgd_elem<T, B, A, MODE, HAS_BUF, ACCEPT, SETTLE, MOMENTUM>(P, G, MOM, S, VAL, PEND, inv_c, c, j + l);
      }
    }
    for (; j < e; ++j) {
      const double g = static_cast<double>(G[j]);
      acc[0] += g * g;
      sgd_elem<T, B, A, MODE, HAS_BUF, ACCEPT, SETTLE, MOMENTUM>(P, G, MOM, S, VAL, PEND, inv_c, c, j);
    }
    return lanes_total(acc);
  }
}

struct SGDJob {
  double (*run)(const SGDJob&, int64_t, int64_t);  // returns the range's sum of squares if deferred
  void* p;
  const void* g;
  void* mom;    // null: no momentum
  void* sum;    // null: memory off
  void* value;  // the accepted slot, or null
  void* settle; // the slot that receives m_{t-1} (deferred offer), or null
  double inv_capacity;
  SGDScalars k;
  bool seed;    // the momentum buffer was created (zero-filled) this step
};

template <typename T, typename B, typename A, int64_t MODE, bool HAS_BUF, bool ACCEPT, bool SETTLE,
          bool MOMENTUM, bool NORM>
double sgd_job(const SGDJob& j, int64_t b, int64_t e) {
  // A fresh momentum buffer is seeded with b_1 = x_1 as 0 * b + 1 * x: no branch in the loop.
  const SGDConsts<T> c{j.seed ? T(0) : static_cast<T>(j.k.momentum),
                       j.seed ? T(1) : static_cast<T>(1.0 - j.k.dampening),
                       static_cast<T>(j.k.weight_decay), static_cast<T>(j.k.lr),
                       j.k.maximize ? T(-1) : T(1)};
  return sgd_range<T, B, A, MODE, HAS_BUF, ACCEPT, SETTLE, MOMENTUM, NORM>(
      static_cast<T*>(j.p), static_cast<const T*>(j.g), static_cast<T*>(j.mom), static_cast<A*>(j.sum),
      static_cast<B*>(j.value), static_cast<B*>(j.settle), static_cast<A>(j.inv_capacity), c, b, e);
}

using SGDRun = double (*)(const SGDJob&, int64_t, int64_t);

template <typename T, typename B, typename A, int64_t MODE, bool MOMENTUM>
SGDRun pick_sgd_buf(bool has_buf, bool accept, bool deferred, bool settle) {
  if (!has_buf) return &sgd_job<T, B, A, MODE, false, false, false, MOMENTUM, false>;
  if (accept) return &sgd_job<T, B, A, MODE, true, true, false, MOMENTUM, false>;
  if constexpr (MODE == kSGDCriticalMomenta && MOMENTUM) {
    if (deferred && settle) return &sgd_job<T, B, A, MODE, true, false, true, MOMENTUM, true>;
    if (deferred) return &sgd_job<T, B, A, MODE, true, false, false, MOMENTUM, true>;
  }
  return &sgd_job<T, B, A, MODE, true, false, false, MOMENTUM, false>;
}

template <typename T, typename B, typename A>
SGDRun pick_sgd(int64_t mode, bool momentum, bool has_buf, bool accept, bool deferred, bool settle) {
  if (mode == kSGDCriticalMomenta) {
    return momentum ? pick_sgd_buf<T, B, A, kSGDCriticalMomenta, true>(has_buf, accept, deferred, settle)
                    : pick_sgd_buf<T, B, A, kSGDCriticalMomenta, false>(has_buf, accept, false, false);
  }
  return momentum ? pick_sgd_buf<T, B, A, kSGDCriticalGradients, true>(has_buf, accept, false, false)
                  : pick_sgd_buf<T, B, A, kSGDCriticalGradients, false>(has_buf, accept, false, false);
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

  // Decides for tensor i (insert/replace, key decay); returns the accepted slot's first element
  // (null if refused) and sets the running sum and 1/C.
  void* take(size_t i, void** sum, double* inv_capacity) const {
    *sum = nullptr;
    *inv_capacity = 0.0;
    if (!on()) return nullptr;
    const int64_t slot = decide(keys[i], offered.data_ptr<double>()[i], decay, replacements[i]);
    open(i, sum, inv_capacity);
    return slot < 0 ? nullptr : slot_ptr(i, slot);
  }

  // As take, for a deferred offer: no decision now (it follows the pass, see offer_deferred);
  // sets the running sum and 1/C only.
  void open(size_t i, void** sum, double* inv_capacity) const {
    *sum = sums[i].data_ptr();
    *inv_capacity = 1.0 / static_cast<double>(values[i].size(0));
  }

  void* slot_ptr(size_t i, int64_t slot) const {
    const int64_t capacity = values[i].size(0);
    return static_cast<char*>(values[i].data_ptr()) + slot * (values[i].numel() / capacity) * values[i].element_size();
  }
};

// Increments a 0-d float32 step counter and returns its new value, as _step_values does.
double next_step(const Tensor& step) {
  float* s = step.data_ptr<float>();
  *s = *s + 1.0f;
  return static_cast<double>(*s);
}

// Calls f(T{}, B{}, A{}) with the C++ types of (parameter, buffer value, running sum) of tensor i.
template <typename F>
auto with_types(const Tensor& param, const Buffers& bufs, size_t i, F&& f) {
  const bool bf16 = bufs.on() && bufs.values[i].scalar_type() == at::kBFloat16;
  TORCH_CHECK(param.scalar_type() == at::kFloat || param.scalar_type() == at::kDouble,
              "memoptim native kernel: unsupported parameter dtype ", param.scalar_type());
  if (param.scalar_type() == at::kDouble) {
    TORCH_CHECK(!bf16, "memoptim native kernel: bfloat16 buffers of float64 parameters are not supported");
    return f(double{}, double{}, double{});
  }
  if (bf16) return f(float{}, c10::BFloat16{}, float{});
  return f(float{}, float{}, float{});
}

void* ptr_or_null(const TensorList& list, size_t i) {
  return list.empty() || !list[i].defined() ? nullptr : list[i].data_ptr();
}

// A dense CPU tensor with its own storage: not sparse, and not a tensor subclass with Python
// dispatch (e.g. FSDP2's DTensor parameters and buffers, whose data are their local shards).
bool plain_cpu(const Tensor& t) {
  return t.defined() && t.device().is_cpu() && t.layout() == at::kStrided && !t.is_sparse() &&
         !t.key_set().has(c10::DispatchKey::Python) && t.has_storage();
}

bool same_dense(const Tensor& t, const Tensor& like) {
  return plain_cpu(t) && t.is_contiguous() && t.scalar_type() == like.scalar_type() &&
         t.sizes() == like.sizes();
}

// Whether step (1-based) is one after which the running sums are recomputed.
bool resync_step(double step, int64_t interval) {
  return step > 0.0 && interval > 0 && std::fmod(step, static_cast<double>(interval)) == 0.0;
}

// Recomputes tensor i's running sum exactly from its values (the same torch.sum as
// memoptim.buffer.CriticalBuffer.resync, so the same rounding).
void resync(const Buffers& bufs, size_t i) {
  at::sum_out(const_cast<Tensor&>(bufs.sums[i]), bufs.values[i], {0}, false, bufs.sums[i].scalar_type());
}

void maybe_resync(const Buffers& bufs, size_t i, double step, int64_t interval) {
  if (bufs.on() && resync_step(step, interval)) resync(bufs, i);
}

template <typename T, typename B, typename A>
void settle_loop(B* __restrict__ value, A* __restrict__ sum, const T* __restrict__ source, int64_t n) {
  for (int64_t j = 0; j < n; ++j) store(value, sum, j, static_cast<A>(source[j]));
}

// Deferred offers (critical momenta).  pending[i], a 0-d int64, is the slot that accepted the
// previous step's momentum m_{t-1} -- still held, unchanged, in `source` (exp_avg or the momentum
// buffer) -- or -1.  Consumes it and returns that slot's first element for the pass to fill (null
// if none).  If the previous step was a resync step (whose exact recompute must follow its offer),
// the value is stored here by a separate loop and the sum recomputed, and the pass gets null:
// once per RESYNC_INTERVAL steps, so this extra pass does not count.
void* take_pending(const Buffers& bufs, const TensorList& pending, const Tensor& source,
                   const Tensor& param, size_t i, double step, int64_t interval) {
  int64_t* entry = pending[i].data_ptr<int64_t>();
  const int64_t slot = *entry;
  *entry = -1;
  void* target = slot >= 0 ? bufs.slot_ptr(i, slot) : nullptr;
  if (resync_step(step - 1.0, interval)) {
    if (target != nullptr) {
      with_types(param, bufs, i, [&](auto t_tag, auto b_tag, auto a_tag) {
        using T = decltype(t_tag);
        using B = decltype(b_tag);
        using A = decltype(a_tag);
        settle_loop<T, B, A>(static_cast<B*>(target), static_cast<A*>(bufs.sums[i].data_ptr()),
                             static_cast<const T*>(source.data_ptr()), param.numel());
        return 0;
      });
    }
    resync(bufs, i);
    return nullptr;
  }
  return target;
}

// Squared-norm partial sums of the items' gradients (of dtype like `grads[job]`).
double item_sum_squares(const Tensor& g, const Item& it) {
  return g.scalar_type() == at::kDouble ? sum_squares(g.data_ptr<double>(), it.begin, it.end)
                                        : sum_squares(g.data_ptr<float>(), it.begin, it.end);
}

// Per-tensor L2 norms from per-item partial sums, added in item order (fixed: thread-invariant).
Tensor norms_from(const std::vector<Item>& items, const std::vector<double>& partial, size_t n) {
  Tensor out = at::zeros({static_cast<int64_t>(n)}, at::kDouble);
  double* o = out.data_ptr<double>();
  for (size_t i = 0; i < items.size(); ++i) o[items[i].job] += partial[i];
  for (size_t j = 0; j < n; ++j) o[j] = std::sqrt(o[j]);
  return out;
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
  std::vector<int64_t> sizes;
  for (const Tensor& g : grads) {
    TORCH_CHECK(g.scalar_type() == at::kFloat || g.scalar_type() == at::kDouble,
                "memoptim native kernel: unsupported gradient dtype ", g.scalar_type());
    TORCH_CHECK(g.is_contiguous(), "memoptim native kernel: gradients must be contiguous");
    sizes.push_back(g.numel());
  }
  const std::vector<Item> items = cut(sizes);
  std::vector<double> partial(items.size());
  for_items(items, [&](int64_t i, const Item& it) { partial[i] = item_sum_squares(grads[it.job], it); });
  return norms_from(items, partial, grads.size());
}

// The offers of a deferred step, made once its keys are known: for tensor i, the insert/replace
// decision for key offered[i] (then the key decay), recording the accepted slot (or -1) in
// pending[i]; the value itself is stored by the next pass (take_pending) or by
// memoptim.buffer.CriticalBuffer.settle_state.
void offer_deferred(const Tensor& offered, const TensorList& keys, const TensorList& replacements,
                    const TensorList& pending, double decay) {
  const double* key = offered.data_ptr<double>();
  for (size_t i = 0; i < keys.size(); ++i) {
    *pending[i].data_ptr<int64_t>() = decide(keys[i], key[i], decay, replacements[i]);
  }
}

// Runs every item of a step's jobs in one parallel region.  Deferred: the jobs' loops also sum
// the gradients' squares, and the per-tensor norms -- the priority keys' raw material -- are
// returned; otherwise `after` runs (the resyncs) and an empty tensor is returned.
template <typename Job, typename After>
Tensor run_items(const std::vector<Job>& jobs, const TensorList& grads, const std::vector<int64_t>& sizes,
                 bool deferred, const After& after) {
  const std::vector<Item> items = cut(sizes);
  if (!deferred) {
    for_items(items, [&](int64_t, const Item& it) { jobs[it.job].run(jobs[it.job], it.begin, it.end); });
    after();
    return Tensor();
  }
  std::vector<double> partial(items.size());
  for_items(items, [&](int64_t i, const Item& it) { partial[i] = jobs[it.job].run(jobs[it.job], it.begin, it.end); });
  return norms_from(items, partial, grads.size());
}

// The rule a kernel call runs, named as the registry names it.
AdamMode adam_mode(const std::string& variant) {
  if (variant == "adam+cm") return kCriticalMomenta;
  if (variant == "adam+cg") return kCriticalGradients;
  TORCH_CHECK(variant == "adamomentum", "memoptim native kernel: unknown Adam variant '", variant, "'");
  return kAdaMomentum;
}

SGDMode sgd_mode(const std::string& variant) {
  if (variant == "sgd+cm") return kSGDCriticalMomenta;
  TORCH_CHECK(variant == "sgd+cg", "memoptim native kernel: unknown SGD variant '", variant, "'");
  return kSGDCriticalGradients;
}

// One Adam+CM, Adam+CG or AdaMomentum step (``variant``) over a group's tensors.
// `pending` non-empty (critical momenta only): the offer is deferred -- the pass stores the
// previous step's accepted momentum and returns the gradient norms; offer_deferred follows.
Tensor adam_step(const TensorList& params, const TensorList& grads, const TensorList& exp_avgs,
               const TensorList& exp_avg_sqs, const TensorList& max_exp_avg_sqs,
               const TensorList& steps, const TensorList& values, const TensorList& sums,
               const TensorList& keys, const TensorList& replacements, const Tensor& offered,
               double lr, double beta1, double beta2, double eps, double weight_decay,
               bool amsgrad, bool decoupled, bool maximize, double decay, const std::string& variant,
               int64_t resync_interval, const TensorList& pending) {
  const int64_t mode = adam_mode(variant);
  const Buffers bufs{values, sums, keys, replacements, offered, decay};
  const bool deferred = !pending.empty();
  TORCH_CHECK(!deferred || (bufs.on() && mode == kCriticalMomenta),
              "memoptim native kernel: deferred offers need critical momenta and a buffer");
  std::vector<AdamJob> jobs(params.size());
  std::vector<int64_t> sizes(params.size());
  std::vector<double> t(params.size());
  for (size_t i = 0; i < params.size(); ++i) {
    t[i] = next_step(steps[i]);
    AdamJob& j = jobs[i];
    j.k = AdamScalars{lr, beta1, beta2, eps, weight_decay, 0.0, 0.0, amsgrad, decoupled, maximize};
    j.k.step_size = -lr / (1.0 - std::pow(beta1, t[i]));
    j.k.sqrt_bc2 = std::sqrt(1.0 - std::pow(beta2, t[i]));
    j.settle = nullptr;
    if (deferred) {
      j.value = nullptr;
      bufs.open(i, &j.sum, &j.inv_capacity);
      j.settle = take_pending(bufs, pending, exp_avgs[i], params[i], i, t[i], resync_interval);
    } else {
      j.value = bufs.take(i, &j.sum, &j.inv_capacity);
    }
    j.p = params[i].data_ptr();
    j.g = grads[i].data_ptr();
    j.m = exp_avgs[i].data_ptr();
    j.v = exp_avg_sqs[i].data_ptr();
    j.vmax = ptr_or_null(max_exp_avg_sqs, i);
    const bool has_buf = j.sum != nullptr, accept = j.value != nullptr, settle = j.settle != nullptr;
    j.run = with_types(params[i], bufs, i, [&](auto t_tag, auto b_tag, auto a_tag) {
      return pick_adam<decltype(t_tag), decltype(b_tag), decltype(a_tag)>(mode, amsgrad, has_buf, accept,
                                                                          deferred, settle);
    });
    sizes[i] = params[i].numel();
  }
  return run_items(jobs, grads, sizes, deferred, [&] {
    for (size_t i = 0; i < params.size(); ++i) maybe_resync(bufs, i, t[i], resync_interval);
  });
}

// One SGD+CM or SGD+CG step (``variant``).  momentum_buffers is empty when momentum is 0;
// seed[i] != 0 marks a momentum buffer created (zero-filled) this step: b_1 = x_1.  `pending`:
// as for adam_step (SGD+CM with momentum only).
Tensor sgd_step(const TensorList& params, const TensorList& grads, const TensorList& momentum_buffers,
              const std::vector<int64_t>& seed, const TensorList& steps, const TensorList& values,
              const TensorList& sums, const TensorList& keys, const TensorList& replacements,
              const Tensor& offered, double lr, double momentum, double dampening,
              double weight_decay, bool maximize, double decay, const std::string& variant,
              int64_t resync_interval, const TensorList& pending) {
  const int64_t mode = sgd_mode(variant);
  const Buffers bufs{values, sums, keys, replacements, offered, decay};
  const bool deferred = !pending.empty();
  TORCH_CHECK(!deferred || (bufs.on() && mode == kSGDCriticalMomenta && !momentum_buffers.empty()),
              "memoptim native kernel: deferred offers need critical momenta, momentum and a buffer");
  const SGDScalars k{lr, momentum, dampening, weight_decay, maximize};
  std::vector<SGDJob> jobs(params.size());
  std::vector<int64_t> sizes(params.size());
  std::vector<double> t(params.size());
  for (size_t i = 0; i < params.size(); ++i) {
    t[i] = next_step(steps[i]);
    SGDJob& j = jobs[i];
    j.k = k;
    j.seed = !seed.empty() && seed[i] != 0;
    j.settle = nullptr;
    if (deferred) {
      j.value = nullptr;
      bufs.open(i, &j.sum, &j.inv_capacity);
      j.settle = take_pending(bufs, pending, momentum_buffers[i], params[i], i, t[i], resync_interval);
      // a buffer created this step holds no m_{t-1}; Python never leaves an offer pending then
      TORCH_CHECK(!(j.seed && j.settle != nullptr), "memoptim native kernel: pending offer without momentum");
    } else {
      j.value = bufs.take(i, &j.sum, &j.inv_capacity);
    }
    j.p = params[i].data_ptr();
    j.g = grads[i].data_ptr();
    j.mom = ptr_or_null(momentum_buffers, i);
    const bool has_buf = j.sum != nullptr, accept = j.value != nullptr, has_mom = j.mom != nullptr,
               settle = j.settle != nullptr;
    j.run = with_types(params[i], bufs, i, [&](auto t_tag, auto b_tag, auto a_tag) {
      return pick_sgd<decltype(t_tag), decltype(b_tag), decltype(a_tag)>(mode, has_mom, has_buf, accept,
                                                                         deferred, settle);
    });
    sizes[i] = params[i].numel();
  }
  return run_items(jobs, grads, sizes, deferred, [&] {
    for (size_t i = 0; i < params.size(); ++i) maybe_resync(bufs, i, t[i], resync_interval);
  });
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  namespace py = pybind11;
  // Every argument by keyword: the Python wrappers name each one (no positional lists of 20).
  m.def("supports", &supports, "whether the kernels handle these tensors", py::arg("params"),
        py::arg("grads"), py::arg("states"), py::arg("steps"), py::arg("values"), py::arg("sums"),
        py::arg("keys"));
  m.def("grad_norms", &grad_norms, "L2 norm of every tensor (float64)", py::arg("tensors"));
  m.def("adam_step", &adam_step, "fused Adam+CM / Adam+CG / AdaMomentum step", py::kw_only(),
        py::arg("params"), py::arg("grads"), py::arg("exp_avgs"), py::arg("exp_avg_sqs"),
        py::arg("max_exp_avg_sqs"), py::arg("steps"), py::arg("values"), py::arg("sums"),
        py::arg("keys"), py::arg("replacements"), py::arg("offered"), py::arg("lr"), py::arg("beta1"),
        py::arg("beta2"), py::arg("eps"), py::arg("weight_decay"), py::arg("amsgrad"),
        py::arg("decoupled"), py::arg("maximize"), py::arg("decay"), py::arg("variant"),
        py::arg("resync_interval"), py::arg("pending"));
  m.def("sgd_step", &sgd_step, "fused SGD+CM / SGD+CG step", py::kw_only(), py::arg("params"),
        py::arg("grads"), py::arg("momentum_buffers"), py::arg("seed"), py::arg("steps"),
        py::arg("values"), py::arg("sums"), py::arg("keys"), py::arg("replacements"),
        py::arg("offered"), py::arg("lr"), py::arg("momentum"), py::arg("dampening"),
        py::arg("weight_decay"), py::arg("maximize"), py::arg("decay"), py::arg("variant"),
        py::arg("resync_interval"), py::arg("pending"));
  m.def("offer_deferred", &offer_deferred, "the offers of a deferred step, once its keys are known",
        py::kw_only(), py::arg("keys"), py::arg("buffer_keys"), py::arg("replacements"),
        py::arg("pending"), py::arg("decay"));
}
