"""Export ``model.inference`` to ONNX from its traced graph, operator by operator.

The traced graph is dumped unoptimized (convolution, bias add and ReLU stay separate operators)
and walked in order. mgeconvert 1.0.2, MegEngine's converter, converts the operators whose ONNX
form does not depend on the input size: convolutions, pooling, elementwise arithmetic, concat,
transpose, axis insertion, broadcasting and slices with constant bounds. Its ``mge_to_onnx``
cannot convert the FCOS graph as a whole, so this module converts the rest:

- GetVarShape: mgeconvert replaces every shape by its value at tracing time, which would fix the
  image size and batch; here it is an ONNX Shape, so the padding, the feature sizes and the
  anchor points follow the input.
- Reshape and ResizeForward: mgeconvert writes the traced output shape as a constant. Here a
  reshape's target is the graph's own shape tensor, and the FPN's resizes, which multiply each
  side by the same whole number at any input size, take that factor as constant scales.
- GroupNormForward, Cumsum (the anchor points' index ranges), SetSubtensor (the zero padding)
  and Elemwise SQRT / FLOOR_DIV: mgeconvert has no converter for them.
- Fused ConvBias operators, whose ReLU mgeconvert drops and whose [1, C, 1, 1] bias it passes
  to ONNX Conv, which takes [C]: the graph is dumped unfused instead.

The converted graph is then tidied for onnxruntime: each bias add becomes its Conv's third input
([C]), and nodes that no output depends on are dropped. onnxruntime's CPU provider computes
convolutions in a blocked channel layout (NCHWc) and fuses the ReLU or residual sum that reads a
Conv's output into it. A separate bias Add stops both and takes every convolution's output to
NCHW and back; with the bias inside, the layout is converted only around each GroupNorm (it
reshapes), at the head's outputs and where a feature's shape is read (tests/test_onnx.py).

Post-processing (threshold, NMS) is NumPy in ``DetEvaluator`` and not part of the graph.
"""
import json
import os
import tempfile

import numpy as np

import megengine.core.tensor.megbrain_graph as G
import megengine.module as M
import megengine.utils.comp_graph_tools as cgtools

from ..errors import ConfigError
from ..utils.files import atomic_target
from .fold import fold_batch_norms
from .optional_packages import import_mgeconvert_module, import_optional
from .trace import INPUT_NAMES, OUTPUT_NAMES, recorded_inference

OPSET = 12
PURPOSE = "ONNX export"
# symbolic sizes of the graph inputs: any batch and image size
INPUT_DIMS = {"image": ("batch", 3, "height", "width"), "im_info": ("batch", 4)}
# elementwise modes whose mgeconvert converter is a plain ONNX operator; the fused ones
# (FUSE_ADD_RELU, ...) would lose their activation there
MGECONVERT_ELEMWISE = {"ADD", "SUB", "MUL", "TRUE_DIV", "MAX", "MIN", "RELU", "SIGMOID", "EXP",
                       "ABS", "LOG", "FLOOR", "CEIL", "POW", "TANH"}
MGECONVERT_OPERATORS = {"ConvolutionForward", "PoolingForward", "Concat", "Dimshuffle",
                        "AxisAddRemove", "Broadcast", "Identity", "Subtensor", "Elemwise"}
NO_AXIS = 7  # MegEngine's "no unspecified axis" in Reshape parameters


def export_onnx(model, path, fold_bn=True):
    """Write ``model.inference`` as an ONNX model to ``path`` (atomically); return ``path``.

    Inputs "image" [N, 3, H, W] float32 (BGR, 0-255) and "im_info" [N, 4], any N, H and W;
    outputs "scores" [N, P, K] and "boxes" [N, P, 4] in original-image pixels, as
    ``model.inference``. ``fold_bn`` first folds the batch norms (FrozenBN, BN,
    SyncBN) into the convs (of a copy; ``fold.py``): ONNX export has no BatchNorm converter.
    """
    onnx = import_optional("onnx", PURPOSE)
    converter = GraphConverter(group_norm_eps(model))  # fails now if a package is missing
    if fold_bn:
        model = fold_batch_norms(model)
    inference, _ = recorded_inference(model)
    with tempfile.TemporaryDirectory() as directory:
        graph_path = os.path.join(directory, "inference.mge")
        # no_change_graph: the compatibility pass fails on GroupNorm (see lite_export.dump_traced)
        inference.dump(graph_path, arg_names=list(INPUT_NAMES), output_names=list(OUTPUT_NAMES),
                       optimize_for_inference=False, no_change_graph=True)
        onnx_model = converter.convert(graph_path)
    onnx.checker.check_model(onnx_model)
    with atomic_target(path) as partial:
        onnx.save(onnx_model, partial)
    return path


def group_norm_eps(model):
    """The epsilon of the model's GroupNorms (the dumped operator does not show it); None
    without GroupNorms."""
    values = {m.eps for m in model.modules() if isinstance(m, M.GroupNorm)}
    if len(values) > 1:
        raise ConfigError("ONNX export needs one GroupNorm epsilon, the model has {}".format(
            sorted(values)))
    return values.pop() if values else None


class GraphConverter:
    """A graph dumped by ``trace.dump`` as an ONNX model: ``GraphConverter(eps).convert(path)``.

    Every MegEngine variable becomes the ONNX tensor ``name(var)``; constants become
    initializers where an ONNX node reads them.
    """

    def __init__(self, group_norm_eps=None):
        self.onnx = import_optional("onnx", PURPOSE)
        onnx_op = import_mgeconvert_module("mgeconvert.backend.ir_to_onnx.onnx_op", PURPOSE)
        onnx_op.set_opset_version(OPSET)
        self.backend = onnx_op.MGE2ONNX
        self.frontend = import_mgeconvert_module(
            "mgeconvert.frontend.mge_to_ir.op_generators", PURPOSE).MGE2OP
        ir_graph = import_mgeconvert_module("mgeconvert.converter_ir.ir_graph", PURPOSE)
        resolver = import_mgeconvert_module(
            "mgeconvert.frontend.mge_to_ir.symbolvar_resolver", PURPOSE)
        self.ir_graph = ir_graph.IRGraph()
        self.resolver = resolver.SymbolVarResolver(self.ir_graph)
        self.eps = group_norm_eps
        self.nodes, self.inputs, self.initializers = [], [], {}
        self.tensors = {}  # variable id -> mgeconvert's tensor
        self.own = {
            "GetVarShape": self.get_var_shape, "Reshape": self.reshape,
            "ResizeForward": self.resize, "SetSubtensor": self.set_subtensor,
            "Cumsum": self.cumsum, "GroupNormForward": self.group_norm,
        }

    # ------------------------------ the graph ------------------------------- #
    def convert(self, graph_path):
        """The ONNX model of the graph in ``graph_path``; call once per converter."""
        loaded = G.load_graph(graph_path)  # owns the graph the variables belong to
        outputs = loaded.output_vars_list
        for opr in cgtools.get_oprs_seq(outputs, prune_reshape=False):
            self.convert_operator(opr)
        self.fold_conv_biases()
        self.drop_unread_nodes([self.name(var) for var in outputs])
        helper = self.onnx.helper
        output_info = [helper.make_tensor_value_info(
            self.name(var), self.onnx_dtype(var.dtype), ("batch", "points") + tuple(var.shape[2:]))
            for var in outputs]
        used = {name for node in self.nodes for name in node.input}
        initializers = [tensor for name, tensor in self.initializers.items() if name in used]
        graph = helper.make_graph(self.nodes, "fcos_inference", self.inputs, output_info,
                                  initializer=initializers)
        return helper.make_model(graph, producer_name="megengine-fcos",
                                 opset_imports=[helper.make_opsetid("", OPSET)])

    def convert_operator(self, opr):
        kind = cgtools.get_opr_type(opr)
        if kind == "Host2DeviceCopy":
            var = opr.outputs[0]
            if var.name not in INPUT_DIMS:
                raise ConfigError("ONNX export: unexpected graph input {}".format(var.name))
            self.inputs.append(self.onnx.helper.make_tensor_value_info(
                var.name, self.onnx_dtype(var.dtype), INPUT_DIMS[var.name]))
        elif all(self.constant(var) is not None for var in opr.outputs):
            return  # computed here; its readers get the value as an initializer
        elif kind in self.own:
            self.own[kind](opr)
        elif kind == "Elemwise" and self.elemwise_mode(opr) in ("SQRT", "FLOOR_DIV"):
            self.elemwise(opr)
        elif kind in MGECONVERT_OPERATORS and self.mgeconvert_converts(opr, kind):
            self.convert_with_mgeconvert(opr, kind)
        elif kind == "Subtensor":
            self.subtensor(opr)
        else:
            detail = self.elemwise_mode(opr) if kind == "Elemwise" else opr.params
            raise ConfigError("ONNX export cannot convert the {} operator {} ({})".format(
                kind, opr.name, detail))

    def mgeconvert_converts(self, opr, kind):
        """Whether mgeconvert's converter of this operator is right for any input size."""
        if kind == "Subtensor":  # it reads the bounds as constants and drops indexed axes
            return all(self.constant(var) is not None for var in opr.inputs[1:]) and not (
                self.keeps_indexed_axes(opr))
        # ONNX arithmetic takes one type where MegEngine mixes some (int TRUE_DIV gives
        # floats); fused modes would lose their activation
        if kind == "Elemwise":
            dtypes = {np.dtype(var.dtype) for var in list(opr.inputs) + list(opr.outputs)}
            return self.elemwise_mode(opr) in MGECONVERT_ELEMWISE and len(dtypes) == 1
        return True

    def convert_with_mgeconvert(self, opr, kind):
        for var in list(opr.inputs) + list(opr.outputs):
            self.tensor(var)  # registers the variable under its ONNX name
        ir_operator = self.frontend[kind](opr, self.ir_graph).get_opr()
        nodes, _, parameters = self.backend[type(ir_operator)](ir_operator).convert()
        # its intermediate names derive from the input's (e.g. "<shape>_int64"), so two
        # operators reading one tensor would write the same name: make them unique
        results = {self.name(var) for var in opr.outputs}
        intermediate = {name for node in nodes for name in node.output} - results
        prefix = "mgeconvert{}/".format(len(self.nodes))
        for node in nodes:
            for names in (node.input, node.output):
                renamed = [prefix + name if name in intermediate else name for name in names]
                del names[:]
                names.extend(renamed)
        self.nodes.extend(nodes)
        for parameter in parameters:
            self.initializers.setdefault(parameter.name, parameter)

    def fold_conv_biases(self):
        """Conv -> Add(constant [1, C, 1, 1]) becomes one Conv with the bias [C] as its third
        input, writing the Add's output.

        onnxruntime fuses a ReLU, a residual sum or a scale into a Conv only when the Conv's
        output goes straight to it, and only then keeps the result in its blocked (NCHWc)
        layout for the next convolution: a separate bias Add converts every convolution's
        output back to NCHW.
        """
        readers = {}
        for node in self.nodes:
            for name in node.input:
                readers.setdefault(name, []).append(node)
        folded = []
        for conv in self.nodes:
            add, bias = self.bias_add(conv, readers.get(conv.output[0], []))
            if add is not None:
                conv.input.append(self.array(bias))
                conv.output[0] = add.output[0]
                folded.append(add)
        self.nodes = [node for node in self.nodes if all(node is not add for add in folded)]

    def bias_add(self, conv, readers):
        """The Add that is the only reader of ``conv`` and adds a constant [1, C, 1, 1], and
        that constant as [C]; (None, None) if there is none."""
        if conv.op_type != "Conv" or len(conv.input) != 2 or len(readers) != 1 or (
                readers[0].op_type != "Add") or conv.input[1] not in self.initializers:
            return None, None
        add = readers[0]
        others = [name for name in add.input if name != conv.output[0]]
        if len(others) != 1 or others[0] not in self.initializers:
            return None, None
        bias = self.onnx.numpy_helper.to_array(self.initializers[others[0]])
        channels = self.initializers[conv.input[1]].dims[0]
        return (add, bias.reshape(-1)) if bias.shape == (1, channels, 1, 1) else (None, None)

    def drop_unread_nodes(self, outputs):
        """Keep only the nodes that ``outputs`` depend on: onnxruntime runs the others too,
        e.g. the traced graph's resize sizes, which constant scales replace (and it converts the
        blocked tensors they measure back to NCHW for them)."""
        needed, kept = set(outputs), []
        for node in reversed(self.nodes):
            if needed.intersection(node.output):
                needed.update(node.input)
                kept.append(node)
        self.nodes = kept[::-1]

    # ------------------------------ tensors -------------------------------- #
    @staticmethod
    def name(var):
        return var.name if var.name in INPUT_NAMES + OUTPUT_NAMES else "{}#{}".format(
            var.name, var.id)

    def tensor(self, var):
        """mgeconvert's tensor of ``var`` (its value if constant), named ``name(var)``."""
        if var.id not in self.tensors:
            tensor = self.resolver.get_ir_tensor(var)
            tensor.name = self.name(var)
            # its converters look types up by NumPy scalar type (np.int32), not dtype objects
            tensor.dtype = np.dtype(var.dtype).type
            self.tensors[var.id] = tensor
        return self.tensors[var.id]

    def constant(self, var):
        return self.tensor(var).np_data

    def input(self, var):
        """The ONNX name of ``var`` as a node input, with an initializer if it is constant."""
        name, value = self.name(var), self.constant(var)
        if value is not None and name not in self.initializers:
            self.initializers[name] = self.onnx.numpy_helper.from_array(np.asarray(value), name)
        return name

    def array(self, value):
        """A new initializer holding ``value``; its name."""
        name = "onnx_export/constant{}".format(len(self.initializers))
        self.initializers[name] = self.onnx.numpy_helper.from_array(np.asarray(value), name)
        return name

    def node(self, op_type, inputs, output=None, **attributes):
        """Append an ONNX node; its output name (a new one unless given)."""
        output = output or "onnx_export/{}{}".format(op_type, len(self.nodes))
        self.nodes.append(self.onnx.helper.make_node(op_type, inputs, [output], **attributes))
        return output

    def onnx_dtype(self, dtype):
        return self.onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtype))

    @staticmethod
    def elemwise_mode(opr):
        return json.loads(opr.params)["mode"].upper()

    # ----------------------- operators converted here ----------------------- #
    def get_var_shape(self, opr):
        (data,), (shape,) = opr.inputs, opr.outputs
        if tuple(shape.shape) != (len(data.shape),):  # the dumped graph hides an axis parameter
            raise ConfigError("ONNX export converts GetVarShape of whole shapes only, "
                              "{} is not one".format(opr.name))
        int32 = self.onnx_dtype(np.int32)  # MegEngine computes shapes in int32
        self.node("Cast", [self.node("Shape", [self.input(data)])], self.name(shape), to=int32)

    def reshape(self, opr):
        data, shape = opr.inputs
        target = self.node("Cast", [self.input(shape)], to=self.onnx_dtype(np.int64))
        axis = json.loads(opr.params).get("axis", NO_AXIS)
        if axis != NO_AXIS:  # the axis MegEngine infers: -1 for ONNX
            keep = np.ones(len(opr.outputs[0].shape), np.int64)
            keep[axis] = 0
            target = self.node("Add", [self.node("Mul", [target, self.array(keep)]),
                                       self.array(keep - 1)])
        self.node("Reshape", [self.input(data), target], self.name(opr.outputs[0]))

    def resize(self, opr):
        """The FPN's bilinear upsampling, by the whole factor between the traced sizes.

        FCOS resizes only in the FPN, a backbone stage to the size of a finer one. The image is
        padded to a multiple of 32 (boxes.SIZE_DIVISIBILITY), the coarsest stage's stride, so
        every stage is exactly image / stride and the traced factor holds for any input size.
        onnxruntime resizes by constant scales in its blocked layout; to sizes computed at run
        time it would convert the tensor to NCHW and back.
        """
        params = json.loads(opr.params)
        if (params["imode"], params["format"]) != ("LINEAR", "NCHW"):
            raise ConfigError("ONNX export converts bilinear NCHW resizing only, not {}".format(
                params))
        data, resized = opr.inputs[0], opr.outputs[0]
        before, after = np.array(data.shape[2:]), np.array(resized.shape[2:])
        if np.any(after % before):
            raise ConfigError("ONNX export converts resizing by whole factors only (the FPN's), "
                              "{} resizes {} to {}".format(opr.name, tuple(before), tuple(after)))
        scales = np.concatenate([[1, 1], after // before]).astype(np.float32)
        # MegEngine's bilinear resize samples at pixel centres, edges clamped: half_pixel
        self.node("Resize", [self.input(data), self.array(np.zeros(0, np.float32)),  # no roi
                             self.array(scales)], self.name(resized), mode="linear",
                  coordinate_transformation_mode="half_pixel")

    def subtensor(self, opr):
        """Slices and indices whose bounds are tensors (e.g. ``x[:, :, :h, :w]``)."""
        bounds = iter(opr.inputs[1:])  # per axis: index, or begin, end, step where given
        starts, ends, steps, indexed = [], [], [], []
        for item in json.loads(opr.params):
            if item["idx"]:
                index = self.index(next(bounds))
                starts.append(index)
                ends.append(self.node("Add", [index, self.array(np.array([1]))]))
                steps.append(self.array(np.array([1])))
                indexed.append(item["axis"])
                continue
            for present, default, values in ((item["begin"], 0, starts),
                                             (item["end"], np.iinfo(np.int64).max, ends),
                                             (item["step"], 1, steps)):
                values.append(self.index(next(bounds)) if present else self.array(
                    np.array([default])))
        axes = self.array(np.array([item["axis"] for item in json.loads(opr.params)]))
        sliced = self.node("Slice", [self.input(opr.inputs[0])] + [
            self.node("Concat", values, axis=0) for values in (starts, ends)] + [
            axes, self.node("Concat", steps, axis=0)])
        output = self.name(opr.outputs[0])
        if indexed and not self.keeps_indexed_axes(opr):
            self.node("Squeeze", [sliced], output, axes=indexed)
        else:
            self.node("Identity", [sliced], output)

    @staticmethod
    def keeps_indexed_axes(opr):
        """MegEngine graphs hold scalars as [1]: an element of a vector keeps its axis."""
        indexed = any(item["idx"] for item in json.loads(opr.params))
        return indexed and len(opr.outputs[0].shape) == len(opr.inputs[0].shape)

    def index(self, var):
        """A bound of a slice as the [1] int64 tensor Slice reads (non-negative ones only)."""
        cast = self.node("Cast", [self.input(var)], to=self.onnx_dtype(np.int64))
        return self.node("Reshape", [cast, self.array(np.array([1]))])

    def set_subtensor(self, opr):
        """``dest[:, :, :h, :w] = value``, slices from 0 that ``value`` fills (the padding): the
        value padded to the shape of ``dest``, plus ``dest`` outside it."""
        dest, value = opr.inputs[:2]
        items = json.loads(opr.params)
        if any(item["begin"] or item["step"] or item["idx"] for item in items) or len(
                value.shape) != len(dest.shape):
            raise ConfigError("ONNX export converts SetSubtensor of leading blocks only, "
                              "{} is not one".format(opr.name))
        value_shape = self.node("Shape", [self.input(value)])
        padding = self.node("Sub", [self.node("Shape", [self.input(dest)]), value_shape])
        pads = self.node("Concat", [self.array(np.zeros(len(dest.shape), np.int64)), padding],
                         axis=0)
        placed = self.node("Pad", [self.input(value), pads])
        zeros = self.node("ConstantOfShape", [value_shape], value=self.onnx.numpy_helper.from_array(
            np.zeros(1, np.float32)))
        outside = self.node("Pad", [zeros, pads, self.array(np.array(1, np.float32))])
        self.node("Add", [placed, self.node("Mul", [self.input(dest), outside])],
                  self.name(opr.outputs[0]))

    def cumsum(self, opr):
        (data,) = opr.inputs
        # the dumped graph does not show the axis; F.cumsum has no exclusive/reverse options
        if len(data.shape) != 1:
            raise ConfigError("ONNX export converts Cumsum of 1-D tensors only, {} has shape "
                              "{}".format(opr.name, tuple(data.shape)))
        self.node("CumSum", [self.input(data), self.array(np.array(0, np.int64))],
                  self.name(opr.outputs[0]))

    def group_norm(self, opr):
        """Normalization over each group as InstanceNormalization of [N, G, C/G * H * W]."""
        data, weight, bias = opr.inputs
        groups = opr.outputs[1].shape[1]  # the mean of every group, [N, G]
        scale, shift = self.constant(weight), self.constant(bias)
        if self.eps is None or scale is None or shift is None:
            raise ConfigError("ONNX export needs the GroupNorm epsilon and constant affine "
                              "parameters for {}".format(opr.name))
        grouped = self.node("Reshape", [self.input(data), self.array(np.array([0, groups, -1]))])
        normalized = self.node("InstanceNormalization", [
            grouped, self.array(np.ones(groups, np.float32)),
            self.array(np.zeros(groups, np.float32))], epsilon=float(self.eps))
        restored = self.node("Reshape", [normalized, self.node("Shape", [self.input(data)])])
        scaled = self.node("Mul", [restored, self.array(scale.reshape(1, -1, 1, 1))])
        self.node("Add", [scaled, self.array(shift.reshape(1, -1, 1, 1))],
                  self.name(opr.outputs[0]))

    def elemwise(self, opr):
        mode, output = self.elemwise_mode(opr), self.name(opr.outputs[0])
        inputs = [self.input(var) for var in opr.inputs]
        if mode == "SQRT":
            self.node("Sqrt", inputs, output)
        elif np.issubdtype(np.dtype(opr.outputs[0].dtype), np.integer):
            # integer Div truncates: floor division for the non-negative sizes of the padding
            self.node("Div", inputs, output)
        else:
            self.node("Floor", [self.node("Div", inputs)], output)
