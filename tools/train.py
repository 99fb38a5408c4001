"""Train FCOS from a config file on a COCO-format dataset (one or many GPUs, or the CPU).

    python tools/train.py -f official/vision/detection/configs/fcos_res50_coco_3x_800size.py \
        -d /data/datasets -n 8 -b 2
    python tools/train.py -f CONFIG -d DATA -o runs/a --log-every 50 --eval-every-epoch
    tensorboard --logdir runs        # the event files tensorboardX wrote into runs/a

The output folder gets epoch_<N>.pkl after every epoch, epoch_<N>_step_<S>.pkl every
--checkpoint-every steps (the last two kept; --resume continues from the newest that loads,
docs/training.md), metrics.jsonl (a record per logged step: losses, lr, images/s; with
--eval-every-epoch the COCO metrics of the config's test split as bbox/AP, ...), TensorBoard
event files and curves.png (docs/observing.md). The dataset is checked first, as
tools/browse_dataset.py --check does without decoding images.
"""
import argparse

from official.vision.detection.cpu import CONVOLUTIONS, TRAINING_PRECISIONS
from official.vision.detection.engine.trainer import TrainOptions, run_training
from official.vision.detection.cli import run_cli
from official.vision.detection.utils.config_file import config_name


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-f", "--file", required=True, help="config file exposing Net and Cfg")
    parser.add_argument("-d", "--dataset-dir", default="", help="base of relative dataset paths")
    parser.add_argument("-n", "--devices", type=int, default=1, help="GPUs per machine")
    parser.add_argument("-b", "--batch-size", type=int, default=2, help="images per device")
    parser.add_argument("-w", "--weights", help="backbone weights (e.g. ImageNet)")
    parser.add_argument("-o", "--output-dir", help="default: log-of-<config name>")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the newest readable checkpoint in the output dir, "
                             "mid-epoch from a step checkpoint")
    parser.add_argument("--checkpoint-every", type=int, metavar="STEPS",
                        help="steps between checkpoints within an epoch, 0 for none (default: "
                             "the config's checkpoint_interval, 1000)")
    parser.add_argument("--finetune", metavar="WEIGHTS",
                        help="start from a trained detector (file, URL, hub entry name or "
                        "checkpoint): matching tensors load, the rest are re-initialized")
    parser.add_argument("--workers", type=int, default=2, help="data-loading processes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2,
                        help="CPU threads of a single-process run on a machine without GPU")
    parser.add_argument("--step", choices=("eager", "traced"),
                        help="the training step: traced, one static graph (single-process CPU "
                             "runs, the default there), or eager, MegEngine's operators one by "
                             "one (the default on GPUs); docs/training.md")
    parser.add_argument("--precision", choices=TRAINING_PRECISIONS, default="fp32",
                        help="CPU: bf16 runs the convolutions in bfloat16 on oneDNN (CPUs with "
                             "AVX512-BF16 or AMX-BF16), weights, gradients and optimizer state "
                             "in float32; docs/precision.md")
    parser.add_argument("--convolutions", choices=CONVOLUTIONS, default="auto",
                        help="CPU: what runs the convolutions: oneDNN (built by make setup; "
                             "auto takes it where it loads, else MegEngine's with one log line) "
                             "or MegEngine's")
    parser.add_argument("--async-level", type=int, choices=(0, 1, 2),
                        help="MegEngine's async_level (default: 0 on the CPU, operator by "
                             "operator: the eager step at 1 and 2 now and then computed a step "
                             "wrong, and the traced step is one operator; else 2; "
                             "docs/megengine_notes.md)")
    parser.add_argument("--log-every", type=int, metavar="STEPS",
                        help="steps between log lines and metrics records (default: the "
                             "config's log_interval)")
    parser.add_argument("--eval-every-epoch", action="store_true",
                        help="evaluate the config's test split after every epoch (COCO "
                             "metrics into metrics.jsonl, TensorBoard and curves.png)")
    parser.add_argument("--num-machines", type=int, default=1)
    parser.add_argument("--machine-rank", type=int, default=0)
    parser.add_argument("--master-ip", default="localhost")
    parser.add_argument("--port", type=int, default=0, help="rendezvous port (0: any free one)")
    return parser.parse_args(argv)


def main():
    args = parse_args()
    options = TrainOptions(
        dataset_dir=args.dataset_dir,
        output_dir=args.output_dir or "log-of-{}".format(config_name(args.file)),
        batch_size=args.batch_size, backbone_weights=args.weights, resume=args.resume,
        finetune=args.finetune,
        num_workers=args.workers, seed=args.seed, threads=args.threads,
        step=args.step, async_level=args.async_level, log_every=args.log_every,
        convolutions=args.convolutions, precision=args.precision,
        checkpoint_every=args.checkpoint_every,
        eval_every_epoch=args.eval_every_epoch,
    )
    run_training(args.file, options, args.devices, args.num_machines, args.machine_rank,
                 args.master_ip, args.port)


if __name__ == "__main__":
    run_cli(main)
