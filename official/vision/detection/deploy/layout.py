"""The tensor layout of a dumped graph: plain NCHW, or NCHW88 where this CPU runs it.

NCHW88 keeps channels in blocks of 8 for MegEngine's x86 AVX kernels, which run through MKLDNN.
On an AMD EPYC (Zen 4) MKLDNN's JIT failed on the first NCHW88 convolution with "bad err=45 in
Xbyak::Error" and called exit() on Lite's compute thread, whose exit handler then waited for that
same thread: the process hung. So "auto" runs a small NCHW88 graph in a child process first.
"""
import os
import signal
import subprocess
import sys
import tempfile

import numpy as np

import megengine as mge
import megengine.functional as F
import megengine.module as M
from megengine.jit import trace

from .compile import CONCRETE_LAYOUTS, dump_traced

logger = mge.get_logger(__name__)

LAYOUTS = ("auto",) + CONCRETE_LAYOUTS
PROBE_TIMEOUT_S = 60
PROBE_INPUT_SHAPE = (1, 3, 16, 24)
# Lite and NumPy only. CPU inplace mode runs the kernels on the calling thread, so that a kernel
# calling exit() ends the process at once instead of deadlocking it with the compute thread.
PROBE_SCRIPT = """
import sys
import numpy as np
from megenginelite import LiteNetwork
model_path, image_path, output_path = sys.argv[1:]
network = LiteNetwork()
network.enable_cpu_inplace_mode()
network.load(model_path)
network.get_io_tensor("image").set_data_by_copy(np.load(image_path))
network.forward()
network.wait()
np.save(output_path, network.get_io_tensor("features").to_numpy())
"""


class ProbeConvs(M.Module):
    """conv 3 -> 8, ReLU, conv 8 -> 16: NCHW88 runs the first as FCOS's image convolution
    (plain input, blocked output) and the second on blocks of 8 channels."""

    def __init__(self):
        super().__init__()
        self.first = M.Conv2d(3, 8, 3, padding=1)
        self.second = M.Conv2d(8, 16, 3, padding=1)

    def forward(self, image):
        return self.second(F.relu(self.first(image)))


def choose_layout(layout, probe_timeout=PROBE_TIMEOUT_S):
    """The layout to dump in for a requested one: "auto" becomes "nchw88" where
    ``nchw88_runs_here`` says so and "nchw" elsewhere; "nchw" and "nchw88" stay."""
    if layout not in LAYOUTS:
        raise ValueError("layout must be one of {}, got {!r}".format(LAYOUTS, layout))
    if layout != "auto":
        return layout
    return "nchw88" if nchw88_runs_here(probe_timeout) else "nchw"


def nchw88_runs_here(timeout=PROBE_TIMEOUT_S):
    """Whether Lite runs a small NCHW88 convolution graph on this CPU, in a child process
    killed after ``timeout`` seconds, with the outputs of the NCHW graph; logs why not."""
    with tempfile.TemporaryDirectory() as directory:
        paths = [os.path.join(directory, name) for name in ("probe.mge", "image.npy", "out.npy")]
        expected = dump_probe_graph(paths[0], paths[1])
        failure = run_probe(paths, timeout)
        if failure is None and not np.allclose(np.load(paths[2]), expected, rtol=1e-4, atol=1e-4):
            failure = "its outputs differ from NCHW"
    if failure is not None:
        logger.warning("NCHW88 layout not used: a test graph %s", failure)
    return failure is None


def dump_probe_graph(model_path, image_path):
    """Write ``ProbeConvs`` as an NCHW88 graph and a random image; return the NCHW output."""
    rng = np.random.RandomState(0)
    convs = ProbeConvs()
    convs.eval()
    traced = trace(convs, symbolic=True, capture_as_const=True)
    image = rng.uniform(0, 255, PROBE_INPUT_SHAPE).astype("float32")
    expected = traced(mge.tensor(image)).numpy()
    dump_traced(traced, model_path, ["image"], ["features"], layout="nchw88")
    np.save(image_path, image)
    return expected


def run_probe(paths, timeout):
    """Run ``PROBE_SCRIPT`` on (model, image, output) paths; None if it exited with 0, else
    what went wrong. The child's stderr goes to a file: a pipe left open by a killed child's
    descendants would block reading it."""
    stderr_path = paths[-1] + ".stderr"
    with open(stderr_path, "w") as stderr:
        child = subprocess.Popen([sys.executable, "-c", PROBE_SCRIPT] + list(paths),
                                 stdout=subprocess.DEVNULL, stderr=stderr,
                                 start_new_session=True)
        try:
            status = child.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
            return "did not finish in {:g} s".format(timeout)
    if status != 0:
        return "failed with exit status {} ({})".format(status, last_line(stderr_path))
    return None


def last_line(path):
    with open(path) as f:
        lines = [line.strip() for line in f if line.strip()]
    return lines[-1] if lines else "no message"
