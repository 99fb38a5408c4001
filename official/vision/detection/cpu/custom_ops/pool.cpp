// Max pooling's input gradient, a MegEngine 1.13 custom operator.
//
// FcosMaxPoolBackward(x, y, dy) -> dx for NCHW float32 tensors, y = max_pool(x) with the
// operator's kernel, stride and padding (zero-based; padding never holds the maximum). As
// MegEngine's kernel, every input equal to its window's maximum receives the window's
// output gradient, so ties (the zeros a ReLU leaves) each get it. MegEngine's CPU kernel took
// 8.4 ms of the demo's 280 ms training step for the stem's [8, 64, 48, 64] input
// (docs/megengine_notes.md, "Where a training step's time goes"); this loop, over the
// channels' planes on OpenMP's threads, took 3.3-3.8 ms in the same profile.
#include "megbrain/custom/custom.h"
#include "operator_common.h"

#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

namespace fcos_pool {

struct Window {
    long kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w;
};

Window window_of(const custom::Param& param) {
    auto kernel = param["kernel"].as<std::vector<int32_t>>();
    auto stride = param["stride"].as<std::vector<int32_t>>();
    auto padding = param["padding"].as<std::vector<int32_t>>();
    if (kernel.size() != 2 || stride.size() != 2 || padding.size() != 2 || kernel[0] < 1 ||
        kernel[1] < 1 || stride[0] < 1 || stride[1] < 1 || padding[0] < 0 || padding[1] < 0)
        throw std::runtime_error("FcosMaxPoolBackward: kernel, stride, padding: two each, "
                                 "positive (padding not negative)");
    return {kernel[0], kernel[1], stride[0], stride[1], padding[0], padding[1]};
}

void backward_shape(const std::vector<custom::Shape>& inputs, const custom::Param& param,
                    std::vector<custom::Shape>& outputs) {
    window_of(param);
    if (inputs[0].ndim() != 4 || inputs[1].ndim() != 4 || inputs[2].ndim() != 4 ||
        inputs[0][0] != inputs[1][0] || inputs[0][1] != inputs[1][1])
        throw std::runtime_error("FcosMaxPoolBackward: x, y and dy must be NCHW, y of x's N, C");
    outputs[0] = inputs[0];
}

void backward_compute(const std::vector<custom::Tensor>& inputs, const custom::Param& param,
                      std::vector<custom::Tensor>& outputs) {
    fcos_cpu_ops::start_compute(inputs, "FcosMaxPoolBackward");
    const Window win = window_of(param);
    auto x_shape = inputs[0].shape(), y_shape = inputs[1].shape();
    const long planes = (long)(x_shape[0] * x_shape[1]);
    const long height = x_shape[2], width = x_shape[3];
    const long out_h = y_shape[2], out_w = y_shape[3];
    const float* x = inputs[0].data<float>();
    const float* y = inputs[1].data<float>();
    const float* dy = inputs[2].data<float>();
    float* dx = outputs[0].data<float>();
#pragma omp parallel for schedule(static)
    for (long plane = 0; plane < planes; ++plane) {
        const float* x_plane = x + plane * height * width;
        float* dx_plane = dx + plane * height * width;
        std::memset(dx_plane, 0, sizeof(float) * height * width);
        for (long oh = 0; oh < out_h; ++oh) {
            for (long ow = 0; ow < out_w; ++ow) {
                const long out = (plane * out_h + oh) * out_w + ow;
                const float maximum = y[out], grad = dy[out];
                for (long kh = 0; kh < win.kernel_h; ++kh) {
                    const long h = oh * win.stride_h - win.pad_h + kh;
                    if (h < 0 || h >= height) continue;
                    for (long kw = 0; kw < win.kernel_w; ++kw) {
                        const long w = ow * win.stride_w - win.pad_w + kw;
                        if (w >= 0 && w < width && x_plane[h * width + w] == maximum)
                            dx_plane[h * width + w] += grad;
                    }
                }
            }
        }
    }
}

}  // namespace fcos_pool

CUSTOM_OP_REG_BEGIN(FcosMaxPoolBackward)
CUSTOM_OP_REG(FcosMaxPoolBackward)
        .set_description("max pooling's input gradient: (x, y, dy) -> dx")
        .add_input("x")
        .add_input("y")
        .add_input("dy")
        .add_output("dx")
        .add_param("kernel", std::vector<int32_t>{3, 3})
        .add_param("stride", std::vector<int32_t>{2, 2})
        .add_param("padding", std::vector<int32_t>{1, 1})
        .set_device_infer(fcos_cpu_ops::inputs_device)
        .set_dtype_infer(fcos_cpu_ops::float32_outputs)
        .set_shape_infer(fcos_pool::backward_shape)
        .set_compute("x86", fcos_pool::backward_compute);
CUSTOM_OP_REG_END(FcosMaxPoolBackward)
