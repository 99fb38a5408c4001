import json
import os
import stat

import numpy as np
import pytest
import megengine as mge

from official.vision.detection.utils.files import atomic_target, save_atomic, write_json_atomic


def test_failed_json_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = str(tmp_path / "results.json")
    write_json_atomic({"images": [1]}, path)
    with pytest.raises(TypeError):
        write_json_atomic({"images": [2, object()]}, path)  # fails half-way through
    with open(path) as f:
        assert json.load(f) == {"images": [1]}
    assert os.listdir(str(tmp_path)) == ["results.json"]


def test_interrupted_save_keeps_the_old_checkpoint(tmp_path):
    path = str(tmp_path / "epoch_0.pkl")
    save_atomic({"epoch": 0}, path)
    with pytest.raises(KeyboardInterrupt):
        with atomic_target(path) as temporary:
            mge.save({"epoch": 1}, temporary)
            raise KeyboardInterrupt
    assert mge.load(path) == {"epoch": 0}
    assert os.listdir(str(tmp_path)) == ["epoch_0.pkl"]


def test_written_files_follow_the_umask_not_mkstemp(tmp_path):
    path = str(tmp_path / "w.pkl")
    save_atomic({"w": np.zeros(2)}, path)
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~mask
