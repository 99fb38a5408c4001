"""MegEngine 1.13's event-polling thread, moved out of the way of the threads that compute.

The first operator MegEngine runs starts a thread named "CompNodeSync" (its imperative
runtime's ``CompNodeSyncManager``) that polls the events of every device and then waits 10
microseconds, for as long as the process lives: ~7-27% of a core when nothing runs, and a
thread the scheduler keeps preempting MKL's, Lite's and onnxruntime's threads for. At Linux's
``SCHED_IDLE`` it runs only on a core nobody else wants; its work (noticing finished events,
releasing memory held for them) only waits a little longer.
"""
import os
import time

import megengine as mge

SYNC_THREAD_NAME = "CompNodeSync"
NAMING_TIMEOUT_S = 2.0


def thread_ids(name, task_dir="/proc/self/task"):
    """Ids of this process's threads named ``name`` (Linux; [] where /proc is absent)."""
    if not os.path.isdir(task_dir):
        return []
    found = []
    for tid in os.listdir(task_dir):
        try:
            with open(os.path.join(task_dir, tid, "comm")) as f:
                if f.read().strip() == name:
                    found.append(int(tid))
        except OSError:  # the thread ended while we looked
            continue
    return found


def idle_sync_thread():
    """Start MegEngine's runtime if it is not running (one tiny operator), then move its
    polling thread to ``SCHED_IDLE``; returns the ids of the threads moved. Nothing is moved
    with a GPU (there the thread also releases device memory, which must not wait for idle
    CPUs) or where the OS has no ``SCHED_IDLE``."""
    if not hasattr(os, "SCHED_IDLE") or mge.is_cuda_available():
        return []
    (mge.tensor([0.0]) + 1).numpy()  # the thread starts with the first operator
    # and names itself once running, which can be a moment after the operator finished
    deadline = time.monotonic() + NAMING_TIMEOUT_S
    moved = thread_ids(SYNC_THREAD_NAME)
    while not moved and time.monotonic() < deadline:
        time.sleep(0.001)
        moved = thread_ids(SYNC_THREAD_NAME)
    for tid in moved:
        os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
    return moved
