"""Time the whole image-to-detections path of a detector, stage by stage."""
import os
import statistics
import time

import megengine as mge

from ..predictor import Predictor, process_inputs
from ..cpu.device import cpu_device

STAGES = ("preprocess", "network", "postprocess")
# fp32 FLOPs per cycle and core with two 256-bit FMA pipes (8 lanes x 2 FLOPs x 2), as on AMD
# Zen 4 (AVX-512 is split into 256-bit halves) and Intel cores without a second 512-bit FMA
FLOPS_PER_CYCLE = 32


def nominal_ghz(cpuinfo="/proc/cpuinfo"):
    """The clock Linux reports for the first core ("cpu MHz"), in GHz; None if unreadable."""
    if not os.path.exists(cpuinfo):
        return None
    with open(cpuinfo) as f:
        for line in f:
            if line.startswith("cpu MHz"):
                return float(line.split(":")[1]) / 1000
    return None


def machine_peak_gflops(cores=None, ghz=None, flops_per_cycle=FLOPS_PER_CYCLE):
    """Arithmetic limit cores x GHz x FLOPs/cycle, by default all cores at the reported clock.

    The reported clock is the nominal one and cores may run faster: on the 2-core AMD EPYC VM
    this was written on (2.6 GHz reported, 166 GFLOP/s), an FMA loop on both cores reached
    224 GFLOP/s, i.e. 3.5 GHz. Pass a measured ``ghz`` where that matters.
    """
    cores = os.cpu_count() if cores is None else cores
    ghz = nominal_ghz() if ghz is None else ghz
    return None if ghz is None else cores * ghz * flops_per_cycle


def use_eager_threads(threads):
    """Run eager and traced MegEngine on ``threads`` CPU threads (before building the model:
    tensors live on the default device)."""
    mge.set_default_device(cpu_device(threads))


def time_stages(predictor, img, short_size, max_size):
    """Seconds spent per stage on one image (H, W, 3 BGR): cv2 resize to the model input,
    the network (to numpy outputs), and threshold + NMS."""
    start = time.perf_counter()
    data, im_info = process_inputs(img, short_size, max_size)
    preprocessed = time.perf_counter()
    scores, boxes = predictor.engine.inference(data, im_info)
    inferred = time.perf_counter()
    predictor.detections(scores, boxes)
    finished = time.perf_counter()
    return dict(zip(STAGES, (preprocessed - start, inferred - preprocessed, finished - inferred)))


def benchmark(detector, img, short_size, max_size, runs, warmup=2):
    """Per-run stage times (seconds) of ``runs`` timed runs after ``warmup`` untimed ones
    (a traced function records the graph on its first call and compiles it on the second;
    Lite chooses algorithms and allocates memory on its first run)."""
    predictor = Predictor(detector)
    for _ in range(warmup):
        time_stages(predictor, img, short_size, max_size)
    return [time_stages(predictor, img, short_size, max_size) for _ in range(runs)]


def stage_ms(timings):
    """Milliseconds of each stage and of the total, run by run: {stage: [ms, ...]}."""
    runs = {stage: [1000 * t[stage] for t in timings] for stage in STAGES}
    runs["total"] = [1000 * sum(t.values()) for t in timings]
    return runs


def median_ms(timings):
    """Median milliseconds of each stage and of the per-run total over a list of timings."""
    return {stage: statistics.median(values) for stage, values in stage_ms(timings).items()}
