"""What MegEngine's event-polling thread costs the engines that run in the same process.

    .venv/bin/python benchmarks/sync_thread_cost.py [-f CONFIG] [--engine onnxruntime] [--rounds 3]

Builds the config's detector (random weights) on one engine, as tools/benchmark.py does (which
moves MegEngine's CompNodeSync thread to SCHED_IDLE), then times the network at the config's
test size in alternated rounds: the thread put back to normal priority (SCHED_OTHER, as
MegEngine leaves it), then idle again. Prints each round's median milliseconds and the CPU.
"""
import argparse
import os
import platform
import subprocess

from official.vision.detection.cpu.sync_thread import SYNC_THREAD_NAME, thread_ids
from official.vision.detection.deploy.detector import build_detector
from official.vision.detection.deploy.engine_choice import network_ms
from official.vision.detection.deploy.trace import representative_inputs
from official.vision.detection.utils.config_file import load_config_module

DEFAULT_CONFIG = "official/vision/detection/configs/fcos_res50_coco_3x_800size.py"
POLICIES = {"normal": os.SCHED_OTHER, "idle": os.SCHED_IDLE}


def cpu_description():
    fields = dict(line.split(":", 1) for line in subprocess.run(
        ["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines() if ":" in line)
    return "{}, cpu family {}, model {}".format(*(fields.get(key, "?").strip() for key in (
        "Model name", "CPU family", "Model")))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-f", "--file", default=DEFAULT_CONFIG)
    parser.add_argument("--engine", default="onnxruntime")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    detector = build_detector(load_config_module(args.file), engine=args.engine)
    image, im_info = representative_inputs(detector.cfg)
    threads = thread_ids(SYNC_THREAD_NAME)
    print("{}; {} {}x{}; {} polling thread(s); python {}".format(
        cpu_description(), args.engine, image.shape[2], image.shape[3], len(threads),
        platform.python_version()))
    for round_number in range(args.rounds):
        for name, policy in POLICIES.items():
            for tid in threads:
                os.sched_setscheduler(tid, policy, os.sched_param(0))
            print("round {} {}: {:.1f} ms".format(round_number, name,
                                                  network_ms(detector, image, im_info)))


if __name__ == "__main__":
    main()
