"""Checks that a graph dumped in the NCHW88 layout is sound, and runs right on this CPU.

NCHW88 keeps channels in blocks of 8 ([N, C/8, H, W, 8]) for MegEngine's x86 AVX kernels; its
convolutions run through MKLDNN. That fails in two ways, so a dump is only used in NCHW88 after
both checks below pass:

- The graph: the layout pass hands operators it does not know the blocked 5-D tensor as it is;
  the native GroupNorm then aborts ("Only supports input of dim 4"). ``blocked_layout_misuse``
  finds such operators from the dumped file by static shape inference, on any CPU.
- The CPU: on an AMD EPYC (Zen 4) MKLDNN's JIT failed on the first NCHW88 convolution ("bad
  err=45 in Xbyak::Error") and called exit(); by default Lite's compute thread then deadlocked the
  process, and Lite's algorithm profiling runs that kernel too. ``run_in_child`` runs a dumped
  graph in a child process with a time limit, in CPU inplace mode (kernels on the calling
  thread, so such an exit ends the child at once).
"""
import functools
import os
import signal
import subprocess
import sys
import tempfile
import warnings

import numpy as np

import megengine as mge
import megengine.functional as F
import megengine.module as M
from megengine.jit import trace

from ..errors import ConfigError

logger = mge.get_logger(__name__)

LAYOUTS = ("auto", "nchw", "nchw88")
PROBE_TIMEOUT_S = 60
# outputs of the blocked graph are compared with the same traced model run in NCHW
RTOL, ATOL = 1e-3, 1e-3

# Operators that may receive a blocked 5-D tensor: elementwise ones (any layout), those the pass
# rewrites along the blocked axes, and the shape reads and relayouts it inserts to go back to
# NCHW. Any other operator, unless it carries format NCHW88, would misread such an input.
BLOCKED_INPUT_OPERATORS = frozenset([
    "Elemwise", "ElemwiseMultiType", "PowC", "TypeCvt", "Concat", "Reduce",
    "GetVarShape", "Dimshuffle", "Reshape",
])

TIMING_TIMEOUT_S = 300
SECONDS = "seconds"  # the key of the timed runs among a child's outputs

# Lite and NumPy only: runs a dumped graph on the inputs of an .npz file, saves every output
# and, after a first run, the seconds of each of `runs` more. With 0 threads it runs in CPU
# inplace mode (kernels on the calling thread, so a kernel's exit() ends the child at once).
CHILD_SCRIPT = """
import sys, time
import numpy as np
from megenginelite import LiteNetwork
model_path, inputs_path, outputs_path, threads, runs = sys.argv[1:]
network = LiteNetwork()
if int(threads):
    network.threads_number = int(threads)
else:
    network.enable_cpu_inplace_mode()
network.load(model_path)
inputs = np.load(inputs_path)
for name in inputs.files:
    network.get_io_tensor(name).set_data_by_copy(inputs[name])
seconds = []
for run in range(1 + int(runs)):
    start = time.perf_counter()
    network.forward()
    network.wait()
    seconds.append(time.perf_counter() - start)
outputs = {name: network.get_io_tensor(name).to_numpy()
           for name in network.get_all_output_name()}
np.savez(outputs_path, seconds=np.array(seconds[1:]), **outputs)
"""


def check_layout(layout):
    if layout not in LAYOUTS:
        raise ConfigError("layout must be one of {}, got {!r}".format(LAYOUTS, layout))
    return layout


def blocked_layout_misuse(model_path):
    """Operators of a dumped graph that receive a 5-D tensor without being made for the blocked
    layout, as strings like "GroupNormForward on (1, 32, 8, 12, 8)"; empty when there are none.

    Shapes come from static inference at the input shapes stored in the file: no kernel runs.
    """
    misuse = []
    for operator in _load_graph(model_path).all_oprs:
        kind = operator_type(operator)
        if kind in BLOCKED_INPUT_OPERATORS or _format(operator) == "NCHW88":
            continue
        blocked = [tuple(v.shape) for v in operator.inputs
                   if v.shape is not None and len(v.shape) == 5]
        misuse += ["{} on {}".format(kind, shape) for shape in blocked]
    return misuse


def dumped_layout(model_path):
    """"nchw88" if any operator of a dumped graph works on channel blocks, else "nchw"."""
    network = _load_graph(model_path)
    blocked = any(_format(operator) == "NCHW88" for operator in network.all_oprs)
    return "nchw88" if blocked else "nchw"


def _load_graph(model_path):
    # imported here: the module loads megbrain's graph tools, which only these checks need
    from megengine.utils.network import Network  # pylint: disable=import-outside-toplevel

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)  # Network.load leaves its file open
        return Network.load(model_path)


def operator_type(operator):
    """The MegBrain type name of an operator node (Network wraps unknown types read-only)."""
    if type(operator).__name__ == "ReadOnlyOpNode":
        return operator._opr.type  # pylint: disable=protected-access
    return type(operator).__name__


def _format(operator):
    return operator.params.get("format")


def run_in_child(model_path, inputs, timeout=PROBE_TIMEOUT_S, threads=0, timed_runs=0):
    """Run a dumped graph with Lite in a child process killed after ``timeout`` seconds, on
    ``threads`` threads (0: in CPU inplace mode), once and then ``timed_runs`` more times.

    ``inputs``: {name: array}. Returns ({output name: array, SECONDS: [seconds of each timed
    run]}, None), or (None, what went wrong). The child's stderr goes to a file: a pipe left
    open by a killed child's descendants would block reading it.
    """
    with tempfile.TemporaryDirectory() as directory:
        inputs_path, outputs_path, stderr_path = (
            os.path.join(directory, name) for name in ("inputs.npz", "outputs.npz", "stderr"))
        np.savez(inputs_path, **inputs)
        with open(stderr_path, "w") as stderr:
            child = subprocess.Popen(
                [sys.executable, "-c", CHILD_SCRIPT, model_path, inputs_path, outputs_path,
                 str(threads), str(timed_runs)],
                stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True)
            try:
                status = child.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()
                return None, "did not finish in {:g} s".format(timeout)
        if status != 0:
            return None, "failed with exit status {} ({})".format(status, last_line(stderr_path))
        with np.load(outputs_path) as outputs:
            return dict(outputs), None


def last_line(path):
    with open(path) as f:
        lines = [line.strip() for line in f if line.strip()]
    return lines[-1] if lines else "no message"


def blocked_graph_failure(model_path, inputs, expected, timeout=PROBE_TIMEOUT_S):
    """Why the NCHW88 graph at ``model_path`` must not be used here, or None when it is sound
    and its outputs on ``inputs`` equal ``expected`` ({name: array}) in a child process."""
    misuse = blocked_layout_misuse(model_path)
    if misuse:
        return "it passes blocked tensors to {}".format(", ".join(sorted(set(misuse))))
    outputs, failure = run_in_child(model_path, inputs, timeout)
    if failure is not None:
        return "it " + failure
    for name, value in expected.items():
        if not np.allclose(outputs[name], value, rtol=RTOL, atol=ATOL):
            return "its output {} differs from the NCHW graph's by up to {:.3g}".format(
                name, float(np.abs(outputs[name] - value).max()))
    return None


class ProbeConvs(M.Module):
    """conv 3 -> 8, ReLU, conv 8 -> 16: NCHW88 runs the first as FCOS's image convolution
    (plain input, blocked output) and the second on blocks of 8 channels."""

    def __init__(self):
        super().__init__()
        self.first = M.Conv2d(3, 8, 3, padding=1)
        self.second = M.Conv2d(8, 16, 3, padding=1)

    def forward(self, image):
        return self.second(F.relu(self.first(image)))


@functools.lru_cache(maxsize=None)
def nchw88_kernels_run_here(timeout=PROBE_TIMEOUT_S):
    """Whether this CPU runs NCHW88 convolutions right, tried once per process on a
    two-convolution graph (~1.5 s): a quick answer before a whole detector is dumped and run.
    Logs why not."""
    convs = ProbeConvs()
    convs.eval()
    traced = trace(convs, symbolic=True, capture_as_const=True)
    image = np.random.RandomState(0).uniform(0, 255, (1, 3, 16, 24)).astype("float32")
    expected = traced(mge.tensor(image)).numpy()
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "probe.mge")
        traced.dump(path, arg_names=["image"], output_names=["features"],
                    optimize_for_inference=True, enable_nchw88=True)
        outputs, failure = run_in_child(path, {"image": image}, timeout)
    if failure is None and not np.allclose(outputs["features"], expected, rtol=RTOL, atol=ATOL):
        failure = "gave other values than NCHW"
    if failure is not None:
        logger.warning("NCHW88 kernels do not run on this CPU: a test graph %s", failure)
    return failure is None
