"""Atomic file output: a crash never leaves a half-written checkpoint or result file."""
import contextlib
import json
import os
import tempfile

import megengine as mge


@contextlib.contextmanager
def atomic_target(path):
    """Yield a temporary path beside ``path``; it replaces ``path`` only if the block succeeds."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=".tmp-", suffix="-" + os.path.basename(path),
                                         dir=directory)
    os.close(handle)
    try:
        yield temporary
        publish(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def publish(temporary, path):
    """Move a finished file written beside ``path`` (same file system) into place at once,
    readable as the umask allows. Its data reach the disk before the rename does, and the
    rename before this returns: after a power loss, ``path`` is the old file or the new one,
    never a new name over data that were still in the page cache (empty or cut short)."""
    os.chmod(temporary, 0o666 & ~current_umask())  # mkstemp files are private; outputs are not
    _sync(temporary)
    os.replace(temporary, path)
    _sync(os.path.dirname(os.path.abspath(path)))


def _sync(path):
    handle = os.open(path, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def current_umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_atomic(obj, path):
    """megengine.save to ``path`` atomically."""
    with atomic_target(path) as temporary:
        mge.save(obj, temporary)


def write_json_atomic(obj, path):
    with atomic_target(path) as temporary:
        with open(temporary, "w") as f:
            json.dump(obj, f, separators=(",", ":"))


def write_jsonl_atomic(objects, path):
    """One JSON object per line (JSON Lines) to ``path`` atomically."""
    with atomic_target(path) as temporary:
        with open(temporary, "w") as f:
            f.writelines(json_line(obj) for obj in objects)


def json_line(obj):
    """``obj`` as one line of a JSON Lines file, newline included."""
    return json.dumps(obj, separators=(",", ":")) + "\n"
