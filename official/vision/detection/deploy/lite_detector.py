"""Run a dumped FCOS graph with MegEngine Lite behind the ``model.inference`` interface."""
import os

import numpy as np
from megenginelite import LiteConfig, LiteNetwork, LiteOptions

from ..errors import ConfigError
from ..utils.machine import usable_cpus
from .layout import dumped_layout, nchw88_kernels_run_here
from .trace import INPUT_NAMES, OUTPUT_NAMES


class LiteDetector:
    """A ``.mge`` file from ``dump_inference`` as a detector: ``DetEvaluator(LiteDetector(path,
    cfg))`` works as with the eager model.

    The graph runs in the layout it was dumped in. NCHW88 runs through MKLDNN, whose JIT failed
    on an AMD EPYC (Zen 4) and ended the process (see ``deploy/layout.py``): dump with
    ``layout="auto"`` to use it only where it runs. On AMD CPUs the NCHW convolutions use MKL's
    AVX2 kernels once ``cpu.use_mkl_avx2_kernels`` ran (``build_detector`` and the tools call
    it).
    """

    def __init__(self, model_path, cfg, threads=None, profile_path=None):
        """``threads``: by default the CPUs this process may use; ``profile_path``: write
        per-operator times (JSON) there when the detector is deleted."""
        if not os.path.isfile(model_path):
            raise FileNotFoundError(
                "Lite model not found: {} (write one with tools/dump.py)".format(model_path))
        self.layout = dumped_layout(model_path)  # "nchw" or "nchw88"
        # running such a graph here would end or hang the process
        if self.layout == "nchw88" and not nchw88_kernels_run_here():
            raise ConfigError(
                "{} was dumped in the NCHW88 layout, whose kernels do not run on this CPU; dump "
                "it again on this machine with tools/dump.py (--layout auto)".format(model_path))
        self.cfg = cfg
        options = LiteOptions()
        # the check checksums every variable of the first run, a debugging aid that made the
        # first FCOS-R50 inference take 16 s instead of 4 s
        options.var_sanity_check_first_run = False
        self.network = LiteNetwork(LiteConfig(option=options))
        # Lite reads the thread count and the profiling switch when it loads the graph
        self.network.threads_number = threads or usable_cpus()
        if profile_path is not None:
            self.network.enable_profile_performance(profile_path)
        self.network.load(model_path)

    def inference(self, image, im_info):
        """image [N, 3, H, W] float32 (BGR, 0-255), im_info [N, 4] -> numpy scores [N, P, K]
        and boxes [N, P, 4] in original-image pixels (copies). Any N, H and W."""
        for name, value in zip(INPUT_NAMES, (image, im_info)):
            tensor = self.network.get_io_tensor(name)
            tensor.set_data_by_copy(np.ascontiguousarray(value, dtype=np.float32))
        self.network.forward()
        self.network.wait()
        scores, boxes = (self.network.get_io_tensor(name).to_numpy() for name in OUTPUT_NAMES)
        return scores, boxes
