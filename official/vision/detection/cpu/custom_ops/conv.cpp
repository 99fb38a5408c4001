// Convolution forward and backward on oneDNN, as MegEngine 1.13 custom operators.
//
// FcosConvForward(x, weight, bias) -> y and FcosConvBackward(x, weight, dy) -> (dx, dweight,
// dbias) for NCHW float32 tensors (with the parameter bias false, the bias input is ignored,
// dbias a [1] placeholder, and the primitives have no bias: a bias gradient slowed the weight
// gradient of the 512-channel 3 x 3 convolutions ~1.5x), weights [O, C, kh, kw] or grouped [G, O/G, C/G, kh, kw] as
// MegEngine stores them. Inside, oneDNN picks its layouts (format_tag::any: blocked on AVX-512
// and AVX2) and the tensors are reordered into them and back; with precision "bf16" the
// reorders also round inputs, weights and output gradients to bfloat16, and outputs and
// gradients stay float32. Python (onednn/ops.py) wraps them in an autodiff Function.
//
// Why the pieces below exist (docs/megengine_notes.md, "oneDNN convolutions"):
// - Each compute first waits for MegEngine's queued kernels (operator_common.h).
// - Primitives are created once per shape and precision and kept (creating one takes
//   0.1-10 ms); reordered copies and scratchpads live in buffers shared by all primitives
//   (the calls are serialized), so memory grows with the largest layer, not with their count.
// - fcos_onednn_check (C, called through ctypes) creates a shape's primitives ahead of time, so
//   Python learns of a shape oneDNN refuses before a graph is traced and keeps MegEngine's
//   convolution there.
#include "megbrain/custom/custom.h"
#include "oneapi/dnnl/dnnl.hpp"
#include "oneapi/dnnl/dnnl_debug.h"
#include "operator_common.h"

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <vector>

namespace fcos_onednn {

using dnnl::memory;
using tag = dnnl::memory::format_tag;
using dt = dnnl::memory::data_type;

// Throws std::runtime_error("FcosConv: " + message) unless ``condition``: MegEngine turns it
// into a Python RuntimeError (custom_assert only logs in a release build).
void require(bool condition, const char* format, ...) {
    if (condition) return;
    char message[512];
    va_list args;
    va_start(args, format);
    std::vsnprintf(message, sizeof(message), format, args);
    va_end(args);
    throw std::runtime_error(std::string("FcosConv: ") + message);
}

dnnl::engine& cpu_engine() {
    static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
    return engine;
}

std::atomic<int> g_threads{0};  // 0: OpenMP's default

// Geometry of one convolution: the shapes of its tensors and its settings.
struct Geometry {
    memory::dim n, c, h, w, o, kh, kw, groups, oh, ow;
    memory::dim stride_h, stride_w, dilation_h, dilation_w;
    memory::dim pad_top, pad_bottom, pad_left, pad_right;
    bool bf16, bias;

    memory::dims src_dims() const { return {n, c, h, w}; }
    memory::dims dst_dims() const { return {n, o, oh, ow}; }
    memory::dims weight_dims() const {
        if (groups == 1) return {o, c, kh, kw};
        return {groups, o / groups, c / groups, kh, kw};
    }
    tag weight_tag() const { return groups == 1 ? tag::oihw : tag::goihw; }
    // oneDNN counts dilation from 0 (no gap), MegEngine from 1
    memory::dims dilates() const { return {dilation_h - 1, dilation_w - 1}; }
    memory::dims strides() const { return {stride_h, stride_w}; }
    memory::dims pad_l() const { return {pad_top, pad_left}; }
    memory::dims pad_r() const { return {pad_bottom, pad_right}; }
    dt compute_type() const { return bf16 ? dt::bf16 : dt::f32; }

    double flops() const {  // multiply-adds x 2 of the forward pass
        return 2.0 * n * o * oh * ow * (c / groups) * kh * kw;
    }

    std::string key() const {
        std::ostringstream out;
        for (auto v : {n, c, h, w, o, kh, kw, groups, stride_h, stride_w, dilation_h,
                       dilation_w, pad_top, pad_bottom, pad_left, pad_right})
            out << v << ",";
        out << (bf16 ? "bf16" : "fp32") << (bias ? ",bias" : "");
        return out.str();
    }
};

memory::dim output_side(memory::dim in, memory::dim kernel, memory::dim stride,
                        memory::dim dilation, memory::dim pad_before, memory::dim pad_after) {
    return (in + pad_before + pad_after - dilation * (kernel - 1) - 1) / stride + 1;
}

struct Settings {
    std::vector<int32_t> stride, padding, dilation;  // padding: top, bottom, left, right
    int32_t groups;
    bool bf16, bias;
};

Settings settings_of(const custom::Param& param) {
    return {param["stride"].as<std::vector<int32_t>>(),
            param["padding"].as<std::vector<int32_t>>(),
            param["dilation"].as<std::vector<int32_t>>(), param["groups"].as<int32_t>(),
            param["precision"].as<std::string>() == "bf16", param["bias"].as<bool>()};
}

Geometry make_geometry(const std::vector<size_t>& x, const std::vector<size_t>& weight,
                       const Settings& s) {
    Geometry g;
    g.groups = s.groups;
    require(x.size() == 4, "input must be NCHW, got %zu dims", x.size());
    require(weight.size() == (g.groups == 1 ? 4u : 5u),
                  "weight of %zu dims for %d groups", weight.size(), (int)g.groups);
    require(s.stride.size() == 2 && s.padding.size() == 4 && s.dilation.size() == 2,
                  "stride, padding (top, bottom, left, right), dilation");
    require(s.stride[0] > 0 && s.stride[1] > 0 && s.dilation[0] > 0 && s.dilation[1] > 0 &&
                    s.groups > 0,
            "stride, dilation and groups must be positive");
    for (auto pad : s.padding) require(pad >= 0, "padding must not be negative");
    size_t k = weight.size() - 2;
    g.n = x[0], g.c = x[1], g.h = x[2], g.w = x[3];
    g.o = g.groups == 1 ? weight[0] : weight[0] * weight[1];
    g.kh = weight[k], g.kw = weight[k + 1];
    g.stride_h = s.stride[0], g.stride_w = s.stride[1];
    g.dilation_h = s.dilation[0], g.dilation_w = s.dilation[1];
    g.pad_top = s.padding[0], g.pad_bottom = s.padding[1];
    g.pad_left = s.padding[2], g.pad_right = s.padding[3];
    g.oh = output_side(g.h, g.kh, g.stride_h, g.dilation_h, g.pad_top, g.pad_bottom);
    g.ow = output_side(g.w, g.kw, g.stride_w, g.dilation_w, g.pad_left, g.pad_right);
    g.bf16 = s.bf16;
    g.bias = s.bias;
    require(g.c % g.groups == 0 && g.c / g.groups == (memory::dim)weight[k - 1],
            "input of %d channels for weights of %d per group, %d groups", (int)g.c,
            (int)weight[k - 1], (int)g.groups);
    require(g.oh > 0 && g.ow > 0, "empty output for input %dx%d",
                  (int)g.h, (int)g.w);
    return g;
}

std::vector<size_t> dims_of(const custom::Shape& shape) {
    std::vector<size_t> dims(shape.ndim());
    for (size_t i = 0; i < dims.size(); ++i) dims[i] = shape[i];
    return dims;
}

Geometry geometry_of(const custom::Shape& x, const custom::Shape& weight,
                     const custom::Param& param) {
    return make_geometry(dims_of(x), dims_of(weight), settings_of(param));
}

// Buffers shared by all primitives, one per role, grown to the largest use; 64-byte aligned.
class Arena {
    struct Block {
        void* data = nullptr;
        size_t size = 0;
    };
    std::vector<Block> m_blocks;

public:
    void* get(size_t slot, size_t bytes) {
        if (slot >= m_blocks.size()) m_blocks.resize(slot + 1);
        Block& block = m_blocks[slot];
        if (block.size < bytes) {
            std::free(block.data);
            block.data = std::aligned_alloc(64, (bytes + 63) / 64 * 64);
            require(block.data != nullptr, "out of memory (%zu bytes)", bytes);
            block.size = bytes;
        }
        return block.data;
    }
};

Arena g_arena;

enum Slot { SRC, WEIGHTS, DST, DIFF_DST_DATA, DIFF_DST_WEIGHTS, DIFF_SRC, DIFF_WEIGHTS,
            SCRATCHPAD };

// float32 -> bfloat16 as oneDNN's reorders convert (and AVX512-BF16's vcvtneps2bf16): rounded
// to the nearest, ties to even; subnormals to a zero of their sign; NaNs stay NaNs, quiet. The
// copies below convert so on the calling thread; a test holds them to oneDNN's reorder.
inline uint16_t bf16_of(float value) {
    uint32_t bits;
    std::memcpy(&bits, &value, sizeof(bits));
    if ((bits & 0x7f800000u) == 0) return (bits >> 16) & 0x8000u;       // zero, subnormal
    if ((bits & 0x7fffffffu) > 0x7f800000u) return (bits >> 16) | 0x40u;  // NaN
    return (bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16;
}

using Floats8 = float __attribute__((vector_size(32)));
using Words8 = uint32_t __attribute__((vector_size(32)));
using Halves8 = uint16_t __attribute__((vector_size(16)));

// the same on eight values
__attribute__((always_inline)) inline Halves8 bf16_of(Floats8 values) {
    Words8 bits;
    std::memcpy(&bits, &values, sizeof(bits));
    Words8 rounded = (bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16;
    Words8 nan = (bits >> 16) | 0x40u, zero = (bits >> 16) & 0x8000u;
    Words8 result = (bits & 0x7fffffffu) > 0x7f800000u ? nan : rounded;
    result = (bits & 0x7f800000u) == 0 ? zero : result;
    return __builtin_convertvector(result, Halves8);
}

// A blocked tensor's element (float32, or bfloat16 held as uint16_t) from a float32 one.
template <typename Element>
inline Element element_of(float value);
template <>
inline float element_of<float>(float value) { return value; }
template <>
inline uint16_t element_of<uint16_t>(float value) { return bf16_of(value); }

__attribute__((always_inline)) inline void store8(float* to, Floats8 values) {
    std::memcpy(to, &values, sizeof(values));
}
__attribute__((always_inline)) inline void store8(uint16_t* to, Floats8 values) {
    Halves8 halves = bf16_of(values);
    std::memcpy(to, &halves, sizeof(halves));
}

// Copies between a plain float32 tensor and a blocked float32 layout of the same dims (into a
// bfloat16 one too), on the calling thread. oneDNN 3.2's reorders of tensors of a few KB cost
// a fixed ~0.04-0.06 ms per call in the training step (its threads woken, its transposing
// weight kernel; torch's oneDNN 3.12 takes 0.006-0.02 ms), ~750 calls per step of the demo;
// these loops copy an activation of a few KB in a few microseconds and a 64 x 64 x 3 x 3
// weight in ~35 (docs/megengine_notes.md, "oneDNN convolutions").
//
// The copy walks the blocked layout in its memory order (its outer dims by stride, then its
// inner blocks), the last block innermost: the blocked side is read or written in sequence
// and the plain side within one block's rows, which stay in cache. Each position of the walk
// moves the plain offset and the logical index of one dim by fixed steps.
class SmallReorder {
    struct Axis {
        memory::dim extent, blocked_step, plain_step, dim, dim_step;
    };
    std::vector<Axis> m_axes;  // outermost first
    std::vector<memory::dim> m_dims;
    size_t m_blocked_bytes = 0;
    bool m_padded = false;  // a dim padded to a whole block: the copy checks the rows

public:
    static constexpr memory::dim MAX_ELEMENTS = 65536;  // above: oneDNN's threaded kernels

    static bool suits(const memory::desc& plain, const memory::desc& blocked) {
        if (plain.get_data_type() != dt::f32 ||
            blocked.get_format_kind() != memory::format_kind::blocked)
            return false;
        return plain.get_size() <= MAX_ELEMENTS * sizeof(float);  // plain: no padding
    }

    SmallReorder() = default;
    explicit SmallReorder(const memory::desc& blocked) : m_dims(blocked.get_dims()) {
        const int ndims = (int)m_dims.size();
        auto strides = blocked.get_strides();
        auto padded = blocked.get_padded_dims();
        auto blocks = blocked.get_inner_blks();
        auto block_dims = blocked.get_inner_idxs();
        std::vector<memory::dim> plain_stride(ndims, 1), span(ndims, 1);
        for (int d = ndims - 2; d >= 0; --d) plain_stride[d] = plain_stride[d + 1] * m_dims[d + 1];
        for (size_t k = 0; k < blocks.size(); ++k) span[block_dims[k]] *= blocks[k];
        for (int d = 0; d < ndims; ++d)  // an outer dim steps over a whole block of itself
            m_axes.push_back({padded[d] / span[d], strides[d], span[d] * plain_stride[d], d,
                              span[d]});
        std::stable_sort(m_axes.begin(), m_axes.end(), [](const Axis& a, const Axis& b) {
            return a.blocked_step > b.blocked_step;
        });
        // inner blocks: outermost first, the last one contiguous; a dim's later blocks are
        // its finer ones (OIhw8i16o2i: input channel 2 x (8-block index) + (2-block index))
        memory::dim step = 1;
        std::vector<memory::dim> finer(ndims, 1);  // the product of d's blocks after this one
        std::vector<Axis> inner(blocks.size());
        for (int k = (int)blocks.size() - 1; k >= 0; --k) {
            memory::dim d = block_dims[k];
            inner[k] = {blocks[k], step, finer[d] * plain_stride[d], d, finer[d]};
            finer[d] *= blocks[k];
            step *= blocks[k];
        }
        m_axes.insert(m_axes.end(), inner.begin(), inner.end());
        for (int d = 0; d < ndims; ++d) m_padded = m_padded || padded[d] != m_dims[d];
        m_blocked_bytes = blocked.get_size();
    }

    // ``Element``: the blocked side's type, float, or uint16_t for bfloat16 (into it only)
    template <bool to_blocked, typename Element>
    void copy(const void* from_data, void* to_data) const {
        auto from = static_cast<const std::conditional_t<to_blocked, float, Element>*>(from_data);
        auto to = static_cast<std::conditional_t<to_blocked, Element, float>*>(to_data);
        if (to_blocked && m_padded) std::memset(to, 0, m_blocked_bytes);  // padding: zeros
        const int last = (int)m_axes.size() - 1;
        const Axis& row = m_axes[last];
        std::vector<memory::dim> index(last, 0), logical(m_dims.size(), 0);
        memory::dim blocked = 0, plain = 0;
        for (;;) {
            bool inside = true;
            for (size_t d = 0; m_padded && d < m_dims.size(); ++d)
                inside = inside && logical[d] < m_dims[d];
            if (inside) {  // the row's elements up to the end of its dim (the rest is padding)
                memory::dim count = std::min(
                        row.extent, (m_dims[row.dim] - logical[row.dim] + row.dim_step - 1) /
                                            row.dim_step);
                for (memory::dim x = 0; x < count; ++x) {
                    if constexpr (to_blocked)
                        to[blocked + x * row.blocked_step] =
                                element_of<Element>(from[plain + x * row.plain_step]);
                    else
                        to[plain + x * row.plain_step] = from[blocked + x * row.blocked_step];
                }
            }
            int a = last - 1;  // the next row: an odometer over the other axes
            for (; a >= 0; --a) {
                const Axis& axis = m_axes[a];
                blocked += axis.blocked_step, plain += axis.plain_step;
                logical[axis.dim] += axis.dim_step;
                if (++index[a] < axis.extent) break;
                index[a] = 0;
                blocked -= axis.extent * axis.blocked_step;
                plain -= axis.extent * axis.plain_step;
                logical[axis.dim] -= axis.extent * axis.dim_step;
            }
            if (a < 0) return;
        }
    }
};

// Copies between an NCHW float32 activation and oneDNN's channel-blocked layout of it
// (aBcd16b on AVX-512, aBcd8b on AVX2: blocks of B channels, each position's B values
// together; or NHWC, one block of all channels, as oneDNN's brgemm kernels take it; float32,
// or bfloat16 into it), on the calling thread, by transposing tiles of 8 channels x 8
// positions in registers. In the demo's training step (~400 such copies per step) an
// 8 x 64 x 12 x 16 one takes ~0.06 ms where oneDNN's threaded reorder took ~0.10 (its threads
// woken), an 8 x 256 x 6 x 8 one 0.07 against 0.11, an 8 x 64 x 24 x 32 one as long (~0.2);
// from cache 0.01 against 0.02 (docs/megengine_notes.md, "oneDNN convolutions"). Larger
// tensors (above MAX_ELEMENTS, MAX_NHWC_ELEMENTS for NHWC) keep oneDNN's threads.
class ChannelBlockCopy {
    memory::dim m_n = 0, m_c = 0, m_hw = 0, m_block = 0;

    // row i of ``in`` (8 floats from in + i * in_stride) becomes column i of ``out``
    template <typename Out>
    __attribute__((always_inline)) static inline void transpose8(
            const float* in, memory::dim in_stride, Out* out, memory::dim out_stride) {
        Floats8 r[8], t[8], u[8];
        for (int i = 0; i < 8; ++i) std::memcpy(&r[i], in + i * in_stride, sizeof(Floats8));
        for (int i = 0; i < 8; i += 2) {  // pairs of rows interleaved
            t[i] = __builtin_shufflevector(r[i], r[i + 1], 0, 8, 1, 9, 4, 12, 5, 13);
            t[i + 1] = __builtin_shufflevector(r[i], r[i + 1], 2, 10, 3, 11, 6, 14, 7, 15);
        }
        for (int i = 0; i < 8; i += 4) {  // then pairs of those
            u[i] = __builtin_shufflevector(t[i], t[i + 2], 0, 1, 8, 9, 4, 5, 12, 13);
            u[i + 1] = __builtin_shufflevector(t[i], t[i + 2], 2, 3, 10, 11, 6, 7, 14, 15);
            u[i + 2] = __builtin_shufflevector(t[i + 1], t[i + 3], 0, 1, 8, 9, 4, 5, 12, 13);
            u[i + 3] = __builtin_shufflevector(t[i + 1], t[i + 3], 2, 3, 10, 11, 6, 7, 14, 15);
        }
        for (int i = 0; i < 4; ++i) {  // then the halves of rows 4 apart
            Floats8 low = __builtin_shufflevector(u[i], u[i + 4], 0, 1, 2, 3, 8, 9, 10, 11);
            Floats8 high = __builtin_shufflevector(u[i], u[i + 4], 4, 5, 6, 7, 12, 13, 14, 15);
            store8(out + i * out_stride, low);
            store8(out + (i + 4) * out_stride, high);
        }
    }

    // one block of ``channels`` channels (B but in a last, padded block) at ``hw`` positions;
    // ``Element`` the blocked side's type (float, or uint16_t for bfloat16 into it); B 0: a
    // block of ``block`` channels (NHWC's)
    template <int B, bool to_blocked, typename Element>
    FCOS_VECTOR_VERSIONS static void copy_block(Element* blocked, float* plain, memory::dim hw,
                                                memory::dim channels, memory::dim block) {
        const memory::dim width = B ? B : block;
        memory::dim s = 0;
        if (channels == width)
            for (; s + 8 <= hw; s += 8)
                for (memory::dim k = 0; k < width; k += 8) {
                    if constexpr (to_blocked)
                        transpose8(plain + k * hw + s, hw, blocked + s * width + k, width);
                    else
                        transpose8(blocked + s * width + k, width, plain + k * hw + s, hw);
                }
        for (; s < hw; ++s)  // the rest one by one; a padded block's extra channels are zeros
            for (memory::dim k = 0; k < width; ++k) {
                if constexpr (to_blocked)
                    blocked[s * width + k] = element_of<Element>(
                            k < channels ? plain[k * hw + s] : 0.0f);
                else if (k < channels)
                    plain[k * hw + s] = blocked[s * width + k];
            }
    }

    // the channels of a block: B of aBcdBb (8 or 16), all of them in NHWC (a multiple of 8);
    // 0 for another layout
    static memory::dim block_of(const memory::desc& blocked) {
        if (blocked.get_format_kind() != memory::format_kind::blocked ||
            blocked.get_ndims() != 4)
            return 0;
        auto dims = blocked.get_dims(), padded = blocked.get_padded_dims();
        auto strides = blocked.get_strides();
        const int blocks = blocked.get_inner_nblks();
        memory::dim block = dims[1], hw = dims[2] * dims[3];
        if (blocks == 1 && blocked.get_inner_idxs()[0] == 1)
            block = blocked.get_inner_blks()[0];
        else if (blocks != 0)
            return 0;
        bool fits = (blocks == 0 ? block % 8 == 0 : block == 8 || block == 16) &&
                    padded[2] == dims[2] && padded[3] == dims[3] && strides[3] == block &&
                    strides[2] == dims[3] * block && strides[1] == (blocks ? hw * block : 1) &&
                    strides[0] == padded[1] * hw;
        return fits ? block : 0;
    }

public:
    static constexpr memory::dim MAX_ELEMENTS = 1 << 20;
    // NHWC's transposes span all channels: from ~200K elements on oneDNN's two threads were
    // faster (8 x 64 x 24 x 32 in and back: 0.39 against 0.17 ms; 8 x 256 x 6 x 8: 0.08
    // against 0.09; fcos_onednn_transfer_into, 2026-12-08 04:30 UTC, Zen 3 25/1)
    static constexpr memory::dim MAX_NHWC_ELEMENTS = 1 << 17;

    static bool suits(const memory::desc& plain, const memory::desc& blocked) {
        if (plain.get_data_type() != dt::f32 || block_of(blocked) == 0) return false;
        const bool nhwc = blocked.get_inner_nblks() == 0;
        return plain.get_size() <= (nhwc ? MAX_NHWC_ELEMENTS : MAX_ELEMENTS) * sizeof(float);
    }

    ChannelBlockCopy() = default;
    explicit ChannelBlockCopy(const memory::desc& blocked) {
        auto dims = blocked.get_dims();
        m_n = dims[0], m_c = dims[1], m_hw = dims[2] * dims[3];
        m_block = block_of(blocked);
    }

    // ``Element``: the blocked side's type, float, or uint16_t for bfloat16 (into it only)
    template <bool to_blocked, typename Element>
    void copy(const void* from, void* to) const {
        auto copy_block_of = m_block == 16  ? copy_block<16, to_blocked, Element>
                             : m_block == 8 ? copy_block<8, to_blocked, Element>
                                            : copy_block<0, to_blocked, Element>;
        auto blocked = static_cast<Element*>(const_cast<void*>(to_blocked ? to : from));
        auto plain = static_cast<float*>(const_cast<void*>(to_blocked ? from : to));
        const memory::dim blocks = (m_c + m_block - 1) / m_block;
        for (memory::dim n = 0; n < m_n; ++n)
            for (memory::dim b = 0; b < blocks; ++b)
                copy_block_of(blocked + (n * blocks + b) * m_hw * m_block,
                              plain + (n * m_c + b * m_block) * m_hw, m_hw,
                              std::min(m_block, m_c - b * m_block), m_block);
    }
};

// One tensor as the user holds it (plain, float32) and as a primitive wants it, with the
// reorder between the two where they differ (made once, with the primitive): on the calling
// thread for activations in channel blocks (ChannelBlockCopy) and other small tensors
// (SmallReorder), float32, or into bfloat16 (its convolutions' inputs), else oneDNN's.
struct Transfer {
    enum class Route { same, onednn, channel_blocks, small };
    memory::desc user, inner;
    Slot slot = SRC;
    Route route = Route::same;
    dnnl::reorder reorder;  // the onednn route's
    ChannelBlockCopy channel_blocks;
    SmallReorder small_reorder;

    Transfer() = default;
    Transfer(const memory::desc& user_desc, const memory::desc& inner_desc, Slot arena_slot,
             bool into_inner)
            : user(user_desc), inner(inner_desc), slot(arena_slot) {
        if (user == inner) return;
        const bool here = inner.get_data_type() == dt::f32 ||
                          (into_inner && inner.get_data_type() == dt::bf16);
        if (here && ChannelBlockCopy::suits(user, inner)) {
            route = Route::channel_blocks;
            channel_blocks = ChannelBlockCopy(inner);
        } else if (here && SmallReorder::suits(user, inner)) {
            route = Route::small;
            small_reorder = SmallReorder(inner);
        } else {
            route = Route::onednn;
            auto& engine = cpu_engine();
            reorder = into_inner ? dnnl::reorder({engine, user, engine, inner})
                                 : dnnl::reorder({engine, inner, engine, user});
        }
    }

    // copies on the calling thread (the routes other than onednn)
    template <bool to_inner>
    void copy_here(const void* from, void* to) const {
        if constexpr (to_inner)
            if (inner.get_data_type() == dt::bf16) return copy_here<true, uint16_t>(from, to);
        copy_here<to_inner, float>(from, to);
    }

    template <bool to_inner, typename Element>
    void copy_here(const void* from, void* to) const {
        if (route == Route::channel_blocks)
            channel_blocks.copy<to_inner, Element>(from, to);
        else
            small_reorder.copy<to_inner, Element>(from, to);
    }

    // the user's ``data`` as ``inner``: itself, or reordered into the arena
    memory in(void* data, dnnl::stream& stream) const {
        memory user_memory(user, cpu_engine(), data);
        if (route == Route::same) return user_memory;
        memory inner_memory(inner, cpu_engine(), g_arena.get(slot, inner.get_size()));
        if (route == Route::onednn)
            reorder.execute(stream, {{DNNL_ARG_FROM, user_memory}, {DNNL_ARG_TO, inner_memory}});
        else
            copy_here<true>(data, inner_memory.get_data_handle());
        return inner_memory;
    }

    // where a primitive writes this output: the user's ``data`` itself, or the arena
    memory out(void* data) const {
        if (route == Route::same) return memory(user, cpu_engine(), data);
        return memory(inner, cpu_engine(), g_arena.get(slot, inner.get_size()));
    }

    // the output ``result`` (from ``out``) into the user's ``data``; a copy on the calling
    // thread first waits for the stream (it reads the primitive's output)
    void back(const memory& result, void* data, dnnl::stream& stream) const {
        if (route == Route::same) return;
        if (route == Route::onednn) {
            memory user_memory(user, cpu_engine(), data);
            reorder.execute(stream, {{DNNL_ARG_FROM, result}, {DNNL_ARG_TO, user_memory}});
            return;
        }
        stream.wait();
        copy_here<false>(result.get_data_handle(), data);
    }
};

dnnl::primitive_attr scratchpad_attr() {
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    return attr;
}

// Convolutions of fewer floating-point operations run on the calling thread alone: waking
// oneDNN's second OpenMP thread costs ~0.05 ms per call inside the training step, more than
// such a convolution takes on one thread (an 8 x 64 x 1 x 1 forward: 0.05 ms on two threads,
// 0.003 on one; an 8 x 64 x 3 x 4 one 0.079 against 0.043; 8 x 64 x 6 x 8, 28 MFLOP, 0.17
// against 0.20; docs/megengine_notes.md, "oneDNN convolutions"). A rule of the shape alone, so
// a training computes the same on every run.
constexpr double SERIAL_FLOPS = 1e7;

// OpenMP's thread count for the calling thread inside a scope: 1 for a serial primitive.
class SerialScope {
    int m_previous = 0;

public:
    explicit SerialScope(bool serial) {
        if (!serial) return;
        m_previous = omp_get_max_threads();
        omp_set_num_threads(1);
    }
    ~SerialScope() {
        if (m_previous) omp_set_num_threads(m_previous);
    }
};

// The primitives of one geometry and the transfers of their tensors.
struct Primitives {
    Geometry geometry;
    bool serial;
    dnnl::convolution_forward::primitive_desc forward_pd;
    dnnl::convolution_backward_data::primitive_desc data_pd;
    dnnl::convolution_backward_weights::primitive_desc weights_pd;
    dnnl::primitive forward, backward_data, backward_weights;
    Transfer src, weights, dst;                     // forward
    Transfer data_diff_dst, data_weights, diff_src;  // input gradient
    Transfer weights_src, weights_diff_dst, diff_weights;  // weight gradient

    explicit Primitives(const Geometry& g) : geometry(g), serial(g.flops() < SERIAL_FLOPS) {
        SerialScope scope(serial);
        auto& engine = cpu_engine();
        dt inner = g.compute_type();
        auto any = [](const memory::dims& dims, dt type) {
            return memory::desc(dims, type, tag::any);
        };
        // an empty descriptor: a primitive without bias
        memory::desc bias = g.bias ? memory::desc({g.o}, dt::f32, tag::a) : memory::desc();
        auto attr = scratchpad_attr();
        forward_pd = dnnl::convolution_forward::primitive_desc(
                engine, dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct,
                any(g.src_dims(), inner), any(g.weight_dims(), inner), bias,
                any(g.dst_dims(), dt::f32), g.strides(), g.dilates(), g.pad_l(), g.pad_r(),
                attr);
        data_pd = dnnl::convolution_backward_data::primitive_desc(
                engine, dnnl::algorithm::convolution_direct, any(g.src_dims(), dt::f32),
                any(g.weight_dims(), inner), any(g.dst_dims(), inner), g.strides(),
                g.dilates(), g.pad_l(), g.pad_r(), forward_pd, attr);
        weights_pd = dnnl::convolution_backward_weights::primitive_desc(
                engine, dnnl::algorithm::convolution_direct, any(g.src_dims(), inner),
                any(g.weight_dims(), dt::f32), bias, any(g.dst_dims(), inner), g.strides(),
                g.dilates(), g.pad_l(), g.pad_r(), forward_pd, attr);
        // oneDNN's reference kernels run any shape, some 100x slower than MegEngine's
        for (const char* impl : {forward_pd.impl_info_str(), data_pd.impl_info_str(),
                                 weights_pd.impl_info_str()})
            require(std::strncmp(impl, "ref", 3) != 0,
                    "oneDNN has only its reference kernel (%s) for this convolution", impl);
        forward = dnnl::convolution_forward(forward_pd);
        backward_data = dnnl::convolution_backward_data(data_pd);
        backward_weights = dnnl::convolution_backward_weights(weights_pd);
        memory::desc user_src(g.src_dims(), dt::f32, tag::nchw);
        memory::desc user_dst(g.dst_dims(), dt::f32, tag::nchw);
        memory::desc user_weights(g.weight_dims(), dt::f32, g.weight_tag());
        src = Transfer(user_src, forward_pd.src_desc(), SRC, true);
        weights = Transfer(user_weights, forward_pd.weights_desc(), WEIGHTS, true);
        dst = Transfer(user_dst, forward_pd.dst_desc(), DST, false);
        data_diff_dst = Transfer(user_dst, data_pd.diff_dst_desc(), DIFF_DST_DATA, true);
        data_weights = Transfer(user_weights, data_pd.weights_desc(), WEIGHTS, true);
        diff_src = Transfer(user_src, data_pd.diff_src_desc(), DIFF_SRC, false);
        weights_src = Transfer(user_src, weights_pd.src_desc(), SRC, true);
        weights_diff_dst = Transfer(user_dst, weights_pd.diff_dst_desc(), DIFF_DST_WEIGHTS, true);
        diff_weights = Transfer(user_weights, weights_pd.diff_weights_desc(), DIFF_WEIGHTS,
                                false);
    }
};

std::mutex g_mutex;  // one call at a time: the arena, the cache and the stream are shared
std::map<std::string, std::unique_ptr<Primitives>> g_cache;

Primitives& primitives_of(const Geometry& g) {
    auto key = g.key();
    auto found = g_cache.find(key);
    if (found != g_cache.end()) return *found->second;
    auto made = std::unique_ptr<Primitives>(new Primitives(g));
    return *(g_cache[key] = std::move(made));
}

dnnl::stream& cpu_stream() {
    static dnnl::stream stream(cpu_engine());
    return stream;
}

memory scratchpad(const dnnl::primitive_desc_base& pd) {
    auto desc = pd.scratchpad_desc();
    return memory(desc, cpu_engine(), g_arena.get(SCRATCHPAD, desc.get_size() + 1));
}

void check_contiguous(const custom::Tensor& tensor, const char* name) {
    require(fcos_cpu_ops::contiguous(tensor), "%s is not contiguous", name);
}

void before_compute() {
    fcos_cpu_ops::wait_for_queued_kernels();
    int threads = g_threads.load();
    if (threads > 0) omp_set_num_threads(threads);  // per calling thread in OpenMP
}

template <typename F>
void guarded(const char* what, F body) {
    try {
        body();
    } catch (const dnnl::error& error) {
        require(false, "%s: oneDNN error %d: %s", what, (int)error.status, error.what());
    }
}

void forward_shape(const std::vector<custom::Shape>& inputs, const custom::Param& param,
                   std::vector<custom::Shape>& outputs) {
    auto g = geometry_of(inputs[0], inputs[1], param);
    outputs[0] = {(size_t)g.n, (size_t)g.o, (size_t)g.oh, (size_t)g.ow};
}

void forward_compute(const std::vector<custom::Tensor>& inputs, const custom::Param& param,
                     std::vector<custom::Tensor>& outputs) {
    before_compute();
    std::lock_guard<std::mutex> lock(g_mutex);
    for (size_t i = 0; i < inputs.size(); ++i) check_contiguous(inputs[i], "an input");
    guarded("forward", [&] {
        auto& p = primitives_of(geometry_of(inputs[0].shape(), inputs[1].shape(), param));
        SerialScope scope(p.serial);
        auto& stream = cpu_stream();
        void* y = outputs[0].data();
        auto dst = p.dst.out(y);
        std::unordered_map<int, memory> args{
                {DNNL_ARG_SRC, p.src.in(inputs[0].data(), stream)},
                {DNNL_ARG_WEIGHTS, p.weights.in(inputs[1].data(), stream)},
                {DNNL_ARG_DST, dst}, {DNNL_ARG_SCRATCHPAD, scratchpad(p.forward_pd)}};
        if (p.geometry.bias)
            args[DNNL_ARG_BIAS] = memory(p.forward_pd.bias_desc(), cpu_engine(),
                                         inputs[2].data());
        p.forward.execute(stream, args);
        p.dst.back(dst, y, stream);
        stream.wait();
    });
}

void backward_shape(const std::vector<custom::Shape>& inputs, const custom::Param& param,
                    std::vector<custom::Shape>& outputs) {
    // dx and dbias only where asked for ([1] placeholders otherwise); dweight like weight
    bool input_grad = param["input_grad"].as<bool>();
    outputs[0] = input_grad ? inputs[0] : custom::Shape({1});
    outputs[1] = inputs[1];
    auto g = geometry_of(inputs[0], inputs[1], param);
    outputs[2] = {g.bias ? (size_t)g.o : 1};
}

void backward_compute(const std::vector<custom::Tensor>& inputs, const custom::Param& param,
                      std::vector<custom::Tensor>& outputs) {
    before_compute();
    std::lock_guard<std::mutex> lock(g_mutex);
    for (size_t i = 0; i < inputs.size(); ++i) check_contiguous(inputs[i], "an input");
    guarded("backward", [&] {
        auto& p = primitives_of(geometry_of(inputs[0].shape(), inputs[1].shape(), param));
        SerialScope scope(p.serial);
        auto& stream = cpu_stream();
        void *x = inputs[0].data(), *w = inputs[1].data(), *dy = inputs[2].data();
        memory diff_dst;
        if (param["input_grad"].as<bool>()) {
            void* dx = outputs[0].data();
            diff_dst = p.data_diff_dst.in(dy, stream);
            auto diff_src = p.diff_src.out(dx);
            p.backward_data.execute(stream, {{DNNL_ARG_DIFF_DST, diff_dst},
                                             {DNNL_ARG_WEIGHTS, p.data_weights.in(w, stream)},
                                             {DNNL_ARG_DIFF_SRC, diff_src},
                                             {DNNL_ARG_SCRATCHPAD, scratchpad(p.data_pd)}});
            p.diff_src.back(diff_src, dx, stream);
        }
        // the output gradient as the input gradient's pass reordered it, when that layout fits
        if (!diff_dst || diff_dst.get_desc() != p.weights_diff_dst.inner)
            diff_dst = p.weights_diff_dst.in(dy, stream);
        void* dw = outputs[1].data();
        auto diff_weights = p.diff_weights.out(dw);
        std::unordered_map<int, memory> args{
                {DNNL_ARG_SRC, p.weights_src.in(x, stream)}, {DNNL_ARG_DIFF_DST, diff_dst},
                {DNNL_ARG_DIFF_WEIGHTS, diff_weights},
                {DNNL_ARG_SCRATCHPAD, scratchpad(p.weights_pd)}};
        if (p.geometry.bias)
            args[DNNL_ARG_DIFF_BIAS] = memory(p.weights_pd.diff_bias_desc(), cpu_engine(),
                                              outputs[2].data());
        p.backward_weights.execute(stream, args);
        p.diff_weights.back(diff_weights, dw, stream);
        stream.wait();
    });
}

}  // namespace fcos_onednn

#define FCOS_CONV_PARAMS                                        \
    add_param("stride", std::vector<int32_t>{1, 1})             \
            .add_param("padding", std::vector<int32_t>{0, 0, 0, 0}) \
            .add_param("dilation", std::vector<int32_t>{1, 1})  \
            .add_param("groups", (int32_t)1)                    \
            .add_param("precision", std::string("fp32"))        \
            .add_param("bias", true)

CUSTOM_OP_REG_BEGIN(FcosConvForward)
CUSTOM_OP_REG(FcosConvForward)
        .set_description("convolution forward on oneDNN: (x, weight, bias) -> y")
        .add_input("x")
        .add_input("weight")
        .add_input("bias")
        .add_output("y")
        .FCOS_CONV_PARAMS
        .set_device_infer(fcos_cpu_ops::inputs_device)
        .set_dtype_infer(fcos_cpu_ops::float32_outputs)
        .set_shape_infer(fcos_onednn::forward_shape)
        .set_compute("x86", fcos_onednn::forward_compute);
CUSTOM_OP_REG_END(FcosConvForward)

CUSTOM_OP_REG_BEGIN(FcosConvBackward)
CUSTOM_OP_REG(FcosConvBackward)
        .set_description("convolution gradients on oneDNN: (x, weight, dy) -> (dx, dw, dbias)")
        .add_input("x")
        .add_input("weight")
        .add_input("dy")
        .add_output("dx")
        .add_output("dweight")
        .add_output("dbias")
        .FCOS_CONV_PARAMS
        .add_param("input_grad", true)
        .set_device_infer(fcos_cpu_ops::inputs_device)
        .set_dtype_infer(fcos_cpu_ops::float32_outputs)
        .set_shape_infer(fcos_onednn::backward_shape)
        .set_compute("x86", fcos_onednn::backward_compute);
CUSTOM_OP_REG_END(FcosConvBackward)

// Called through ctypes from Python.
extern "C" {

// Threads oneDNN's OpenMP regions use from now on (0: OpenMP's default).
void fcos_onednn_set_threads(int threads) { fcos_onednn::g_threads.store(threads); }

// Creates (and keeps) the primitives of a convolution; returns 0, or 1 with ``message``
// (``size`` bytes) saying why oneDNN refused it.
int fcos_onednn_check(const int64_t* x_shape, const int64_t* weight_shape, int weight_ndim,
                      const int32_t* stride, const int32_t* padding, const int32_t* dilation,
                      int groups, int bf16, int bias, char* message, int size) {
    using namespace fcos_onednn;
    std::lock_guard<std::mutex> lock(g_mutex);
    try {
        Settings settings{{stride[0], stride[1]},
                          {padding[0], padding[1], padding[2], padding[3]},
                          {dilation[0], dilation[1]}, groups, bf16 != 0, bias != 0};
        std::vector<size_t> xs(x_shape, x_shape + 4), ws(weight_shape, weight_shape + weight_ndim);
        primitives_of(make_geometry(xs, ws, settings));
        return 0;
    } catch (const std::exception& error) {
        std::snprintf(message, size, "%s", error.what());
        return 1;
    }
}

// Primitive sets created so far (one per convolution shape, precision and bias).
int fcos_onednn_primitive_count() {
    std::lock_guard<std::mutex> lock(fcos_onednn::g_mutex);
    return (int)fcos_onednn::g_cache.size();
}

// For the tests: ``plain`` (float32, row-major, ``ndims`` dims ``dims``) into oneDNN's layout
// named ``layout`` (a format tag's name, e.g. "aBcd16b") of float32 or bfloat16 (``bf16``),
// written to ``out`` (room for ``*size`` bytes; ``*size`` becomes the layout's size), as a
// convolution's transfer into a primitive's input does it (``onednn`` 0) or by oneDNN's
// reorder (1); then, for float32 and a ``back`` not NULL, ``out`` back into ``back`` as an
// output's transfer does it. Returns the route taken ("same", "onednn", "channel_blocks" or
// "small"), or "" for an unknown layout or too little room.
const char* fcos_onednn_transfer_into(const float* plain, const int64_t* dims, int ndims,
                                      const char* layout, int bf16, int onednn, void* out,
                                      int64_t* size, float* back) {
    using namespace fcos_onednn;
    static const char* const route_names[] = {"same", "onednn", "channel_blocks", "small"};
    std::lock_guard<std::mutex> lock(g_mutex);
    int found = 0;
    for (int t = 1; t < dnnl_format_tag_last && !found; ++t)
        if (std::strcmp(dnnl_fmt_tag2str((dnnl_format_tag_t)t), layout) == 0) found = t;
    if (!found || ndims < 1) return "";
    try {
        memory::dims shape(dims, dims + ndims), strides(ndims, 1);
        for (int d = ndims - 2; d >= 0; --d) strides[d] = strides[d + 1] * shape[d + 1];
        memory::desc user(shape, dt::f32, strides);
        memory::desc inner(shape, bf16 ? dt::bf16 : dt::f32, (tag)found);
        if ((int64_t)inner.get_size() > *size) return "";
        *size = (int64_t)inner.get_size();
        auto& stream = cpu_stream();
        memory user_memory(user, cpu_engine(), const_cast<float*>(plain));
        memory target(inner, cpu_engine(), out);
        if (onednn) {
            dnnl::reorder(user_memory, target).execute(stream, user_memory, target);
            stream.wait();
            if (back && !bf16) {
                memory back_memory(user, cpu_engine(), back);
                dnnl::reorder(target, back_memory).execute(stream, target, back_memory);
                stream.wait();
            }
            return route_names[(int)Transfer::Route::onednn];
        }
        Transfer transfer(user, inner, SRC, true);
        memory result = transfer.in(const_cast<float*>(plain), stream);
        stream.wait();
        std::memcpy(out, result.get_data_handle(), *size);
        if (back && !bf16) {
            Transfer output(user, inner, DST, false);
            if (output.route == Transfer::Route::same) std::memcpy(back, out, *size);
            output.back(target, back, stream);
            stream.wait();
        }
        return route_names[(int)transfer.route];
    } catch (const dnnl::error&) {
        return "";
    }
}

// The instruction set oneDNN's kernels run here, e.g. "avx512_core_bf16".
const char* fcos_onednn_isa() {
    switch (dnnl::get_effective_cpu_isa()) {
        case dnnl::cpu_isa::sse41: return "sse41";
        case dnnl::cpu_isa::avx: return "avx";
        case dnnl::cpu_isa::avx2: return "avx2";
        case dnnl::cpu_isa::avx2_vnni: return "avx2_vnni";
        case dnnl::cpu_isa::avx512_core: return "avx512_core";
        case dnnl::cpu_isa::avx512_core_vnni: return "avx512_core_vnni";
        case dnnl::cpu_isa::avx512_core_bf16: return "avx512_core_bf16";
        case dnnl::cpu_isa::avx512_core_fp16: return "avx512_core_fp16";
        case dnnl::cpu_isa::avx512_core_amx: return "avx512_core_amx";
        default: return "other";
    }
}
}
