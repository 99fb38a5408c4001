"""Tools run in a Python where some packages cannot be imported, as on a machine that lacks
them (make demo installs requirements.txt only)."""
import os
import subprocess
import sys

from conftest import PROJECT_ROOT

# runs a tool in a Python where the named top-level packages cannot be imported
WITHOUT_PACKAGES = """
import runpy
import sys


class Uninstalled:
    def __init__(self, packages):
        self.packages = packages

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in self.packages:
            raise ModuleNotFoundError("No module named {!r}".format(name), name=name)
        return None


sys.meta_path.insert(0, Uninstalled(sys.argv[1].split(",")))
tool = sys.argv[2]
sys.argv = [tool] + sys.argv[3:]
runpy.run_path(tool, run_name="__main__")
"""


def run_without(packages, script, *args):
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_PACKAGES, packages,
         os.path.join(PROJECT_ROOT, "tools", script)] + [str(a) for a in args],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600, check=False)
