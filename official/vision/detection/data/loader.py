"""Batches built in worker processes, in order, with a bounded number prepared ahead."""
import collections
import multiprocessing

import cv2

_worker_make_batch = None  # set in each worker by _start_worker


def _start_worker(make_batch):
    global _worker_make_batch  # pylint: disable=global-statement
    _worker_make_batch = make_batch
    cv2.setNumThreads(0)  # OpenCV's own thread pool is not fork-safe


def _run(task):
    return _worker_make_batch(task)


class BatchLoader:
    """``for batch in loader.iterate(tasks)`` yields ``make_batch(task)`` in task order.

    With ``num_workers`` > 0, forked workers prepare up to ``2 * num_workers`` batches ahead;
    an error in a worker (e.g. an unreadable image) is raised in the caller.
    """

    def __init__(self, make_batch, num_workers=2):
        self.make_batch = make_batch
        self.num_workers = num_workers
        self._pool = None

    def __enter__(self):
        if self.num_workers > 0:
            self._pool = multiprocessing.get_context("fork").Pool(
                self.num_workers, initializer=_start_worker, initargs=(self.make_batch,))
        return self

    def __exit__(self, *exc):
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None

    def iterate(self, tasks):
        if self._pool is None:
            yield from map(self.make_batch, tasks)
            return
        pending = collections.deque()
        for task in tasks:
            pending.append(self._pool.apply_async(_run, (task,)))
            if len(pending) > 2 * self.num_workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()
