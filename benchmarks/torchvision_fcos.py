"""torchvision FCOS on the CPU, as a reference for this package's MegEngine FCOS.

Runs in benchmarks/.venv (benchmarks/setup.sh); the fcos package itself never imports torch.

  inference: fcos_resnet50_fpn (random weights, 91 classes) on one image at torchvision's
             default 800/1333 size; times the whole model(images) call and, separately, the
             network alone (backbone + head on the already transformed batch).
  train:     FCOS with a ResNet-18 FPN of the demo config's widths (64-channel FPN and head,
             BN trainable) on synthetic batches; times forward+loss, backward and optimizer.

Timings on a shared 2-core machine are indicative only.
"""
import argparse
import resource
import statistics
import time

import numpy as np
import torch
from PIL import Image
from torchvision.models.detection import FCOS, fcos_resnet50_fpn
from torchvision.models import resnet18
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.ops.feature_pyramid_network import LastLevelP6P7


def timed(fn, warmup, n):
    """Run fn warmup times untimed, then n times; return the n durations in ms."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def run_inference(args):
    model = fcos_resnet50_fpn(weights=None, weights_backbone=None, num_classes=args.num_classes,
                              min_size=800, max_size=1333).eval()
    # torchvision detection models take a list of 3xHxW float RGB tensors in [0, 1]
    rgb = np.asarray(Image.open(args.image).convert("RGB"))
    images = [torch.from_numpy(rgb.copy()).permute(2, 0, 1).float().div_(255)]
    print(f"image {args.image}: {rgb.shape[1]}x{rgb.shape[0]} (WxH)")

    with torch.inference_mode():
        # full call: torchvision's resize + normalize, backbone, head, decoding and NMS
        full = timed(lambda: model(images), args.warmup, args.n)
        for i, t in enumerate(full):
            print(f"run {i}: {t:.1f} ms")

        # the network alone, on the batch that model.transform already resized and padded
        image_list, _ = model.transform(images)
        batch = image_list.tensors
        net = timed(lambda: model.head(list(model.backbone(batch).values())), args.warmup, args.n)
    print(f"network alone (backbone + head) on {tuple(batch.shape)} (NCHW): "
          f"median {statistics.median(net):.1f} ms, min {min(net):.1f} ms")
    print(f"full model(images): median {statistics.median(full):.1f} ms, min {min(full):.1f} ms")
    print(f"median_ms={statistics.median(full):.3f}")


def synthetic_batch(args, gen):
    """args.batch_size images of short_size x max_size with 1-4 boxes of at least 8 px each."""
    h, w = args.short_size, args.max_size
    images, targets = [], []
    for _ in range(args.batch_size):
        pixels = torch.randint(0, 256, (3, h, w), generator=gen, dtype=torch.uint8)
        images.append(pixels.float() / 255)
        k = int(torch.randint(1, 5, (1,), generator=gen))
        x1 = torch.randint(0, w - 8, (k,), generator=gen)
        y1 = torch.randint(0, h - 8, (k,), generator=gen)
        # x2 in [x1 + 8, w], y2 in [y1 + 8, h]
        x2 = x1 + 8 + (torch.rand(k, generator=gen) * (w - x1 - 7)).long().clamp(max=w - x1 - 8)
        y2 = y1 + 8 + (torch.rand(k, generator=gen) * (h - y1 - 7)).long().clamp(max=h - y1 - 8)
        # torchvision FCOS indexes its num_classes sigmoid logits with the label directly, so
        # labels are 0..num_classes-1 (a label == num_classes raises an IndexError in the loss);
        # this keeps the head at num_classes logits like the demo's.
        labels = torch.randint(0, args.num_classes, (k,), generator=gen)
        targets.append({"boxes": torch.stack([x1, y1, x2, y2], 1).float(), "labels": labels})
    return images, targets


def run_train(args):
    fpn = args.fpn_channels
    # What resnet_fpn_backbone(backbone_name="resnet18", weights=None, trainable_layers=5,
    # returned_layers=[2, 3, 4], extra_blocks=LastLevelP6P7(fpn, fpn)) builds, except that its
    # FPN width is hard-coded to 256: BackboneWithFPN takes the demo's width (the head's width
    # follows backbone.out_channels). BatchNorm2d, not torchvision's default FrozenBatchNorm2d,
    # since the demo trains BN from scratch; with trainable_layers=5 nothing would be frozen.
    # P3-P5 come from layers 2-4 (128/256/512 channels), P6/P7 from P5 (in == out channels).
    body = resnet18(weights=None, norm_layer=torch.nn.BatchNorm2d)
    backbone = BackboneWithFPN(body, return_layers={"layer2": "0", "layer3": "1", "layer4": "2"},
                               in_channels_list=[128, 256, 512], out_channels=fpn,
                               extra_blocks=LastLevelP6P7(fpn, fpn))
    model = FCOS(backbone, num_classes=args.num_classes,
                 min_size=args.short_size, max_size=args.max_size).train()
    optimizer = build_optimizer(model.parameters(), args.optimizer)
    images, targets = synthetic_batch(args, torch.Generator().manual_seed(0))
    params = sum(p.numel() for p in model.parameters()) / 1e6
    print(f"FCOS resnet18-FPN{fpn}, {args.num_classes} classes, batch {args.batch_size} of "
          f"{args.short_size}x{args.max_size}, {params:.2f}M params, {args.optimizer}")

    phases = {"forward+loss": [], "backward": [], "optimizer": []}

    def step(record):
        t0 = time.perf_counter()
        loss = sum(model(images, targets).values())
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        t3 = time.perf_counter()
        if record:
            for name, t in zip(phases, (t1 - t0, t2 - t1, t3 - t2)):
                phases[name].append(t * 1e3)
        return loss.item()

    for _ in range(args.warmup):
        step(False)
    steps = []
    for i in range(args.n):
        t0 = time.perf_counter()
        loss = step(True)
        steps.append((time.perf_counter() - t0) * 1e3)
        print(f"step {i}: {steps[-1]:.1f} ms, loss {loss:.3f}")
    print("median per phase: " + ", ".join(
        f"{k} {statistics.median(v):.1f} ms" for k, v in phases.items()))
    print(f"median step {statistics.median(steps):.1f} ms for {args.batch_size} images")
    print(f"train_ms_per_image={statistics.median(steps) / args.batch_size:.3f}")
    # ru_maxrss is in KiB on Linux
    print(f"peak_rss_mb={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.1f}")


def build_optimizer(params, name):
    """sgd: torchvision's reference recipe; adamw: the demo config's optimizer (its weight
    decay), in torch's default implementation or its fused CPU kernel (adamw-fused)."""
    if name == "sgd":
        return torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=1e-4)
    return torch.optim.AdamW(params, lr=1e-3, weight_decay=0.05,
                             fused=True if name == "adamw-fused" else None)


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=("inference", "train"), required=True)
    parser.add_argument("-i", "--image", help="image file (inference)")
    parser.add_argument("-n", type=int, help="timed runs (default: 5 inference, 20 train)")
    parser.add_argument("--warmup", type=int, help="untimed runs (default: 2 inference, 3 train)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--num-classes", type=int, help="default: 91 inference, 3 train")
    parser.add_argument("-b", "--batch-size", type=int, default=8, help="train")
    parser.add_argument("--short-size", type=int, default=96, help="train")
    parser.add_argument("--max-size", type=int, default=128, help="train")
    parser.add_argument("--fpn-channels", type=int, default=64, help="train")
    parser.add_argument("--optimizer", choices=("sgd", "adamw", "adamw-fused"), default="sgd",
                        help="train: adamw is the demo config's")
    args = parser.parse_args()

    inference = args.mode == "inference"
    if inference and not args.image:
        parser.error("--mode inference needs -i IMAGE")
    if args.n is None:
        args.n = 5 if inference else 20
    if args.warmup is None:
        args.warmup = 2 if inference else 3
    if args.num_classes is None:
        args.num_classes = 91 if inference else 3

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    (run_inference if inference else run_train)(args)


if __name__ == "__main__":
    main()
