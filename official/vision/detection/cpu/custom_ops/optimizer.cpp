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
    const float eps = param["eps"].as<float>(), decay = param["weight_decay"].as<float>();
    // as MegEngine computes them, between float32 scalars
    const float new_step = step + 1.f;
    const float gain1 = 1.f - beta1, gain2 = 1.f - beta2;
    const float correction1 = 1.f - std::pow(beta1, new_step);
    const float correction2 = 1.f - std::pow(beta2, new_step);
    const float* p = inputs[0].data<float>();
    const float* g = inputs[1].data<float>();
    const float* m = inputs[2].data<float>();
    const float* v = inputs[3].data<float>();
    float* new_p = outputs[0].data<float>();
    float* new_m = outputs[1].data<float>();
    float* new_v = outputs[2].data<float>();
    const long size = (long)inputs[0].size();
#pragma omp parallel for schedule(static) if (size > 65536)
    for (long i = 0; i < size; ++i) {
        float mean = m[i] * beta1 + g[i] * gain1;
        float square = v[i] * beta2 + gain2 * (g[i] * g[i]);
        float delta = (mean / correction1) / (std::sqrt(square / correction2) + eps);
        if (decay != 0.f) delta += p[i] * decay;
        new_p[i] = p[i] - lr * delta;
        new_m[i] = mean;
        new_v[i] = square;
    }
    *outputs[3].data<float>() = new_step;
}

void sgd_compute(const std::vector<custom::Tensor>& inputs, const custom::Param& param,
                 std::vector<custom::Tensor>& outputs) {
    fcos_cpu_ops::wait_for_queued_kernels();
    const float lr = scalar(inputs[3]);
    if (scalar(inputs[4]) == 0.f) {  // not finite: param and buffer stay
        copy(inputs[0], outputs[0]);
        copy(inputs[2], outputs[1]);
        return;
    }
    const float momentum = param["momentum"].as<float>();
    const float decay = param["weight_decay"].as<float>();
    const float* p = inputs[0].data<float>();
    const float* g = inputs[1].data<float>();
    const float* buffer = inputs[2].data<float>();
    float* new_p = outputs[0].data<float>();
    float* new_buffer = outputs[1].data<float>();
    const long size = (long)inputs[0].size();
#pragma omp parallel for schedule(static) if (size > 65536)
    for (long i = 0; i < size; ++i) {
        float grad = decay != 0.f ? g[i] + p[i] * decay : g[i];
        float velocity = buffer[i] * momentum + grad;
        new_p[i] = p[i] - lr * velocity;
        new_buffer[i] = velocity;
    }
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
