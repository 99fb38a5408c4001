"""The package's CPU training operators, MegEngine custom operators: the convolutions on oneDNN
(conv.cpp), the optimizers' updates in one pass (optimizer.cpp), max pooling's gradient
(pool.cpp), training-mode batch normalization (batch_norm.cpp) and group normalization
(group_norm.cpp). Built into one shared library in this Python environment's lib/ (beside
oneDNN's, against this environment's MegEngine), loaded into MegEngine once per process.

``make setup`` builds it (``library.main()``) with g++ against MegEngine's custom-operator
headers and ``libmegengine_shared.so`` from the MegEngine wheel, and oneDNN's CPU build with the
GNU OpenMP runtime from PyPI (``onednn-cpu-gomp``, requirements.txt) installed into the same
environment. ``unavailable_reason()`` says why the operators cannot run here (None when they
can): the trainer then keeps MegEngine's operators and logs that line.
"""
import ctypes
import os
import platform
import shutil
import subprocess
import sys
import tempfile

import megengine

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCES = [os.path.join(HERE, name) for name in (
    "conv.cpp", "optimizer.cpp", "pool.cpp", "batch_norm.cpp", "group_norm.cpp")]
BUILT_LIBRARY = os.path.join(sys.prefix, "lib", "libfcos_cpu_ops.so")
# the library a process loads: the one make setup builds, or another (FCOS_CPU_OPS_LIBRARY)
LIBRARY = os.environ.get("FCOS_CPU_OPS_LIBRARY", BUILT_LIBRARY)
MEGENGINE_CORE = os.path.join(os.path.dirname(os.path.abspath(megengine.__file__)), "core")
# MegEngine 1.13's wheels are built with the pre-C++11 string ABI: its custom-operator symbols
# (custom::op_insert(std::string, ...)) only link with it
MEGENGINE_ABI = 0
# OpenMP threads of oneDNN wait without spinning between regions: spinning threads took the
# cores MegEngine's own kernels run on (docs/megengine_notes.md, "oneDNN convolutions")
OPENMP_DEFAULTS = {"OMP_WAIT_POLICY": "PASSIVE"}
# MegEngine's CPU workers spin this many rounds on an empty queue before they sleep. MegEngine
# caches the value it reads only when it is not 0, so 0 is read again, with a warning, each
# time a worker starts; 1 round is as quiet and warned about once per process
MEGENGINE_WORKER_SPIN = "MGB_WORKER_MAX_SPIN"
QUIET_WORKER_SPIN = "1"


def quiet_megengine_workers():
    """Let MegEngine's CPU workers sleep as soon as their queue is empty (unless the user set
    MGB_WORKER_MAX_SPIN) instead of spinning ~5 ms: an operator of this library runs after
    the queue drains, and a spinning worker took one of its cores. Call it before MegEngine's
    first operator."""
    os.environ.setdefault(MEGENGINE_WORKER_SPIN, QUIET_WORKER_SPIN)


class BuildError(RuntimeError):
    """The library could not be built; the message is one line saying why."""


def onednn_prefix():
    """The folder holding oneDNN's include/ and lib/: this Python's environment (the PyPI
    wheels install there), else /usr (Debian's libdnnl-dev); None if neither has it."""
    for prefix in (sys.prefix, "/usr"):
        if os.path.exists(os.path.join(prefix, "include", "oneapi", "dnnl", "dnnl.hpp")):
            return prefix
    return None


def compile_command(output, sources=SOURCES, defines=(), abi=MEGENGINE_ABI, compiler="g++"):
    """The g++ command line that builds ``sources`` into ``output``."""
    prefix = onednn_prefix()
    if prefix is None:
        raise BuildError("oneDNN's headers are missing: install requirements.txt "
                         "(onednn-cpu-gomp, onednn-devel-cpu-gomp) or Debian's libdnnl-dev")
    onednn_lib = os.path.join(prefix, "lib")
    if prefix == "/usr":
        onednn_lib = os.path.join(prefix, "lib", "{}-linux-gnu".format(platform.machine()))
    megengine_lib = os.path.join(MEGENGINE_CORE, "lib")
    # -O3 -fno-math-errno: the optimizers' loops vectorized (sqrt among them); no FMA contraction,
    # so they round as MegEngine does (optimizer.cpp)
    return ([compiler, "-O3", "-fno-math-errno", "-ffp-contract=off", "-std=c++17", "-shared",
             "-fPIC", "-fopenmp", "-DNDEBUG",
             "-D_GLIBCXX_USE_CXX11_ABI={}".format(abi),
             "-I", os.path.join(MEGENGINE_CORE, "include"), "-I", os.path.join(prefix, "include")]
            + ["-D" + define for define in defines]
            + list(sources) + ["-o", output, "-L", megengine_lib, "-lmegengine_shared",
               "-L", onednn_lib, "-ldnnl",
               "-Wl,-rpath," + megengine_lib, "-Wl,-rpath," + onednn_lib])


def build(output=BUILT_LIBRARY, defines=(), abi=MEGENGINE_ABI):
    """Compile the sources into ``output`` (written beside it and moved in, so a failed build
    leaves any previous library whole); returns ``output``."""
    if shutil.which("g++") is None:
        raise BuildError("g++ is missing: install it (Debian: apt-get install g++), then run "
                         "make setup")
    directory = os.path.dirname(os.path.abspath(output))
    with tempfile.NamedTemporaryFile(dir=directory, suffix=".so", delete=False) as partial:
        pass
    try:
        result = subprocess.run(compile_command(partial.name, defines=defines, abi=abi),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                check=False)
        if result.returncode:
            lines = [line for line in result.stdout.splitlines() if "error" in line]
            raise BuildError("g++ failed to build {}: {}".format(
                output, (lines or result.stdout.splitlines() or ["no output"])[0]))
        os.replace(partial.name, output)
    finally:
        if os.path.exists(partial.name):
            os.remove(partial.name)
    return output


_loaded = {}  # path -> (ctypes handle, None) or (None, reason)


def load(path=LIBRARY):
    """The library at ``path`` loaded into MegEngine (once per process): its ctypes handle, or
    None with ``unavailable_reason(path)`` saying why not."""
    if path not in _loaded:
        _loaded[path] = _load(path)
    return _loaded[path][0]


def unavailable_reason(path=LIBRARY):
    """Why the package's CPU operators cannot run in this process, in a few words; None if
    they can."""
    load(path)
    return _loaded[path][1]


def _load(path):
    if platform.system() != "Linux" or platform.machine() != "x86_64":
        return None, "the package's CPU operators are built for x86-64 Linux only"
    if not os.path.exists(path):
        return None, "the package's CPU operators are not built ({} is missing: run make " \
            "setup)".format(path)
    for name, value in OPENMP_DEFAULTS.items():  # read once, when OpenMP starts
        os.environ.setdefault(name, value)
    from megengine.core.ops import custom  # pylint: disable=import-outside-toplevel
    try:
        custom.load(path)
        handle = ctypes.CDLL(path)
    except (OSError, RuntimeError) as error:
        return None, "the package's CPU operators failed to load: {}".format(
            str(error).strip().splitlines()[0])
    handle.fcos_onednn_isa.restype = ctypes.c_char_p
    return handle, None


def main():
    """Build the library for this environment, or exit with one line saying why not."""
    try:
        print("built", build())
    except BuildError as error:
        sys.exit("error: {}".format(error))
