"""The package as pip builds it: what an installed copy needs beside its Python modules."""
import shutil
import subprocess
import sys
import zipfile

from conftest import PROJECT_ROOT


def test_the_wheel_carries_the_operators_sources_and_the_page(tmp_path):
    source = tmp_path / "source"  # a copy: setuptools writes build/ into the tree it builds
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(PROJECT_ROOT + "/" + name, source / name)
    shutil.copytree(PROJECT_ROOT + "/official", source / "official",
                    ignore=shutil.ignore_patterns("__pycache__"))
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "-w", str(tmp_path / "wheel"), str(source)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    wheel, = (tmp_path / "wheel").glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    operators = "official/vision/detection/cpu/custom_ops/"
    for name in ("conv.cpp", "optimizer.cpp", "pool.cpp", "batch_norm.cpp", "group_norm.cpp",
                 "operator_common.h", "library.py"):
        assert operators + name in names, name
    assert "official/vision/detection/serve/page/index.html" in names
