// Group normalization (the head's) as two MegEngine 1.13 custom operators.
//
// FcosGroupNormForward(x, weight, bias) -> (y, mean, var) and
// FcosGroupNormBackward(x, weight, mean, var, dy) -> (dx, dweight, dbias) for NCHW float32 x,
// per-channel weight and bias of C elements, mean and var [N * groups] (each image's group's,
// var biased), with the formulas of batch_norm.cpp over a group's channels of one image:
// x_hat = (x - mean) * inv_std, y = x_hat * weight + bias, the sums in double. MegEngine's
// CPU kernels took ~0.1 ms per call whatever the size, ~7.6 ms of the demo's training step for
// the head's 80 calls (AMD EPYC Zen 3, docs/megengine_notes.md "Where a training step's time
// goes"), on inputs of 512 to 98K elements.
#include "megbrain/custom/custom.h"
#include "operator_common.h"

#include <cmath>
#include <stdexcept>
#include <vector>

namespace fcos_group_norm {

// Below this many elements a call runs on the calling thread: waking OpenMP's second thread
// costs ~0.05 ms, more than such a call's work.
constexpr long PARALLEL_ELEMENTS = 32768;

struct Layout {
    long n, c, hw, groups;
    long group_channels() const { return c / groups; }
    long count() const { return group_channels() * hw; }  // elements of one image's group
    long at(long image, long group) const { return (image * c + group * group_channels()) * hw; }
};

Layout layout_of(const custom::Shape& x, const custom::Param& param) {
    const long groups = param["groups"].as<int32_t>();
    if (x.ndim() != 4) throw std::runtime_error("FcosGroupNorm: x must be NCHW");
    if (groups < 1 || (long)x[1] % groups != 0)
        throw std::runtime_error("FcosGroupNorm: the channels must split into the groups");
    return {(long)x[0], (long)x[1], (long)(x[2] * x[3]), groups};
}

Layout started(const std::vector<custom::Tensor>& inputs, const custom::Param& param) {
    fcos_cpu_ops::start_compute(inputs, "FcosGroupNorm");
    return layout_of(inputs[0].shape(), param);
}

void forward_shapes(const std::vector<custom::Shape>& inputs, const custom::Param& param,
                    std::vector<custom::Shape>& outputs) {
    Layout x = layout_of(inputs[0], param);
    outputs[0] = inputs[0];
    outputs[1] = outputs[2] = custom::Shape({(size_t)(x.n * x.groups)});
}

void backward_shapes(const std::vector<custom::Shape>& inputs, const custom::Param& param,
                     std::vector<custom::Shape>& outputs) {
    Layout x = layout_of(inputs[0], param);
    outputs[0] = inputs[0];
    outputs[1] = outputs[2] = custom::Shape({(size_t)x.c});
}

void forward_compute(const std::vector<custom::Tensor>& inputs, const custom::Param& param,
                     std::vector<custom::Tensor>& outputs) {
    const Layout shape = started(inputs, param);
    const float eps = param["eps"].as<float>();
    const float *x = inputs[0].data<float>(), *weight = inputs[1].data<float>();
    const float* bias = inputs[2].data<float>();
    float *y = outputs[0].data<float>(), *means = outputs[1].data<float>();
    float* vars = outputs[2].data<float>();
    const long tasks = shape.n * shape.groups, count = shape.count();
#pragma omp parallel for schedule(static) if (tasks * count >= PARALLEL_ELEMENTS)
    for (long task = 0; task < tasks; ++task) {
        const long image = task / shape.groups, group = task % shape.groups;
        const float* in = x + shape.at(image, group);
        double sum = 0;
#pragma omp simd reduction(+ : sum)
        for (long i = 0; i < count; ++i) sum += in[i];
        const float mean = (float)(sum / count);
        double squares = 0;
#pragma omp simd reduction(+ : squares)
        for (long i = 0; i < count; ++i) squares += (double)(in[i] - mean) * (in[i] - mean);
        const float var = (float)(squares / count), inv_std = 1.f / std::sqrt(var + eps);
        float* out = y + shape.at(image, group);
        for (long k = 0; k < shape.group_channels(); ++k) {
            const long channel = group * shape.group_channels() + k;
            const float w = weight[channel], b = bias[channel];
            const float* plane = in + k * shape.hw;
            float* out_plane = out + k * shape.hw;
#pragma omp simd
            for (long i = 0; i < shape.hw; ++i)
                out_plane[i] = (plane[i] - mean) * inv_std * w + b;
        }
        means[task] = mean;
        vars[task] = var;
    }
}

void backward_compute(const std::vector<custom::Tensor>& inputs, const custom::Param& param,
                      std::vector<custom::Tensor>& outputs) {
    const Layout shape = started(inputs, param);
    const float eps = param["eps"].as<float>();
    const float *x = inputs[0].data<float>(), *weight = inputs[1].data<float>();
    const float *means = inputs[2].data<float>(), *vars = inputs[3].data<float>();
    const float* dy = inputs[4].data<float>();
    float *dx = outputs[0].data<float>(), *dweight = outputs[1].data<float>();
    float* dbias = outputs[2].data<float>();
    // each image's sums of dy and dy * x_hat per channel, added over the images at the end
    std::vector<double> grad_sums(shape.n * shape.c), grad_dots(shape.n * shape.c);
    const long tasks = shape.n * shape.groups, count = shape.count();
#pragma omp parallel for schedule(static) if (tasks * count >= PARALLEL_ELEMENTS)
    for (long task = 0; task < tasks; ++task) {
        const long image = task / shape.groups, group = task % shape.groups;
        const float mean = means[task], inv_std = 1.f / std::sqrt(vars[task] + eps);
        const long offset = shape.at(image, group);
        double scaled_sum = 0, scaled_dot = 0;  // sums of dy * weight and of that * x_hat
        for (long k = 0; k < shape.group_channels(); ++k) {
            const long channel = group * shape.group_channels() + k;
            const float *plane = x + offset + k * shape.hw, *grad = dy + offset + k * shape.hw;
            double grad_sum = 0, grad_dot = 0;
#pragma omp simd reduction(+ : grad_sum, grad_dot)
            for (long i = 0; i < shape.hw; ++i) {
                grad_sum += grad[i];
                grad_dot += (double)grad[i] * ((plane[i] - mean) * inv_std);
            }
            grad_sums[image * shape.c + channel] = grad_sum;
            grad_dots[image * shape.c + channel] = grad_dot;
            scaled_sum += grad_sum * weight[channel];
            scaled_dot += grad_dot * weight[channel];
        }
        const float mean_scaled = (float)(scaled_sum / count);
        const float mean_scaled_dot = (float)(scaled_dot / count);
        for (long k = 0; k < shape.group_channels(); ++k) {
            const long channel = group * shape.group_channels() + k;
            const float w = weight[channel];
            const float *plane = x + offset + k * shape.hw, *grad = dy + offset + k * shape.hw;
            float* out = dx + offset + k * shape.hw;
#pragma omp simd
            for (long i = 0; i < shape.hw; ++i) {
                const float normalized = (plane[i] - mean) * inv_std;
                out[i] = inv_std * (grad[i] * w - mean_scaled - normalized * mean_scaled_dot);
            }
        }
    }
    for (long channel = 0; channel < shape.c; ++channel) {
        double grad_sum = 0, grad_dot = 0;
        for (long image = 0; image < shape.n; ++image) {
            grad_sum += grad_sums[image * shape.c + channel];
            grad_dot += grad_dots[image * shape.c + channel];
        }
        dbias[channel] = (float)grad_sum;
        dweight[channel] = (float)grad_dot;
    }
}

}  // namespace fcos_group_norm

CUSTOM_OP_REG_BEGIN(FcosGroupNormForward)
CUSTOM_OP_REG(FcosGroupNormForward)
        .set_description("group norm: (x, weight, bias) -> (y, mean, var) per image and group")
        .add_input("x")
        .add_input("weight")
        .add_input("bias")
        .add_output("y")
        .add_output("mean")
        .add_output("var")
        .add_param("groups", (int32_t)32)
        .add_param("eps", 1e-5f)
        .set_device_infer(fcos_cpu_ops::inputs_device)
        .set_dtype_infer(fcos_cpu_ops::float32_outputs)
        .set_shape_infer(fcos_group_norm::forward_shapes)
        .set_compute("x86", fcos_group_norm::forward_compute);
CUSTOM_OP_REG_END(FcosGroupNormForward)

CUSTOM_OP_REG_BEGIN(FcosGroupNormBackward)
CUSTOM_OP_REG(FcosGroupNormBackward)
        .set_description("group norm's gradients: (x, weight, mean, var, dy) -> (dx, dw, dbias)")
        .add_input("x")
        .add_input("weight")
        .add_input("mean")
        .add_input("var")
        .add_input("dy")
        .add_output("dx")
        .add_output("dweight")
        .add_output("dbias")
        .add_param("groups", (int32_t)32)
        .add_param("eps", 1e-5f)
        .set_device_infer(fcos_cpu_ops::inputs_device)
        .set_dtype_infer(fcos_cpu_ops::float32_outputs)
        .set_shape_infer(fcos_group_norm::backward_shapes)
        .set_compute("x86", fcos_group_norm::backward_compute);
CUSTOM_OP_REG_END(FcosGroupNormBackward)
