"""The oneDNN convolutions of CPU training (cpu/onednn/): values and gradients against
MegEngine's convolution, in graphs too, bf16, the hazards of MegEngine 1.13's custom operators,
and the fallback to MegEngine's convolutions."""
import os
import subprocess
import sys

import numpy as np
import megengine as mge
import megengine.functional as F
import pytest
from megengine.autodiff import GradManager
from megengine.core._imperative_rt.core2 import apply  # pylint: disable=no-name-in-module
from megengine.core.ops import custom
from megengine.jit import trace

from official.vision.detection import cpu
from official.vision.detection.cpu.custom_ops import library
from official.vision.detection.cpu.custom_ops.conv import OneDNNConv2d, refusal
from official.vision.detection.errors import ConfigError
from official.vision.detection.layers.conv import Conv2d
from official.vision.detection.utils.machine import BF16_FLAGS, cpu_vendor_and_flags

from conftest import PROJECT_ROOT

HAS_BF16_UNITS = bool(cpu_vendor_and_flags()[1] & set(BF16_FLAGS))
# (in, out, kernel, stride, padding, dilation, groups, input height x width, bias)
CONVOLUTIONS = {
    "stem 7x7 stride 2": (3, 16, 7, 2, 3, 1, 1, (30, 37), False),
    "3x3": (16, 16, 3, 1, 1, 1, 1, (9, 11), True),
    "3x3 stride 2": (16, 32, 3, 2, 1, 1, 1, (9, 12), False),
    "1x1": (16, 24, 1, 1, 0, 1, 1, (5, 7), True),
    "1x1 stride 2 (a shortcut)": (16, 24, 1, 2, 0, 1, 1, (8, 7), False),
    "3x3 dilation 2": (8, 16, 3, 1, 2, 2, 1, (12, 10), True),
    "3x3 in 4 groups": (16, 32, 3, 1, 1, 1, 4, (8, 9), True),
    "3x3 depthwise": (16, 16, 3, 1, 1, 1, 16, (8, 9), False),
    "3x3 on one pixel (P7)": (16, 16, 3, 1, 1, 1, 1, (1, 1), True),
    # above conv.cpp's SERIAL_FLOPS: on oneDNN's threads (the convolutions above on one)
    "3x3 of 96 channels": (96, 96, 3, 1, 1, 1, 1, (20, 24), True),
    # activations above ChannelBlockCopy::MAX_ELEMENTS: reordered by oneDNN's kernels (the
    # rest by conv.cpp's loops, padded blocks among them: 24 outputs in blocks of 16)
    "1x1 on a large input": (16, 24, 1, 1, 0, 1, 1, (180, 200), False),
}


def relative_error(actual, expected):
    return np.abs(actual - expected).max() / np.abs(expected).max()


def forward_backward(module, inputs, output_grad):
    """[output, input gradient, weight gradient, bias gradient (None without a bias)] of one
    training forward and backward, as tensors."""
    module.train()
    params = [module.weight] + ([module.bias] if module.bias is not None else [])
    manager = GradManager().attach(params + [inputs])
    with manager:
        output = module(inputs)
        manager.backward(output, output_grad)
    results = [output, inputs.grad, module.weight.grad,
               None if module.bias is None else module.bias.grad]
    for tensor in params + [inputs]:
        tensor.grad = None
    return results


def values_and_gradients(module, inputs, output_grad):
    return [None if tensor is None else tensor.numpy()
            for tensor in forward_backward(module, inputs, output_grad)]


def conv_pair(spec, precision="fp32", seed=0):
    """MegEngine's Conv2d of ``spec`` with a random bias, and the OneDNNConv2d sharing its
    tensors; an input and an output gradient for them."""
    channels, out_channels, kernel, stride, padding, dilation, groups, size, bias = spec
    rng = np.random.default_rng(seed)
    reference = Conv2d(channels, out_channels, kernel, stride, padding, dilation, groups,
                       bias=bias)
    if bias:
        reference.bias[...] = rng.normal(size=reference.bias.shape).astype("float32")
    inputs = mge.tensor(rng.normal(size=(2, channels) + size).astype("float32"))
    output_grad = mge.tensor(rng.normal(size=reference(inputs).shape).astype("float32"))
    return reference, OneDNNConv2d.of(reference, precision), inputs, output_grad


def test_the_library_is_built_and_loads():
    assert library.unavailable_reason() is None
    assert cpu.training_convolutions("auto") == "onednn"


@pytest.mark.parametrize("name", list(CONVOLUTIONS))
def test_values_and_gradients_equal_megengines(name):
    reference, mine, inputs, output_grad = conv_pair(CONVOLUTIONS[name])
    expected = values_and_gradients(reference, inputs, output_grad)
    actual = values_and_gradients(mine, inputs, output_grad)
    for what, got, wanted in zip(("output", "input grad", "weight grad", "bias grad"),
                                 actual, expected):
        if wanted is not None:
            assert relative_error(got, wanted) <= 1e-4, what


@pytest.mark.parametrize("name", ["stem 7x7 stride 2", "3x3 in 4 groups"])
def test_a_compiled_graph_gives_the_eager_values_and_gradients(name):
    reference, mine, inputs, output_grad = conv_pair(CONVOLUTIONS[name])
    expected = values_and_gradients(reference, inputs, output_grad)
    graph = trace(lambda x, dy: forward_backward(mine, x, dy)[:3], symbolic=True)
    for _ in range(3):  # records, then compiled
        actual = graph(inputs, output_grad)
    for got, wanted in zip(actual, expected):
        assert relative_error(got.numpy(), wanted) <= 1e-4


def test_asymmetric_padding_equals_padding_the_input_first():
    rng = np.random.default_rng(1)
    inputs = mge.tensor(rng.normal(size=(2, 8, 9, 10)).astype("float32"))
    weight = mge.tensor(rng.normal(size=(12, 8, 3, 3)).astype("float32"))
    bias = mge.tensor(rng.normal(size=(12,)).astype("float32"))
    top, bottom, left, right = 2, 0, 1, 3
    op = custom.FcosConvForward(stride=[1, 2], padding=[top, bottom, left, right],
                                dilation=[1, 1], groups=1, precision="fp32")
    (output,) = apply(op, inputs, weight, bias)
    padded = F.nn.pad(inputs, ((0, 0), (0, 0), (top, bottom), (left, right)))
    expected = F.conv2d(padded, weight, bias.reshape(1, -1, 1, 1), (1, 2), 0)
    assert output.shape == expected.shape
    assert relative_error(output.numpy(), expected.numpy()) <= 1e-5


def test_bf16_rounds_within_bfloat16_precision_where_the_cpu_has_bf16_units():
    if not HAS_BF16_UNITS:  # the trainer refuses it, as inference does
        with pytest.raises(ConfigError, match="bf16 units"):
            cpu.training_convolutions("auto", "bf16")
        return
    assert cpu.training_convolutions("auto", "bf16") == "onednn"
    reference, mine, inputs, output_grad = conv_pair(CONVOLUTIONS["3x3"], "bf16")
    expected = values_and_gradients(reference, inputs, output_grad)
    actual = values_and_gradients(mine, inputs, output_grad)
    for got, wanted in zip(actual, expected):  # 8 bits of mantissa: 2^-8 per rounding
        assert 1e-4 < relative_error(got, wanted) <= 2e-2


def test_a_primitive_is_made_once_per_shape():
    count = library.load().fcos_onednn_primitive_count
    reference, mine, inputs, output_grad = conv_pair((8, 8, 3, 1, 1, 1, 1, (13, 17), True))
    values_and_gradients(mine, inputs, output_grad)
    made = count()
    for _ in range(3):
        values_and_gradients(mine, inputs, output_grad)
    assert count() == made
    values_and_gradients(mine, mge.tensor(np.ones((2, 8, 13, 18), "float32")),
                         mge.tensor(np.ones((2, 8, 13, 18), "float32")))
    assert count() == made + 1


def run_python(code, env=None, timeout=300, check=True):
    """Runs ``code`` in a new interpreter; its prints are in ``stdout``, MegEngine's and the
    package's log lines in ``stderr`` (kept apart: a worker's warning can land mid-line)."""
    result = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT,
                            env=dict(os.environ, **(env or {})), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, timeout=timeout, check=False)
    if check:
        assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    return result


# Convolutions whose input MegEngine's worker computes just before: an operator that reads it
# too early reads the previous values (or none)
EARLY_READ = """
import sys
import numpy as np, megengine as mge, megengine.functional as F
from megengine.core._imperative_rt.core2 import apply
from megengine.core.ops import custom
from official.vision.detection.cpu.custom_ops import library
assert library.load() is not None, library.unavailable_reason()
mge.config.async_level = 2
rng = np.random.default_rng(0)
x0 = mge.tensor(rng.normal(size=(4, 32, 64, 64)).astype("float32"))
w = mge.tensor(rng.normal(size=(32, 32, 3, 3)).astype("float32") * 0.05)
settings = dict(stride=[1, 1], padding=[1, 1, 1, 1], dilation=[1, 1], groups=1, precision="fp32",
                bias=True)
wrong = 0
for trial in range(10):
    x = x0
    for _ in range(3):  # ~10 ms of queued work
        x = F.conv2d(x, w, None, 1, 1)
    x = x * (trial + 1)
    (y,) = apply(custom.FcosConvForward(**settings), x, w, F.zeros((32,)))
    expected = F.conv2d(x, w, None, 1, 1)
    wrong += float(F.abs(y - expected).max()) > 1e-4 * float(F.abs(expected).max())
print("wrong", wrong)
"""


def test_inputs_still_being_computed_are_waited_for(tmp_path):
    """MegEngine 1.13 runs a CPU custom operator on the calling thread, not its worker queue:
    without the wait for queued kernels (built with FCOS_CPU_OPS_NO_SYNC) it reads inputs
    that are not computed yet (9 and 10 of 10 here)."""
    unsynced = library.build(str(tmp_path / "unsynced.so"), defines=["FCOS_CPU_OPS_NO_SYNC"])
    output = run_python(EARLY_READ, {"FCOS_CPU_OPS_LIBRARY": unsynced}).stdout
    assert int(output.split("wrong ")[1]) >= 5, output[-200:]
    assert "wrong 0" in run_python(EARLY_READ).stdout


def test_a_library_built_with_the_new_string_abi_cannot_register_its_operators(tmp_path):
    """MegEngine 1.13's symbols use the old C++ string ABI: with the new one the operators'
    registration, custom::op_insert(std::string, unsigned), is not found when the library is
    loaded, and the dynamic linker ends the process. The library make setup builds loads."""
    code = ("from official.vision.detection.cpu.custom_ops import library\n"
            "print('reason', library.unavailable_reason())")
    new_abi = library.build(str(tmp_path / "new_abi.so"), abi=1)
    result = run_python(code, {"FCOS_CPU_OPS_LIBRARY": new_abi}, check=False)
    assert result.returncode != 0
    assert "undefined symbol: _ZN6custom9op_insertENSt7__cxx11" in result.stderr
    assert "reason None" in run_python(code).stdout


def test_without_the_library_training_keeps_megengines_convolutions(tmp_path):
    code = """
from official.vision.detection import cpu
from official.vision.detection.errors import ConfigError
print("chosen", cpu.training_convolutions("auto"))
for args in (("onednn",), ("auto", "bf16")):
    try:
        cpu.training_convolutions(*args)
    except ConfigError as error:
        print("refused:", error)
"""
    result = run_python(code, {"FCOS_CPU_OPS_LIBRARY": str(tmp_path / "missing.so")})
    output = result.stdout
    assert "chosen megengine" in output
    assert "the package's CPU operators are not built" in result.stderr  # the log line
    if HAS_BF16_UNITS:
        assert output.count("refused: the package's CPU operators are not built") == 2
    else:
        assert "refused: the package's CPU operators are not built" in output


AVX2_LAYOUTS = """
import numpy as np, megengine as mge
from megengine.autodiff import GradManager
from official.vision.detection.cpu.custom_ops.conv import OneDNNConv2d
from official.vision.detection.layers.conv import Conv2d
rng = np.random.default_rng(0)
for channels, out_channels, size in ((16, 20, (9, 11)), (24, 16, (13, 8))):
    reference = Conv2d(channels, out_channels, 3, 1, 1)
    conv = OneDNNConv2d.of(reference, "fp32")
    conv.train()
    x = mge.tensor(rng.normal(size=(2, channels) + size).astype("float32"))
    errors = []
    for module in (reference, conv):
        manager = GradManager().attach([module.weight, x])
        with manager:
            y = module(x)
            manager.backward((y * y).sum())
        errors.append([y.numpy(), x.grad.numpy(), module.weight.grad.numpy()])
        x.grad = module.weight.grad = None  # the two modules share the weight
    for got, wanted in zip(errors[1], errors[0]):
        print("error", float(np.abs(got - wanted).max() / np.abs(wanted).max()))
"""


def test_avx2_layouts_blocks_of_8_channels_give_megengines_values():
    """With oneDNN's kernels limited to AVX2 (what Zen 3 runs), activations come in blocks of
    8 channels, a padded one among them (20 outputs): conv.cpp's copies to and from them."""
    result = run_python(AVX2_LAYOUTS, {"ONEDNN_MAX_CPU_ISA": "AVX2", "ONEDNN_VERBOSE": "1"})
    assert "aBcd8b" in result.stdout and "aBcd16b" not in result.stdout
    errors = [float(line.split()[1]) for line in result.stdout.splitlines()
              if line.startswith("error ")]
    assert len(errors) == 6 and max(errors) <= 1e-4, errors


REFUSED_SHAPE = """
import numpy as np, megengine as mge
from megengine.autodiff import GradManager
from official.vision.detection.cpu.custom_ops.conv import OneDNNConv2d, refusal
from official.vision.detection.layers.conv import Conv2d
settings = dict(stride=[1, 1], padding=[1, 1, 1, 1], dilation=[1, 1], groups=1, precision="bf16",
                bias=True)
print("refusal:", refusal((2, 8, 6, 6), (8, 8, 3, 3), settings))
reference = Conv2d(8, 8, 3, 1, 1)
conv = OneDNNConv2d.of(reference, "bf16")
conv.train()
x = mge.tensor(np.random.default_rng(0).normal(size=(2, 8, 6, 6)).astype("float32"))
manager = GradManager().attach([conv.weight])
with manager:
    y = conv(x)
    manager.backward(y.sum())
expected = reference(x)
print("equal", float(abs(y - expected).max()) < 1e-5, conv.weight.grad is not None)
"""


def test_a_shape_onednn_refuses_runs_on_megengines_convolution():
    """With its kernels limited to SSE4.1, oneDNN has no bf16 convolution: the module says
    so in one line and MegEngine's convolution runs it (in fp32)."""
    result = run_python(REFUSED_SHAPE, {"ONEDNN_MAX_CPU_ISA": "SSE41"})
    assert "refusal: could not create a primitive descriptor" in result.stdout
    assert "oneDNN refused a convolution of (2, 8, 6, 6)" in result.stderr
    assert "equal True True" in result.stdout


def test_refusal_says_why_for_impossible_settings():
    settings = dict(stride=[1, 1], padding=[0, 0, 0, 0], dilation=[9, 9], groups=1,
                    precision="fp32", bias=False)
    assert refusal((2, 16, 8, 8), (16, 16, 3, 3), settings) == (
        "FcosConv: empty output for input 8x8")
