// MegEngine 1.13 runs a CPU custom operator's compute on the calling thread, not on the CPU
// worker queue that runs its other kernels (upstream queues it from 1.13.2, which is not on
// PyPI), so an operator's inputs may still be being computed when it starts. Each operator of
// this library first waits for every queued kernel: mgb::CompNode::sync_all, which
// libmegengine_shared.so exports (declared here: MegEngine's wheel ships no header for it).
// -DFCOS_CPU_OPS_NO_SYNC builds without the wait, for the test that shows the early read.
#pragma once

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

}  // namespace fcos_cpu_ops
