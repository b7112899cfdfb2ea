"""Train a SynthMotion reference model and write its weights next to the model code.

    python scripts/train_reference.py --model x3d_synth

Reproduces edgevid/models/weights/<model>.pt (+ <model>.json with the command, data sizes,
seed and the measured val top-1). Decodes the H.264 training clips once, resampled to the model's
training fps by the clip sampler that eval and streaming use (the same decoder and resize as
inference; ``--cache`` keeps them as a uint8 memmap under ``$EDGEVID_HOME/cache`` so
many thousands of clips fit), then trains on random temporal offsets and random crops.

Training-only aids (none of them is part of the model or its inference path):

* ``--aux-weight``: per-token motion targets from the generator's ground truth (the object's
  centre, size and angle per frame, ``synthmotion.clip_poses``). A linear head on every output
  token predicts the object's coverage of the token's receptive field and the mean optical flow
  there; it is dropped after training.
* ``--teacher``: distillation from a shipped reference model (KL at ``--distill-temp``), the
  teacher seeing the same clip resized to its own crop.
* ``--aux-spin``: a second per-token head predicting the object's coverage signed by its spin
  direction, the one motion a patch-level model confuses (rotate_cw vs rotate_ccw).
* ``--mirror``: left-right flips of a fraction of the clips, with left/right and cw/ccw labels
  swapped (a mirrored clockwise spin is an anticlockwise one), pairing each direction with its opposite.
* ``--warmup``, ``--clip-grad``, ``--label-smoothing``.

Each run appends its figures to the ``phases`` of ``<model>.json`` (continuing ``--init``'s).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from edgevid.data.manifest import load_dataset
from edgevid.data.sampling import protocol_train_indices
from edgevid.data.synthmotion import CLASSES, HEIGHT, WIDTH, clip_poses, ensure_split
from edgevid.data.views import resampled_frames, test_views
from edgevid.models import create_model, get_spec
from edgevid.models.weights import SHIPPED
from edgevid.paths import edgevid_home


def decode_all(manifest: Path, spec, cache: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frames uint8 ``[N, T, H, W, 3]``, labels and generator seeds of a split's clips.

    With ``cache`` the frames are decoded once into ``$EDGEVID_HOME/cache/train_reference/`` as a
    ``.npy`` memmap (written under a temporary name, then renamed) and read from there later."""
    dataset = load_dataset(manifest)
    labels = np.array([label for _, label in dataset.items])
    seeds = np.array([int(Path(path).stem) for path, _ in dataset.items])
    if not cache:
        return np.stack([resampled_frames(path, spec) for path, _ in dataset.items]), labels, seeds
    folder = edgevid_home() / "cache" / "train_reference"
    target = folder / f"{manifest.parent.name}-s{spec.clip.short_side}-{spec.training_fps:g}fps.npy"
    if not target.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        first = resampled_frames(dataset.items[0][0], spec)
        temp = target.with_name(f".{target.stem}.tmp-{os.getpid()}.npy")
        out = np.lib.format.open_memmap(temp, mode="w+", dtype=np.uint8, shape=(len(labels), *first.shape))
        for i, (path, _) in enumerate(dataset.items):
            out[i] = first if i == 0 else resampled_frames(path, spec)
        out.flush()
        del out
        temp.rename(target)
    return np.load(target, mmap_mode="r"), labels, seeds


_MIRROR_SWAPS = {"move_left": "move_right", "move_right": "move_left", "rotate_cw": "rotate_ccw", "rotate_ccw": "rotate_cw"}
MIRRORED = np.array([CLASSES.index(_MIRROR_SWAPS.get(name, name)) for name in CLASSES])  # labels of mirrored clips


# --- auxiliary per-token motion targets (training only) --------------------------------------


def token_points(model, spec, per_side: int = 4) -> np.ndarray:
    """Sample points ``[L, K, 3]`` (frame, y, x in crop pixels) inside each output token's receptive
    field, in the model's token order (without a class token)."""
    boxes = []  # (t0, kt, y0, ky, x0, kx) per token
    if hasattr(model, "patch_embed") and hasattr(model, "time_embed"):  # TimeSformer, tokens (h w t)
        size = model.patch_embed.proj.kernel_size[0]
        grid = model.patch_embed.grid_size
        boxes = [(t, 1, (hw // grid) * size, size, (hw % grid) * size, size)
                 for hw in range(grid * grid) for t in range(model.num_frames)]
    elif hasattr(model, "tube_embed"):  # TubeViT, tubes in order, each (t h w)
        for tube, (gt, gh, gw) in zip(model.config.tubes, model.config.grids):
            (kt, kh, kw), (st, sh, sw), (ot, oh, ow) = tube.kernel, tube.stride, tube.offset
            boxes += [(ot + a * st, kt, oh + b * sh, kh, ow + c * sw, kw)
                      for a in range(gt) for b in range(gh) for c in range(gw)]
    else:
        raise SystemExit(f"--aux-weight: no token geometry for {type(model).__name__}")
    frames = max(box[1] for box in boxes)
    cell = (np.arange(per_side) + 0.5) / per_side
    points = np.empty((len(boxes), frames * per_side * per_side, 3), np.float32)
    for i, (t0, kt, y0, ky, x0, kx) in enumerate(boxes):
        t = t0 + np.arange(frames) % kt
        y, x = y0 + cell * ky, x0 + cell * kx
        grid = np.stack(np.broadcast_arrays(t[:, None, None], y[None, :, None], x[None, None, :]), -1)
        points[i] = grid.reshape(-1, 3)
    return points


def motion_targets(poses, where, points: np.ndarray, frame_size: tuple[int, int]) -> torch.Tensor:
    """Per token ``[n, L, 3]``: the object's coverage of the token, and coverage x flow (x, y) in
    source pixels per source frame / 1.2 (a translation is ~1), from the generator's poses."""
    centers, radii, angles = poses  # [n, 32, 2], [n, 32], [n, 32]
    indices, tops, lefts = where
    height, width = frame_size
    sy, sx = height / HEIGHT, width / WIDTH
    n = len(indices)
    frame = indices[np.arange(n)[:, None, None], points[None, :, :, 0].astype(np.intp)]  # [n, L, K]
    rows = np.arange(n)[:, None, None]
    c = centers[rows, frame]  # [n, L, K, 2]
    r = radii[rows, frame]
    px = (points[None, :, :, 2] + lefts[:, None, None]) / sx
    py = (points[None, :, :, 1] + tops[:, None, None]) / sy
    dx, dy = px - c[..., 0], py - c[..., 1]
    inside = (dx * dx + dy * dy < (0.8 * r) ** 2).astype(np.float32)
    velocity = (centers[:, 1] - centers[:, 0])[:, None, None, :]  # constant per clip
    spin = (angles[:, 1] - angles[:, 0])[:, None, None]
    growth = np.log(radii[:, 1] / radii[:, 0])[:, None, None]
    fx = velocity[..., 0] - spin * dy + growth * dx
    fy = velocity[..., 1] + spin * dx + growth * dy
    target = np.stack((inside, inside * fx / 1.2, inside * fy / 1.2), -1).mean(2)
    return torch.from_numpy(target.astype(np.float32))


def spin_targets(motion: torch.Tensor, angles: np.ndarray) -> torch.Tensor:
    """Per token ``[n, L, 1]``: the object's coverage of the token (``motion_targets``' first channel)
    signed by its spin: +1 clockwise, -1 anticlockwise, 0 for the clips that do not rotate."""
    sign = np.sign(angles[:, 1] - angles[:, 0]).astype(np.float32)
    return motion[..., :1] * torch.from_numpy(sign).view(-1, 1, 1)


def token_grid(points: np.ndarray, frames: int, crop: int) -> torch.Tensor:
    """Each token's receptive-field centre as a ``grid_sample`` grid ``[1, L, 1, 1, 3]`` (x, y, t in [-1, 1])."""
    centre = points.mean(1)
    t = (centre[:, 0] + 0.5) / frames * 2 - 1
    y, x = centre[:, 1] / crop * 2 - 1, centre[:, 2] / crop * 2 - 1
    return torch.from_numpy(np.stack((x, y, t), -1).astype(np.float32)).view(1, -1, 1, 1, 3)


def teacher_features(features: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """A teacher feature map ``[n, C, T, H, W]`` read at every student token's centre: ``[n, L, C]``,
    layer-normalised over C (a scale-free target)."""
    sampled = F.grid_sample(features, grid.expand(len(features), -1, -1, -1, -1), align_corners=False)
    sampled = sampled.flatten(2).transpose(1, 2)
    return F.layer_norm(sampled, sampled.shape[-1:])


def sincos_init(model) -> None:
    """Start TimeSformer's learned position and time embeddings from sine-cosine tables at the scale
    of the patch embeddings (the default, N(0, 0.02) and zeros, leaves a fresh model nearly blind to
    where and, above all, when a patch is: it cannot tell a clip from its reverse). Training only:
    the embeddings stay ordinary learned parameters."""
    from edgevid.models.tubevit import sincos_1d

    if not hasattr(model, "time_embed"):
        raise SystemExit("--embed-init sincos: only for TimeSformer (TubeViT's position embedding is fixed sin-cos)")
    dim, grid = model.embed_dim, model.patch_embed.grid_size
    half = dim // 2
    rows = torch.arange(grid).repeat_interleave(grid)
    cols = torch.arange(grid).repeat(grid)
    with torch.no_grad():
        model.pos_embed[0, 1:] = torch.cat((sincos_1d(rows, half), sincos_1d(cols, dim - half)), 1).float()
        model.pos_embed[0, 0] = 0
        model.time_embed[0] = sincos_1d(torch.arange(model.num_frames), dim).float()


def forward_with_tokens(model, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``model(x)`` computed step by step, also returning the final normalised tokens (no class token)."""
    if hasattr(model, "patch_embed") and hasattr(model, "time_embed"):  # TimeSformer, divided attention
        x = model.embed(x)
        for block in model.blocks:
            x = block(x)
        x = model.norm(x)
        return model.head(x[:, 0]), x[:, 1:]
    if hasattr(model, "tube_embed"):
        x = model.tube_embed(x) + model.pos_embed
        if model.cls_token is not None:
            x = torch.cat((model.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        x = model.norm(model.blocks(x))
        logits = model.head(model.head_drop(model.pool(x)))
        return logits, x[:, int(model.cls_token is not None):]
    return model(x), None


def batch_clips(frames: np.ndarray, spec, rng: np.random.Generator, where: list | None = None,
                mirror: np.ndarray | None = None) -> torch.Tensor:
    """Random temporal offset (the spec's sampling mode) and random crop; otherwise as at inference.

    ``where``, when given, receives ``(indices [n, T], tops [n], lefts [n])`` of the cut clips;
    ``mirror`` (bool ``[n]``) flips those clips left-right (their labels are the caller's to swap)."""
    n, total, height, width, _ = frames.shape
    t, stride, crop = spec.clip.frames, spec.clip.stride, spec.clip.crop
    if spec.clip.sampling == "dense":  # drawn in one call, as the shipped weights were trained
        starts = rng.integers(0, max(total - (t - 1) * stride - 1, 0) + 1, size=n)
        indices = [np.minimum(start + np.arange(t) * stride, total - 1) for start in starts]
    else:
        indices = [protocol_train_indices(total, spec, rng) for _ in range(n)]
    tops = rng.integers(0, height - crop + 1, size=n)
    lefts = rng.integers(0, width - crop + 1, size=n)
    out = np.empty((n, t, crop, crop, 3), dtype=np.uint8)
    for i in range(n):
        out[i] = frames[i, indices[i], tops[i]:tops[i] + crop, lefts[i]:lefts[i] + crop]
    if where is not None:
        where.extend((np.stack(indices), tops, lefts))
    x = torch.from_numpy(out).permute(0, 4, 1, 2, 3).float().div_(255)
    if mirror is not None:
        x[torch.from_numpy(mirror)] = x[torch.from_numpy(mirror)].flip(-1)
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
    parser.add_argument("--warmup", type=float, default=0.15, help="fraction of the steps warming up (one-cycle)")
    parser.add_argument("--clip-grad", type=float, default=0.0, help="clip the gradient norm to this (0: off)")
    parser.add_argument("--label-smoothing", type=float, default=0.1)
    parser.add_argument("--aux-weight", type=float, default=0.0, help="weight of the per-token motion targets")
    parser.add_argument("--aux-spin", type=float, default=0.0,
                        help="weight of the per-token spin direction (the object's coverage x the sign of its spin)")
    parser.add_argument("--mirror", type=float, default=0.0,
                        help="flip this fraction of the training clips left-right, swapping left/right and cw/ccw labels")
    parser.add_argument("--teacher", help="distil from this shipped reference model, e.g. x3d_synth")
    parser.add_argument("--distill-weight", type=float, default=0.7, help="KL weight (CE gets 1 - this)")
    parser.add_argument("--distill-temp", type=float, default=2.0)
    parser.add_argument("--feature-distill", type=float, default=0.0,
                        help="with --teacher: weight of matching the output tokens (linear adapter) to the teacher's"
                             " --feature-stage map read at each token's centre")
    parser.add_argument("--feature-stage", type=int, default=2, help="index into the teacher's ``stages`` (X3D)")
    parser.add_argument("--keep-heads", action="store_true",
                        help="save the training-only heads (feature adapter, motion head) beside the weights as"
                             " <model>.heads.pt (not shipped) and start from --init's, so a new phase does not"
                             " re-learn them from random")
    parser.add_argument("--embed-init", choices=("default", "sincos"), default="default",
                        help="fresh TimeSformer: start the position/time embeddings from sine-cosine tables")
    parser.add_argument("--cache", action="store_true", help="decode the training clips once into a uint8 memmap")
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
    frames, labels, seeds = decode_all(ensure_split("train", args.train_clips), spec, args.cache)
    print(f"decoded {len(labels)} training clips {frames.shape} in {time.time() - started:.0f} s", flush=True)

    model = create_model(args.model, weights=str(args.init) if args.init else None).to(args.device).train()
    if args.embed_init == "sincos" and not args.init:
        sincos_init(model)
    params = list(model.parameters())
    aux_head = spin_head = points = poses = None
    if (args.aux_weight or args.aux_spin) and args.mirror:
        raise SystemExit("--mirror: the per-token targets (--aux-weight, --aux-spin) are not mirrored; use one of them")
    if args.aux_weight or args.aux_spin:
        points = token_points(model, spec)
        poses = [np.stack(part) for part in zip(*(clip_poses(int(seed))[1:] for seed in seeds))]
        with torch.no_grad():
            _, tokens = forward_with_tokens(model, torch.zeros(1, 3, spec.clip.frames, spec.clip.crop, spec.clip.crop))
        if tokens is None or tokens.shape[1] != len(points):
            raise SystemExit(f"--aux-weight / --aux-spin: {args.model} has no per-token output of {len(points)} tokens")
        if args.aux_weight:
            aux_head = torch.nn.Linear(tokens.shape[-1], 3).to(args.device)
            params += list(aux_head.parameters())
        if args.aux_spin:
            spin_head = torch.nn.Linear(tokens.shape[-1], 1).to(args.device)
            params += list(spin_head.parameters())
    teacher = teacher_spec = None
    if args.teacher:
        teacher_spec = get_spec(args.teacher)
        teacher = create_model(args.teacher, weights=str(SHIPPED / f"{args.teacher}.pt")).to(args.device).eval()
        teacher_top1 = evaluate(teacher, ensure_split("val", args.val_clips), teacher_spec, args.device)
        print(f"teacher {args.teacher}: val top-1 {teacher_top1:.1f}%", flush=True)
    adapter = grid = None
    taken: list = []
    if args.feature_distill:
        if teacher is None or not hasattr(teacher, "stages"):
            raise SystemExit("--feature-distill needs --teacher with feature stages (x3d_synth)")
        points = token_points(model, spec) if points is None else points
        grid = token_grid(points, spec.clip.frames, spec.clip.crop).to(args.device)
        teacher.stages[args.feature_stage].register_forward_hook(lambda module, inputs, output: taken.append(output))
        with torch.no_grad():
            _, tokens = forward_with_tokens(model, torch.zeros(1, 3, spec.clip.frames, spec.clip.crop, spec.clip.crop))
            teacher(torch.zeros(1, 3, spec.clip.frames, teacher_spec.clip.crop, teacher_spec.clip.crop))
        channels = taken.pop().shape[1]
        adapter = torch.nn.Linear(tokens.shape[-1], channels).to(args.device)
        params += list(adapter.parameters())

    heads = {"adapter": adapter, "aux_head": aux_head, "spin_head": spin_head}
    if args.keep_heads and args.init and args.init.with_suffix(".heads.pt").is_file():
        for key, state in torch.load(args.init.with_suffix(".heads.pt"), map_location=args.device).items():
            if heads.get(key) is not None:
                heads[key].load_state_dict(state)
                print(f"{key}: continued from {args.init.with_suffix('.heads.pt')}", flush=True)
    steps_per_epoch = len(labels) // args.batch
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr, total_steps=args.epochs * steps_per_epoch,
                                                    pct_start=args.warmup)
    history = []
    for epoch in range(args.epochs):
        model.train()
        order = rng.permutation(len(labels))
        seen, correct, loss_sum, aux_sum, hint_sum, spin_sum = 0, 0, 0.0, 0.0, 0.0, 0.0
        for step in range(steps_per_epoch):
            idx = np.sort(order[step * args.batch:(step + 1) * args.batch])
            where: list = []
            mirror = rng.random(len(idx)) < args.mirror if args.mirror else None
            x = batch_clips(frames[idx], spec, rng, where, mirror).to(args.device)
            y = torch.from_numpy(np.where(mirror, MIRRORED[labels[idx]], labels[idx]) if args.mirror
                                 else labels[idx]).to(args.device)
            logits, tokens = forward_with_tokens(model, x)
            loss = F.cross_entropy(logits, y, label_smoothing=args.label_smoothing)
            if teacher is not None:
                with torch.no_grad():
                    size = (spec.clip.frames, teacher_spec.clip.crop, teacher_spec.clip.crop)
                    soft = teacher(F.interpolate(x, size=size, mode="trilinear", align_corners=False))
                temp = args.distill_temp
                kl = F.kl_div(F.log_softmax(logits / temp, 1), F.log_softmax(soft / temp, 1), reduction="batchmean",
                              log_target=True) * temp * temp
                loss = (1 - args.distill_weight) * loss + args.distill_weight * kl
                if adapter is not None:
                    hint = F.mse_loss(adapter(tokens), teacher_features(taken.pop(), grid))
                    loss = loss + args.feature_distill * hint
                    hint_sum += hint.item() * len(idx)
            if poses is not None:
                target = motion_targets([p[idx] for p in poses], where, points, frames.shape[2:4]).to(args.device)
            if aux_head is not None:
                aux = F.mse_loss(aux_head(tokens), target) / target.var().clamp_min(1e-6)
                loss = loss + args.aux_weight * aux
                aux_sum += aux.item() * len(idx)
            if spin_head is not None:
                spun = spin_targets(target, poses[2][idx]).to(args.device)
                # scaled by the coverage's variance: a batch without a rotating clip has spin targets all 0
                spin = F.mse_loss(spin_head(tokens), spun) / target[..., :1].var().clamp_min(1e-6)
                loss = loss + args.aux_spin * spin
                spin_sum += spin.item() * len(idx)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if args.clip_grad:
                torch.nn.utils.clip_grad_norm_(params, args.clip_grad)
            optimizer.step()
            scheduler.step()
            seen += len(idx)
            correct += int((logits.argmax(1) == y).sum())
            loss_sum += loss.item() * len(idx)
        line = f"epoch {epoch + 1}/{args.epochs}: loss {loss_sum / seen:.3f} train top-1 {100 * correct / seen:.1f}%"
        if aux_head is not None:
            line += f" aux {aux_sum / seen:.3f}"
        if spin_head is not None:
            line += f" spin {spin_sum / seen:.3f}"
        if adapter is not None:
            line += f" features {hint_sum / seen:.3f}"
        print(line + f" ({time.time() - started:.0f} s)", flush=True)
        if args.eval_every and (epoch + 1) % args.eval_every == 0 and epoch + 1 < args.epochs:
            top1 = evaluate(model, ensure_split("val", args.val_clips), spec, args.device)
            history.append({"epoch": epoch + 1, "val_top1": round(top1, 2)})
            print(f"  val top-1 {top1:.1f}%", flush=True)

    val_top1 = evaluate(model, ensure_split("val", args.val_clips), spec, args.device)
    print(f"val top-1 on {args.val_clips} fresh clips: {val_top1:.2f}%", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    torch.save(state, args.out / f"{args.model}.pt")
    if args.keep_heads:
        torch.save({k: v.state_dict() for k, v in heads.items() if v is not None}, args.out / f"{args.model}.heads.pt")
    command = "python scripts/train_reference.py " + " ".join(sys.argv[1:] if argv is None else argv)
    previous = json.loads(args.init.with_suffix(".json").read_text()) if args.init and args.init.with_suffix(".json").is_file() else None
    seconds = round(time.time() - started)
    phase = {"epochs": args.epochs, "lr": args.lr, "train_clips": args.train_clips, "seed": args.seed,
             "aux_weight": args.aux_weight, "aux_spin": args.aux_spin, "mirror": args.mirror,
             "embed_init": args.embed_init, "teacher": args.teacher,
             "distill_weight": args.distill_weight if args.teacher else None,
             "feature_distill": args.feature_distill, "keep_heads": args.keep_heads, "val_top1": round(val_top1, 2),
             "val_history": history, "train_seconds": seconds}
    meta = {
        "model": args.model,
        "commands": (previous.get("commands") or [previous["command"]] if previous else []) + [command],
        "train_clips": args.train_clips, "epochs": args.epochs, "batch": args.batch, "lr": args.lr, "device": args.device,
        "seed": args.seed, "val_clips": args.val_clips, "val_top1": round(val_top1, 2),
        "train_seconds": seconds, "torch": torch.__version__, "python": platform.python_version(),
        "phases": (previous.get("phases", []) if previous else []) + [phase],
    }
    (args.out / f"{args.model}.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(json.dumps(meta))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
