"""What a step checkpoint of a config's model costs (docs/training.md, "Checkpoints and
resuming"): its size with the SGD momentum of every trained tensor, and the time
``save_checkpoint`` takes to write it atomically (fsync included) into --output-dir.

    .venv/bin/python benchmarks/checkpoint_write.py -o /tmp/checkpoints

One training step on a small synthetic image first fills the momentum, as in a real run. Each
write replaces the step checkpoints before the last two, as training does. Runs with the
project's .venv; put --output-dir on the disk the training output goes to.
"""
import argparse
import os
import statistics
import time

import numpy as np

from official.vision.detection.engine.checkpoint import save_checkpoint
from official.vision.detection.engine.trainer import TrainOptions, build_trainer
from official.vision.detection.utils.config_file import load_config_module

R50_CONFIG = "official/vision/detection/configs/fcos_res50_coco_3x_800size.py"


def trained_one_step(config_file, output_dir):
    """The trainer of the config's model (random weights) after one step on a 128 x 128 image
    with one box."""
    module = load_config_module(config_file)
    cfg = module.Cfg().update(backbone_pretrained=False)
    trainer = build_trainer(module.Net(cfg), cfg, TrainOptions("", output_dir, batch_size=1))
    trainer.run_step(dict(
        image=np.random.default_rng(0).uniform(0, 255, (1, 3, 128, 128)).astype("float32"),
        im_info=np.array([[128, 128, 128, 128, 1]], "float32"),
        gt_boxes=np.array([[[10, 10, 80, 90, 1]]], "float32")))
    return trainer


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-f", "--file", default=R50_CONFIG, help="config file")
    parser.add_argument("-o", "--output-dir", required=True)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    trainer = trained_one_step(args.file, args.output_dir)
    trainer.model.state_dict()  # waits for the step's queued operators
    seconds = []
    for step in range(1, args.repeats + 1):
        start = time.perf_counter()
        path = save_checkpoint(args.output_dir, trainer.model, trainer.optimizer, 0, step, step)
        seconds.append(time.perf_counter() - start)
    print("{}: {:.1f} MB, written in {} s, median {:.2f} s".format(
        os.path.basename(args.file), os.path.getsize(path) / 1e6,
        " ".join("{:.2f}".format(s) for s in seconds), statistics.median(seconds)))


if __name__ == "__main__":
    main()
