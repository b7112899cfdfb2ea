"""Train a SynthMotion reference model and write its weights next to the model code.

    python scripts/train_reference.py --model x3d_synth

Reproduces edgevid/models/weights/<model>.pt (+ <model>.json with the command, data sizes,
seed and the measured val top-1). Decodes the H.264 training clips once, resampled to the model's
training fps by the clip sampler that eval and streaming use (the same decoder and resize as
inference), then trains on random temporal offsets and random crops.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from edgevid.data.manifest import load_dataset
from edgevid.data.sampling import protocol_train_indices
from edgevid.data.synthmotion import ensure_split
from edgevid.data.views import resampled_frames, test_views
from edgevid.models import create_model, get_spec
from edgevid.models.weights import SHIPPED


def decode_all(manifest: Path, spec) -> tuple[np.ndarray, np.ndarray]:
    dataset = load_dataset(manifest)
    frames = np.stack([resampled_frames(path, spec) for path, _ in dataset.items])
    labels = np.array([label for _, label in dataset.items])
    return frames, labels


def batch_clips(frames: np.ndarray, spec, rng: np.random.Generator) -> torch.Tensor:
    """Random temporal offset (the spec's sampling mode) and random crop; otherwise as at inference."""
    n, total, height, width, _ = frames.shape
    t, stride, crop = spec.clip.frames, spec.clip.stride, spec.clip.crop
    if spec.clip.sampling == "dense" and spec.protocol.spacing == "stride":  # one call, as the shipped weights were trained
        starts = rng.integers(0, max(total - (t - 1) * stride - 1, 0) + 1, size=n)
        indices = [np.minimum(start + np.arange(t) * stride, total - 1) for start in starts]
    else:
        indices = [protocol_train_indices(total, spec, rng) for _ in range(n)]
    tops = rng.integers(0, height - crop + 1, size=n)
    lefts = rng.integers(0, width - crop + 1, size=n)
    out = np.empty((n, t, crop, crop, 3), dtype=np.uint8)
    for i in range(n):
        out[i] = frames[i, indices[i], tops[i]:tops[i] + crop, lefts[i]:lefts[i] + crop]
    x = torch.from_numpy(out).permute(0, 4, 1, 2, 3).float().div_(255)
    mean = torch.tensor(spec.norm.mean).view(1, 3, 1, 1, 1)
    std = torch.tensor(spec.norm.std).view(1, 3, 1, 1, 1)
    return (x - mean) / std


def evaluate(model, manifest: Path, spec, device: str = "cpu") -> float:
    dataset = load_dataset(manifest)
    correct = 0
    model.eval()
    with torch.inference_mode():
        for path, label in dataset.items:
            logits = model(torch.from_numpy(test_views(path, spec)).to(device)).mean(0)
            correct += int(logits.argmax().item() == label)
    return 100.0 * correct / len(dataset.items)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="x3d_synth")
    parser.add_argument("--train-clips", type=int, default=1200)
    parser.add_argument("--val-clips", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--weight-decay", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=SHIPPED)
    parser.add_argument("--init", type=Path, help="continue from these weights (a second training phase)")
    parser.add_argument("--device", default="cpu", help="torch device to train on, e.g. cuda (weights are saved for CPU)")
    parser.add_argument("--eval-every", type=int, default=0, help="also print val top-1 every N epochs (monitoring only)")
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    spec = get_spec(args.model)
    started = time.time()
    frames, labels = decode_all(ensure_split("train", args.train_clips), spec)
    print(f"decoded {len(labels)} training clips {frames.shape} in {time.time() - started:.0f} s", flush=True)

    model = create_model(args.model, weights=str(args.init) if args.init else None).to(args.device).train()
    steps_per_epoch = len(labels) // args.batch
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr, total_steps=args.epochs * steps_per_epoch,
                                                    pct_start=0.15)
    for epoch in range(args.epochs):
        model.train()
        order = rng.permutation(len(labels))
        seen, correct, loss_sum = 0, 0, 0.0
        for step in range(steps_per_epoch):
            idx = np.sort(order[step * args.batch:(step + 1) * args.batch])
            x = batch_clips(frames[idx], spec, rng).to(args.device)
            y = torch.from_numpy(labels[idx]).to(args.device)
            logits = model(x)
            loss = F.cross_entropy(logits, y, label_smoothing=0.1)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            seen += len(idx)
            correct += int((logits.argmax(1) == y).sum())
            loss_sum += loss.item() * len(idx)
        print(f"epoch {epoch + 1}/{args.epochs}: loss {loss_sum / seen:.3f} train top-1 {100 * correct / seen:.1f}%"
              f" ({time.time() - started:.0f} s)", flush=True)
        if args.eval_every and (epoch + 1) % args.eval_every == 0 and epoch + 1 < args.epochs:
            print(f"  val top-1 {evaluate(model, ensure_split('val', args.val_clips), spec, args.device):.1f}%", flush=True)

    val_top1 = evaluate(model, ensure_split("val", args.val_clips), spec, args.device)
    print(f"val top-1 on {args.val_clips} fresh clips: {val_top1:.2f}%", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    torch.save(state, args.out / f"{args.model}.pt")
    command = "python scripts/train_reference.py " + " ".join(sys.argv[1:] if argv is None else argv)
    previous = json.loads(args.init.with_suffix(".json").read_text()) if args.init and args.init.with_suffix(".json").is_file() else None
    meta = {
        "model": args.model,
        "commands": (previous.get("commands") or [previous["command"]] if previous else []) + [command],
        "train_clips": args.train_clips, "epochs": args.epochs, "batch": args.batch, "lr": args.lr, "device": args.device,
        "seed": args.seed, "val_clips": args.val_clips, "val_top1": round(val_top1, 2),
        "train_seconds": round(time.time() - started), "torch": torch.__version__, "python": platform.python_version(),
    }
    (args.out / f"{args.model}.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(json.dumps(meta))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
