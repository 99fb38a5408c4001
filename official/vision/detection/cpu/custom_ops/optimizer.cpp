// The optimizers' updates of one parameter as single passes, MegEngine 1.13 custom operators.
//
// The traced CPU step (cpu/traced_step.py) updated each parameter with MegEngine's elementwise
// operators, each a pass over the parameter's memory: AdamW took ~15 passes, ~100 ms per step
// of the demo's ResNet-18 FCOS on two cores, SGD ~5. These operators read the parameter, its
// gradient and its state once and write the new values, computing what
// megengine.optimizer.AdamW and SGD compute, in the same float32 operations:
//
// FcosAdamWUpdate(param, grad, exp_avg, exp_avg_sq, step, lr, finite)
//     -> (param, exp_avg, exp_avg_sq, step)
// FcosSGDUpdate(param, grad, momentum_buffer, lr, finite) -> (param, momentum_buffer)
//
// step, lr and finite are one-element float32 tensors; where finite is 0 (a NaN/Inf loss) the
// outputs are the inputs, NaN-safe. Like the convolutions they wait for MegEngine's queued
// kernels first (operator_common.h).
#include "megbrain/custom/custom.h"
#include "operator_common.h"

#include <cmath>
#include <cstring>
#include <vector>

namespace fcos_optimizer {

float scalar(const custom::Tensor& tensor) { return *tensor.data<float>(); }

void copy(const custom::Tensor& from, custom::Tensor& to) {
    std::memcpy(to.data(), from.data(), from.size() * sizeof(float));
}

// The loops below are vectorized (omp simd: GCC left them scalar otherwise) and compiled for
// AVX-512, AVX2 and baseline x86-64 (FCOS_VECTOR_VERSIONS); no FMA contraction (the build's
// -ffp-contract=off), so each version rounds as MegEngine's elementwise operators do. Scalar
// SSE code took 35 ms of the demo's 280 ms step for AdamW (docs/megengine_notes.md, "Where a
// training step's time goes").

struct AdamWScalars {
    float beta1, beta2, gain1, gain2, correction1, correction2, eps, decay, lr;
};

template <bool decay>
FCOS_VECTOR_VERSIONS void adamw_loop(long size, const AdamWScalars& k, const float* p,
                                     const float* g, const float* m, const float* v,
                                     float* new_p, float* new_m, float* new_v) {
#pragma omp parallel for simd schedule(static) if (size > 65536)
    for (long i = 0; i < size; ++i) {
        float mean = m[i] * k.beta1 + g[i] * k.gain1;
        float square = v[i] * k.beta2 + k.gain2 * (g[i] * g[i]);
        float delta = (mean / k.correction1) / (std::sqrt(square / k.correction2) + k.eps);
        if (decay) delta += p[i] * k.decay;
        new_p[i] = p[i] - k.lr * delta;
        new_m[i] = mean;
        new_v[i] = square;
    }
}

void adamw_compute(const std::vector<custom::Tensor>& inputs, const custom::Param& param,
                   std::vector<custom::Tensor>& outputs) {
    fcos_cpu_ops::wait_for_queued_kernels();
    const float step = scalar(inputs[4]), lr = scalar(inputs[5]);
    if (scalar(inputs[6]) == 0.f) {  // not finite: param, moments and step stay
        const size_t kept[] = {0, 2, 3, 4};
        for (size_t i = 0; i < 4; ++i) copy(inputs[kept[i]], outputs[i]);
        return;
    }
    const float beta1 = param["beta1"].as<float>(), beta2 = param["beta2"].as<float>();
    // as MegEngine computes them, between float32 scalars
    const float new_step = step + 1.f;
    const AdamWScalars k{beta1, beta2, 1.f - beta1, 1.f - beta2,
                         1.f - std::pow(beta1, new_step), 1.f - std::pow(beta2, new_step),
                         param["eps"].as<float>(), param["weight_decay"].as<float>(), lr};
    auto loop = k.decay != 0.f ? adamw_loop<true> : adamw_loop<false>;
    loop((long)inputs[0].size(), k, inputs[0].data<float>(), inputs[1].data<float>(),
         inputs[2].data<float>(), inputs[3].data<float>(), outputs[0].data<float>(),
         outputs[1].data<float>(), outputs[2].data<float>());
    *outputs[3].data<float>() = new_step;
}

FCOS_VECTOR_VERSIONS void sgd_loop(long size, float momentum, float decay, float lr,
                                   const float* p, const float* g, const float* buffer,
                                   float* new_p, float* new_buffer) {
#pragma omp parallel for simd schedule(static) if (size > 65536)
    for (long i = 0; i < size; ++i) {
        float grad = decay != 0.f ? g[i] + p[i] * decay : g[i];
        float velocity = buffer[i] * momentum + grad;
        new_p[i] = p[i] - lr * velocity;
        new_buffer[i] = velocity;
    }
}

void sgd_compute(const std::vector<custom::Tensor>& inputs, const custom::Param& param,
                 std::vector<custom::Tensor>& outputs) {
    fcos_cpu_ops::wait_for_queued_kernels();
    if (scalar(inputs[4]) == 0.f) {  // not finite: param and buffer stay
        copy(inputs[0], outputs[0]);
        copy(inputs[2], outputs[1]);
        return;
    }
    sgd_loop((long)inputs[0].size(), param["momentum"].as<float>(),
             param["weight_decay"].as<float>(), scalar(inputs[3]), inputs[0].data<float>(),
             inputs[1].data<float>(), inputs[2].data<float>(), outputs[0].data<float>(),
             outputs[1].data<float>());
}

void sgd_shapes(const std::vector<custom::Shape>& inputs, const custom::Param&,
                std::vector<custom::Shape>& outputs) {
    outputs[0] = inputs[0];
    outputs[1] = inputs[2];
}

void adamw_shapes(const std::vector<custom::Shape>& inputs, const custom::Param&,
                  std::vector<custom::Shape>& outputs) {
    outputs[0] = inputs[0];
    outputs[1] = inputs[2];
    outputs[2] = inputs[3];
    outputs[3] = inputs[4];
}

}  // namespace fcos_optimizer

CUSTOM_OP_REG_BEGIN(FcosAdamWUpdate)
CUSTOM_OP_REG(FcosAdamWUpdate)
        .set_description("AdamW's update of one parameter in one pass")
        .add_input("param")
        .add_input("grad")
        .add_input("exp_avg")
        .add_input("exp_avg_sq")
        .add_input("step")
        .add_input("lr")
        .add_input("finite")
        .add_output("new_param")
        .add_output("new_exp_avg")
        .add_output("new_exp_avg_sq")
        .add_output("new_step")
        .add_param("beta1", 0.9f)
        .add_param("beta2", 0.999f)
        .add_param("eps", 1e-8f)
        .add_param("weight_decay", 0.f)
        .set_device_infer(fcos_cpu_ops::inputs_device)
        .set_dtype_infer(fcos_cpu_ops::float32_outputs)
        .set_shape_infer(fcos_optimizer::adamw_shapes)
        .set_compute("x86", fcos_optimizer::adamw_compute);
CUSTOM_OP_REG_END(FcosAdamWUpdate)

CUSTOM_OP_REG_BEGIN(FcosSGDUpdate)
CUSTOM_OP_REG(FcosSGDUpdate)
        .set_description("momentum SGD's update of one parameter in one pass")
        .add_input("param")
        .add_input("grad")
        .add_input("momentum_buffer")
        .add_input("lr")
        .add_input("finite")
        .add_output("new_param")
        .add_output("new_momentum_buffer")
        .add_param("momentum", 0.9f)
        .add_param("weight_decay", 0.f)
        .set_device_infer(fcos_cpu_ops::inputs_device)
        .set_dtype_infer(fcos_cpu_ops::float32_outputs)
        .set_shape_infer(fcos_optimizer::sgd_shapes)
        .set_compute("x86", fcos_optimizer::sgd_compute);
CUSTOM_OP_REG_END(FcosSGDUpdate)
