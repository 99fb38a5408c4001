"""Run an exported ONNX model with onnxruntime behind the ``model.inference`` interface."""
import os

import numpy as np

from .trace import INPUT_NAMES, OUTPUT_NAMES
from ..utils.machine import usable_cpus
from .optional_packages import import_optional


# onnxruntime's session option: whether its threads spin waiting for work after a run
SPIN_OPTION = "session.intra_op.allow_spinning"


class OnnxRuntimeDetector:
    """A ``.onnx`` file from ``export_onnx`` as a detector: ``DetEvaluator(OnnxRuntimeDetector(
    path, cfg))`` works as with the eager model. Runs on the CPU with ``threads`` threads (by
    default the CPUs this process may use: its affinity, capped by its cgroup quota), which
    with ``spin`` (onnxruntime's default) spin between runs instead of sleeping at once."""

    def __init__(self, model_path, cfg, threads=None, spin=True):
        onnxruntime = import_optional("onnxruntime", "the onnxruntime engine")
        if not os.path.isfile(model_path):
            raise FileNotFoundError(
                "ONNX model not found: {} (write one with tools/dump.py -o MODEL.onnx)".format(
                    model_path))
        self.cfg = cfg
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or usable_cpus()
        options.add_session_config_entry(SPIN_OPTION, "1" if spin else "0")
        self.session = onnxruntime.InferenceSession(model_path, options,
                                                    providers=["CPUExecutionProvider"])

    def inference(self, image, im_info):
        """image [N, 3, H, W] float32 (BGR, 0-255), im_info [N, 4] -> numpy scores [N, P, K]
        and boxes [N, P, 4] in original-image pixels. Any N, H and W."""
        feed = {name: np.ascontiguousarray(value, dtype=np.float32)
                for name, value in zip(INPUT_NAMES, (image, im_info))}
        scores, boxes = self.session.run(list(OUTPUT_NAMES), feed)
        return scores, boxes
