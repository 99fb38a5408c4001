// What every operator of this library shares.
//
// MegEngine 1.13 runs a CPU custom operator's compute on the calling thread, not on the CPU
// worker queue that runs its other kernels (upstream queues it from 1.13.2, which is not on
// PyPI), so an operator's inputs may still be being computed when it starts. Each operator of
// this library first waits for every queued kernel: mgb::CompNode::sync_all, which
// libmegengine_shared.so exports (declared here: MegEngine's wheel ships no header for it).
// -DFCOS_CPU_OPS_NO_SYNC builds without the wait, for the test that shows the early read.
#pragma once

#include "megbrain/custom/custom.h"

#include <cstddef>
#include <stdexcept>
#include <string>
#include <vector>

// A function compiled for AVX-512, AVX2 and baseline x86-64, the CPU picking its version when
// the library loads (GCC's target_clones).
#define FCOS_VECTOR_VERSIONS __attribute__((target_clones("avx512f", "avx2", "default")))

namespace mgb {
class CompNode {
public:
    static void sync_all();
};
}  // namespace mgb

namespace fcos_cpu_ops {

inline void wait_for_queued_kernels() {
#ifndef FCOS_CPU_OPS_NO_SYNC
    mgb::CompNode::sync_all();
#endif
}

// Whether ``tensor``'s elements lie in row-major order without gaps (the operators index
// them so).
inline bool contiguous(const custom::Tensor& tensor) {
    auto shape = tensor.shape();
    auto strides = tensor.stride();
    ptrdiff_t expected = 1;
    for (size_t i = shape.ndim(); i-- > 0;) {
        if (shape[i] != 1 && strides[i] != expected) return false;
        expected *= shape[i];
    }
    return true;
}

// What a compute does first: wait for MegEngine's queued kernels, then check that every
// input is contiguous (``op`` names the operator in the error).
inline void start_compute(const std::vector<custom::Tensor>& inputs, const char* op) {
    wait_for_queued_kernels();
    for (auto& tensor : inputs)
        if (!contiguous(tensor))
            throw std::runtime_error(std::string(op) + ": an input is not contiguous");
}

// Outputs on the device of the first input, all float32.
inline void inputs_device(const std::vector<custom::Device>& inputs, const custom::Param&,
                          std::vector<custom::Device>& outputs) {
    for (auto& device : outputs) device = inputs[0];
}

inline void float32_outputs(const std::vector<custom::DType>&, const custom::Param&,
                            std::vector<custom::DType>& outputs) {
    for (auto& dtype : outputs) dtype = "float32";
}

}  // namespace fcos_cpu_ops
