// Training-mode batch normalization as two MegEngine 1.13 custom operators.
//
// FcosBatchNormForward(x, weight, bias) -> (y, mean, var) and
// FcosBatchNormBackward(x, weight, mean, var, dy) -> (dx, dweight, dbias) for NCHW float32
// x, per-channel weight and bias of C elements (any shape), mean and var [C] (the batch's,
// var biased). The same formulas as cpu/batch_norm.py, centred first (x_hat = (x - mean) *
// inv_std, inv_std = 1 / sqrt(var + eps)), the sums in double: cpu/batch_norm.py's reductions
// and elementwise operators passed over each activation ~10 times, ~16 ms of the demo's
// 260 ms step; these loops pass over it three times forward and twice backward, one channel
// per OpenMP iteration.
#include "megbrain/custom/custom.h"
#include "operator_common.h"

#include <cmath>
#include <stdexcept>
#include <vector>

namespace fcos_batch_norm {

struct Layout {
    long n, c, hw;
    long count() const { return n * hw; }
    long at(long image, long channel) const { return (image * c + channel) * hw; }
};

Layout layout_of(const custom::Shape& x) {
    if (x.ndim() != 4) throw std::runtime_error("FcosBatchNorm: x must be NCHW");
    return {(long)x[0], (long)x[1], (long)(x[2] * x[3])};
}

// What both computes do first: wait for MegEngine's queued kernels, check the inputs; x's
// layout.
Layout started(const std::vector<custom::Tensor>& inputs) {
    fcos_cpu_ops::start_compute(inputs, "FcosBatchNorm");
    return layout_of(inputs[0].shape());
}

// Both operators' outputs: one like x (y, dx), two of one value per channel (mean and var,
// dweight and dbias).
void output_shapes(const std::vector<custom::Shape>& inputs, const custom::Param&,
                   std::vector<custom::Shape>& outputs) {
    Layout x = layout_of(inputs[0]);
    outputs[0] = inputs[0];
    outputs[1] = outputs[2] = custom::Shape({(size_t)x.c});
}

void forward_compute(const std::vector<custom::Tensor>& inputs, const custom::Param& param,
                     std::vector<custom::Tensor>& outputs) {
    const Layout shape = started(inputs);
    const float eps = param["eps"].as<float>();
    const float *x = inputs[0].data<float>(), *weight = inputs[1].data<float>();
    const float* bias = inputs[2].data<float>();
    float *y = outputs[0].data<float>(), *means = outputs[1].data<float>();
    float* vars = outputs[2].data<float>();
#pragma omp parallel for schedule(dynamic)
    for (long c = 0; c < shape.c; ++c) {
        double sum = 0;
        for (long n = 0; n < shape.n; ++n) {
            const float* plane = x + shape.at(n, c);
#pragma omp simd reduction(+ : sum)
            for (long i = 0; i < shape.hw; ++i) sum += plane[i];
        }
        const float mean = (float)(sum / shape.count());
        double squares = 0;
        for (long n = 0; n < shape.n; ++n) {
            const float* plane = x + shape.at(n, c);
#pragma omp simd reduction(+ : squares)
            for (long i = 0; i < shape.hw; ++i)
                squares += (double)(plane[i] - mean) * (plane[i] - mean);
        }
        const float var = (float)(squares / shape.count());
        const float inv_std = 1.f / std::sqrt(var + eps), w = weight[c], b = bias[c];
        for (long n = 0; n < shape.n; ++n) {
            const float* plane = x + shape.at(n, c);
            float* out = y + shape.at(n, c);
#pragma omp simd
            for (long i = 0; i < shape.hw; ++i) out[i] = (plane[i] - mean) * inv_std * w + b;
        }
        means[c] = mean;
        vars[c] = var;
    }
}

void backward_compute(const std::vector<custom::Tensor>& inputs, const custom::Param& param,
                      std::vector<custom::Tensor>& outputs) {
    const Layout shape = started(inputs);
    const float eps = param["eps"].as<float>();
    const float *x = inputs[0].data<float>(), *weight = inputs[1].data<float>();
    const float *means = inputs[2].data<float>(), *vars = inputs[3].data<float>();
    const float* dy = inputs[4].data<float>();
    float *dx = outputs[0].data<float>(), *dweight = outputs[1].data<float>();
    float* dbias = outputs[2].data<float>();
#pragma omp parallel for schedule(dynamic)
    for (long c = 0; c < shape.c; ++c) {
        const float mean = means[c], inv_std = 1.f / std::sqrt(vars[c] + eps);
        double grad_sum = 0, grad_dot = 0;  // sums of dy and of dy * x_hat
        for (long n = 0; n < shape.n; ++n) {
            const float *plane = x + shape.at(n, c), *grad = dy + shape.at(n, c);
#pragma omp simd reduction(+ : grad_sum, grad_dot)
            for (long i = 0; i < shape.hw; ++i) {
                grad_sum += grad[i];
                grad_dot += (double)grad[i] * ((plane[i] - mean) * inv_std);
            }
        }
        const float bias_grad = (float)grad_sum, weight_grad = (float)grad_dot;
        const float scale = weight[c] * inv_std, count = (float)shape.count();
        for (long n = 0; n < shape.n; ++n) {
            const float *plane = x + shape.at(n, c), *grad = dy + shape.at(n, c);
            float* out = dx + shape.at(n, c);
#pragma omp simd
            for (long i = 0; i < shape.hw; ++i) {
                const float normalized = (plane[i] - mean) * inv_std;
                out[i] = scale * (grad[i] - (bias_grad + normalized * weight_grad) / count);
            }
        }
        dweight[c] = weight_grad;
        dbias[c] = bias_grad;
    }
}

}  // namespace fcos_batch_norm

CUSTOM_OP_REG_BEGIN(FcosBatchNormForward)
CUSTOM_OP_REG(FcosBatchNormForward)
        .set_description("training-mode batch norm: (x, weight, bias) -> (y, mean, var)")
        .add_input("x")
        .add_input("weight")
        .add_input("bias")
        .add_output("y")
        .add_output("mean")
        .add_output("var")
        .add_param("eps", 1e-5f)
        .set_device_infer(fcos_cpu_ops::inputs_device)
        .set_dtype_infer(fcos_cpu_ops::float32_outputs)
        .set_shape_infer(fcos_batch_norm::output_shapes)
        .set_compute("x86", fcos_batch_norm::forward_compute);
CUSTOM_OP_REG_END(FcosBatchNormForward)

CUSTOM_OP_REG_BEGIN(FcosBatchNormBackward)
CUSTOM_OP_REG(FcosBatchNormBackward)
        .set_description("batch norm's gradients: (x, weight, mean, var, dy) -> (dx, dw, dbias)")
        .add_input("x")
        .add_input("weight")
        .add_input("mean")
        .add_input("var")
        .add_input("dy")
        .add_output("dx")
        .add_output("dweight")
        .add_output("dbias")
        .add_param("eps", 1e-5f)
        .set_device_infer(fcos_cpu_ops::inputs_device)
        .set_dtype_infer(fcos_cpu_ops::float32_outputs)
        .set_shape_infer(fcos_batch_norm::output_shapes)
        .set_compute("x86", fcos_batch_norm::backward_compute);
CUSTOM_OP_REG_END(FcosBatchNormBackward)
