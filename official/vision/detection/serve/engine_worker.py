"""One engine on one thread, fed by a bounded queue.

A request takes a place when it arrives (``admit``), before its body is read, and gives it back
when the engine starts on its image or when it ends early; so the requests held in memory are
bounded by ``capacity``, and the one over it is refused at once (``QueueFull``, the server's
503), never left to wait. Without a capacity given, it is chosen after warm-up from the
engine's time and the deadline, so that a full queue is served within the deadline
(``queue_capacity``). Reading, decoding, resizing and NMS run on the request's side: the
engine's thread runs only the network, on up to ``max_batch`` queued images of one padded size
at a time, which gives the results of one image at a time (``boxes.group_by_padded_size``). A
job whose client has gone or whose deadline has passed is dropped before it runs.

MegEngine runs its eager and traced models on the main thread of a process only (on another:
"assertion `depth < context.transformations.size()' failed"), so ``run`` is called by the
thread that is to run the engine: tools/serve.py's main thread, the HTTP server having a thread
of its own. The file engines (Lite, ONNX Runtime, OpenVINO) run on any thread: ``start`` gives
them one.
"""
import collections
import math
import threading
import time

import megengine as mge
import numpy as np

from ..boxes import padded_side
from ..data.collate import stack_padded
from ..predictor import as_engine, process_inputs

logger = mge.get_logger(__name__)

# states of a job
ADMITTED, QUEUED, RUNNING, FINISHED, DROPPED = "admitted", "queued", "running", "finished", \
    "dropped"
# weight of the newest batch in the running mean of the engine's time, which estimates the
# wait a refused client is told to give (Retry-After)
ENGINE_TIME_SMOOTHING = 0.2
# the share of the deadline a full queue's forwards may take when the capacity is chosen from
# the engine's time; the rest is for reading, decoding and NMS, and for forwards slower than at
# warm-up (the decoding of other requests takes the engine's cores)
DEADLINE_SHARE_OF_FORWARDS = 0.75
# the most places a chosen capacity has (the former fixed default): each place may hold a body
# of up to --max-body-mb while it is read
MAX_CHOSEN_CAPACITY = 16


def queue_capacity(deadline_seconds, forward_seconds, max_batch):
    """Places for which the last request admitted to a full queue is answered within the
    deadline: it waits for the batch running (up to ``max_batch`` images, none holding a place)
    and the ``capacity - 1`` ahead of it, then for its own forward, each image taking up to
    ``forward_seconds``. At least 1, at most MAX_CHOSEN_CAPACITY."""
    forwards = math.floor(DEADLINE_SHARE_OF_FORWARDS * deadline_seconds / forward_seconds)
    return max(1, min(MAX_CHOSEN_CAPACITY, forwards - max_batch))


class QueueFull(Exception):
    """Every place of the queue is taken."""


class JobDropped(Exception):
    """A job that will not run: ``reason`` is "deadline" or "shutdown"."""

    def __init__(self, reason):
        super().__init__(reason)
        self.reason = reason


class Job:
    """One image on its way through the queue. ``on_done(outcome)`` is called once, on the
    engine's thread (or the one stopping it), with (scores [P, K], boxes [P, 4], engine
    seconds, batch size) or an exception; never after the job was withdrawn."""

    def __init__(self, deadline, on_done):
        self.deadline = deadline  # time.monotonic() seconds
        self.on_done = on_done
        self.state = ADMITTED
        self.data = self.im_info = None

    @property
    def padded_size(self):
        return tuple(padded_side(side) for side in self.data.shape[2:])


class EngineWorker:
    """``detector`` (any engine of deploy/detector.py, or the eager model) on one thread,
    ``capacity`` places in its queue (None: chosen at warm-up, ``queue_capacity``), each
    request answered within ``deadline_seconds`` of its arrival or dropped."""

    def __init__(self, detector, deadline_seconds, capacity=None, max_batch=1, metrics=None,
                 warmup_runs=2):
        self.engine = as_engine(detector)
        self.cfg = self.engine.cfg
        self.capacity, self.max_batch = capacity, max_batch
        self.deadline_seconds = deadline_seconds
        self.metrics = metrics
        self.warmup_runs = warmup_runs
        self.ready = threading.Event()
        self.failure = None  # why ``run`` ended early, if it did
        self.engine_seconds = None  # running mean per batch, once a batch has run
        self._lock = threading.Condition()
        self._queue = collections.deque()
        self._places_taken = 0
        self._stopping = False
        self._thread = None

    def start(self):
        """``run`` on a thread of its own (file engines only: see above)."""
        self._thread = threading.Thread(target=self.run, name="fcos-engine", daemon=True)
        self._thread.start()

    def stop(self, timeout=None):
        """Ends ``run`` after the batch running now; queued jobs are dropped ("shutdown").
        Waits up to ``timeout`` seconds for the thread of ``start``."""
        with self._lock:
            self._stopping = True
            dropped = list(self._queue)
            self._queue.clear()
            for job in dropped:
                self._release(job, DROPPED)
            self._lock.notify_all()
        for job in dropped:
            job.on_done(JobDropped("shutdown"))
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def places_taken(self):
        return self._places_taken

    def admit(self, deadline, on_done):
        """A new Job holding a place, or QueueFull."""
        with self._lock:
            if self._stopping or self._places_taken >= self.capacity:
                raise QueueFull()
            self._places_taken += 1
            self._gauge()
        return Job(deadline, on_done)

    def submit(self, job, data, im_info):
        """Queue an admitted job's network input: data [1, 3, h, w], im_info [1, 4]."""
        with self._lock:
            if job.state != ADMITTED:
                return
            job.data, job.im_info = data, im_info
            job.state = QUEUED
            self._queue.append(job)
            self._lock.notify()

    def withdraw(self, job):
        """The request is over (answered, failed or its client gone): a job not yet running
        leaves the queue and gives its place back, a running one's result is thrown away.
        Returns True when the job had not run."""
        with self._lock:
            if job.state in (FINISHED, DROPPED):
                return False
            had_run = job.state == RUNNING
            if job.state == QUEUED:
                self._queue.remove(job)
            self._release(job, DROPPED)
            return not had_run

    def expected_wait(self):
        """Seconds until a new job would start, from the queue and the engine's recent time."""
        per_batch = self.engine_seconds or 1.0
        return per_batch * (1 + len(self._queue) / self.max_batch)

    def _release(self, job, state):
        # a place is held from admit until the job runs or leaves (under the lock)
        if job.state in (ADMITTED, QUEUED):
            self._places_taken -= 1
            self._gauge()
        job.state = state

    def _gauge(self):
        if self.metrics:
            self.metrics.queue_depth.set(self._places_taken)

    def _take_batch(self):
        """The oldest queued job and the next ones of its padded size, up to max_batch; jobs
        past their deadline are dropped. Empty once stopping."""
        with self._lock:
            while not self._queue and not self._stopping:
                self._lock.wait()
            if self._stopping:
                return [], []
            first = self._queue.popleft()
            batch = [first]
            for job in list(self._queue):
                if len(batch) == self.max_batch:
                    break
                if job.padded_size == first.padded_size:
                    self._queue.remove(job)
                    batch.append(job)
            now = time.monotonic()
            late = [job for job in batch if job.deadline <= now]
            for job in batch:
                self._release(job, DROPPED if job in late else RUNNING)
            return [job for job in batch if job not in late], late

    def run(self):
        """Warm the engine up, then run batches until ``stop``."""
        try:
            self._warm_up()
        except Exception as error:  # /livez and /readyz say so
            logger.exception("the engine failed while warming up")
            self.failure = "the engine failed while warming up: {}: {}".format(
                type(error).__name__, " ".join(str(error).split()))
            return
        while True:
            batch, late = self._take_batch()
            if not batch and not late:  # stopping
                return
            for job in late:
                if self.metrics:
                    self.metrics.dropped.labels("deadline").inc()
                job.on_done(JobDropped("deadline"))
            if batch:
                self._run_batch(batch)

    def _warm_up(self):
        """Forwards of the largest inputs the config's test size gives, in both orientations
        (short x max and max x short): the first runs of an engine compile, and allocate for
        the largest input what smaller ones reuse, so the memory after warm-up is the memory
        of a server that has seen every size (docs/benchmarks.md, "Serving"). The slower
        orientation's last run is the time of one image at most, which sizes the queue."""
        short, longest = self.cfg.test_image_short_size, self.cfg.test_image_max_size
        started = time.perf_counter()
        forward_seconds = 0.0
        for shape in ((short, longest, 3), (longest, short, 3)):
            data, im_info = process_inputs(np.zeros(shape, np.uint8), short, longest)
            for _ in range(self.warmup_runs):
                run_started = time.perf_counter()
                self.engine.inference(data, im_info)
            forward_seconds = max(forward_seconds, time.perf_counter() - run_started)
        logger.info("engine warmed up: %d runs in %.2f s", 2 * self.warmup_runs,
                    time.perf_counter() - started)
        self.engine_seconds = forward_seconds  # Retry-After's estimate until a request runs
        self._size_queue(forward_seconds, (short, longest))
        self.ready.set()

    def _size_queue(self, forward_seconds, largest):
        """Choose the capacity when none was given, and say in one line what a full queue
        asks of the deadline."""
        chosen = self.capacity is None
        if chosen:
            self.capacity = queue_capacity(self.deadline_seconds, forward_seconds,
                                           self.max_batch)
        full_queue = (self.capacity + self.max_batch) * forward_seconds
        line = "queue capacity {} ({}): a full queue takes ~{:.1f} s of forwards at {:.3f} s " \
            "per image (the largest input, {} x {}, at warm-up)".format(
                self.capacity, "chosen from the engine's time" if chosen else "given",
                full_queue, forward_seconds, *largest)
        if full_queue > self.deadline_seconds:
            logger.warning("%s, over the deadline of %g s: requests at the end of a full queue "
                           "will be answered 504", line, self.deadline_seconds)
        else:
            logger.info("%s, within the deadline of %g s", line, self.deadline_seconds)

    def _run_batch(self, batch):
        started = time.perf_counter()
        try:
            scores, boxes = self.engine.inference(stack_padded([job.data[0] for job in batch]),
                                                  np.concatenate([job.im_info for job in batch]))
            outcomes = [(scores[row], boxes[row]) for row in range(len(batch))]
        except Exception as error:  # the engine's failure answers these requests, not the rest
            logger.exception("the engine failed on a batch of %d", len(batch))
            outcomes = [error] * len(batch)
        seconds = time.perf_counter() - started
        self.engine_seconds = seconds if self.engine_seconds is None else (
            ENGINE_TIME_SMOOTHING * seconds + (1 - ENGINE_TIME_SMOOTHING) * self.engine_seconds)
        if self.metrics:
            self.metrics.observe_batch(len(batch), seconds)
        with self._lock:
            kept = [(job, outcome) for job, outcome in zip(batch, outcomes)
                    if job.state == RUNNING]
            for job, _ in kept:
                job.state = FINISHED
        for job, outcome in kept:
            job.on_done(outcome if isinstance(outcome, Exception)
                        else outcome + (seconds, len(batch)))
