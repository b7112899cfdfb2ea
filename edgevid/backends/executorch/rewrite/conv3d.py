"""Conv3d as 2-D ops on a "frames" tensor: a clip (N, C, T, H, W) held as (N*T, C, H, W).

Two strategies for a temporal kernel kt > 1 (kt = 1 is one Conv2d over the frames):

* ``taps``: kt Conv2d taps, tap k on the frames shifted by k (zero frames padded in time), summed.
* ``channels`` (frames into channels): one Conv2d whose input stacks frames as channels. A dense
  conv (groups = 1) stacks the kt shifted frame sets (kt*C input channels, same FLOPs as taps, one
  GEMM). A grouped / depthwise conv stacks *all* T frames of each channel (the clip's own
  (N, C*T, H, W) layout) and uses a banded weight: T_out x T per group instead of kt, so it costs
  T/kt times the multiply-adds but is a single op with no shifted copies.

Every function takes an ``Ops`` emitter, so the same code runs eagerly on tensors and writes
graph nodes. Derived weights are computed here once, from the constant weights.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from .graph import Ops

aten = torch.ops.aten
STRATEGIES = ("taps", "channels")


def _triple(value) -> tuple[int, int, int]:
    value = list(value) if isinstance(value, (list, tuple)) else [value]
    return tuple(int(v) for v in (value * 3 if len(value) == 1 else value))  # type: ignore[return-value]


@dataclass(frozen=True)
class Conv3dSpec:
    """Geometry of one Conv3d applied to one input shape."""

    n: int
    c: int
    t: int
    h: int
    w: int
    out_channels: int
    kernel: tuple[int, int, int]
    stride: tuple[int, int, int] = (1, 1, 1)
    padding: tuple[int, int, int] = (0, 0, 0)
    dilation: tuple[int, int, int] = (1, 1, 1)
    groups: int = 1

    @classmethod
    def of(cls, input_shape, weight_shape, stride=1, padding=0, dilation=1, groups=1) -> "Conv3dSpec":
        n, c, t, h, w = (int(s) for s in input_shape)
        return cls(n, c, t, h, w, int(weight_shape[0]), _triple(weight_shape[2:]), _triple(stride),
                   _triple(padding), _triple(dilation), int(groups))

    def _out(self, size: int, axis: int) -> int:
        k, s, p, d = self.kernel[axis], self.stride[axis], self.padding[axis], self.dilation[axis]
        return (size + 2 * p - d * (k - 1) - 1) // s + 1

    @property
    def out_shape(self) -> tuple[int, int, int, int, int]:
        return (self.n, self.out_channels, self._out(self.t, 0), self._out(self.h, 1), self._out(self.w, 2))

    @property
    def t_out(self) -> int:
        return self._out(self.t, 0)

    @property
    def depthwise(self) -> bool:
        return self.groups == self.c and self.groups > 1

    @property
    def temporal(self) -> bool:
        """True when the temporal kernel mixes frames (the strategy matters)."""
        return len(self.live_taps()) > 1

    def tap_start(self, k: int) -> int:
        """Input frame that tap ``k`` reads for output frame 0 (may be negative: padding)."""
        return k * self.dilation[0] - self.padding[0]

    def live_taps(self) -> list[int]:
        """Taps that read at least one real (non-padding) frame."""
        last = (self.t_out - 1) * self.stride[0]
        return [k for k in range(self.kernel[0])
                if any(0 <= self.tap_start(k) + j <= self.t - 1 for j in range(0, last + 1, self.stride[0]))]

    def macs(self, strategy: str = "taps") -> int:
        n, o, t_out, h_out, w_out = self.out_shape
        per_output = (self.c // self.groups) * self.kernel[1] * self.kernel[2]
        taps = len(self.live_taps())
        if strategy == "channels" and self.groups > 1 and taps > 1:
            taps = self.t  # banded weight over all frames
        return n * o * t_out * h_out * w_out * per_output * taps

    def key(self) -> str:
        return "conv3d(" + ",".join(f"{k}={v}" for k, v in asdict(self).items()) + ")"


def fold_batch_norm(weight, bias, mean, var, gamma, beta, eps: float):
    """Conv weights/bias with an inference BatchNorm folded in (shapes of the conv)."""
    scale = (gamma if gamma is not None else torch.ones_like(var)) / torch.sqrt(var + eps)
    shift = (beta if beta is not None else torch.zeros_like(mean)) - mean * scale
    weight = weight * scale.reshape(-1, *([1] * (weight.dim() - 1)))
    bias = shift if bias is None else bias * scale + shift
    return weight, bias


# ---- frames helpers -------------------------------------------------------------------------


def to_frames(ops: Ops, x5, n: int, c: int, t: int, h: int, w: int):
    """(N, C, T, H, W) -> (N*T, C, H, W)."""
    if t > 1 and c > 1:
        x5 = ops.call(aten.permute.default, x5, [0, 2, 1, 3, 4])
    return ops.call(aten.reshape.default, x5, [n * t, c, h, w])


def from_frames(ops: Ops, f, n: int, c: int, t: int, h: int, w: int):
    """(N*T, C, H, W) -> (N, C, T, H, W)."""
    if t > 1 and c > 1:
        return ops.call(aten.permute.default, ops.call(aten.reshape.default, f, [n, t, c, h, w]), [0, 2, 1, 3, 4])
    return ops.call(aten.reshape.default, f, [n, c, t, h, w])


def _time_view(ops: Ops, f, n: int, t: int):
    """The frames with time on its own axis: itself (dim 0) for one clip, else (N, T, rest)."""
    if n == 1:
        return f, 0
    shape = ops.shape(f)
    return ops.call(aten.reshape.default, f, [n, t, *shape[1:]]), 1


def _frames_view(ops: Ops, x, n: int, dim: int):
    if dim == 0:
        return x
    shape = ops.shape(x)
    return ops.call(aten.reshape.default, x, [n * shape[1], *shape[2:]])


def cat_time(ops: Ops, parts: list, n: int):
    """Concatenate frames tensors along time, clip by clip."""
    if len(parts) == 1:
        return parts[0]
    if n == 1:
        return ops.call(aten.cat.default, parts, 0)
    views = [_time_view(ops, p, n, ops.shape(p)[0] // n)[0] for p in parts]
    return _frames_view(ops, ops.call(aten.cat.default, views, 1), n, 1)


def repeat_time(ops: Ops, f, n: int, count: int):
    """One frame per clip repeated ``count`` times (a broadcast add of zeros: XNNPACK has no tile)."""
    if count == 1:
        return f
    shape = ops.shape(f)
    zeros = torch.zeros(count, *([1] * (len(shape) - 1)))
    if n == 1:
        return ops.call(aten.add.Tensor, f, ops.const(zeros, "zeros"))
    x = ops.call(aten.reshape.default, f, [n, 1, *shape[1:]])
    x = ops.call(aten.add.Tensor, x, ops.const(zeros[None], "zeros"))
    return ops.call(aten.reshape.default, x, [n * count, *shape[1:]])


def time_ranges(t: int, t_out: int, stride: int, starts: list[int]) -> list[tuple[int, int, list[int]]]:
    """Split output frames into runs that read the same taps: ``(first, end, taps)``.

    Tap ``i`` reads input frame ``o * stride + starts[i]`` for output frame ``o``; a tap that falls
    into the zero padding is left out of that frame's sum, so no padding is ever built (XNNPACK's
    quantized constant pad rejects padding along the frames axis).
    """
    ranges: list[tuple[int, int, list[int]]] = []
    for o in range(t_out):
        taps = [i for i, s in enumerate(starts) if 0 <= o * stride + s < t]
        if ranges and ranges[-1][2] == taps and ranges[-1][1] == o:
            ranges[-1] = (ranges[-1][0], o + 1, taps)
        else:
            ranges.append((o, o + 1, taps))
    return ranges


def take_time(ops: Ops, f, n: int, t: int, start: int, step: int, count: int):
    """Frames ``start, start + step, ...`` (``count`` of them, all inside the clip) of each clip."""
    if start == 0 and step == 1 and count == t:
        return f
    x, dim = _time_view(ops, f, n, t)
    if step == 1 or count == 1:
        x = ops.call(aten.slice.Tensor, x, dim, start, start + count)
    else:
        x = ops.call(aten.cat.default, [ops.call(aten.slice.Tensor, x, dim, i, i + 1)
                                        for i in range(start, start + step * count, step)], dim)
    return _frames_view(ops, x, n, dim)


def mean_time(ops: Ops, f, n: int, t: int):
    """Average the frames of each clip: (N*T, C, H, W) -> (N, C, H, W)."""
    if t == 1:
        return f
    _, c, h, w = ops.shape(f)
    x = ops.call(aten.reshape.default, f, [n, t, c * h * w, 1])
    x = ops.call(aten.permute.default, x, [0, 2, 1, 3])  # (N, CHW, T, 1)
    x = ops.call(aten.mean.dim, x, [2, 3], True)
    return ops.call(aten.reshape.default, x, [n, c, h, w])


# ---- Conv3d ---------------------------------------------------------------------------------


def conv3d_frames(ops: Ops, f, spec: Conv3dSpec, weight: torch.Tensor, bias: torch.Tensor | None,
                  strategy: str = "taps"):
    """Conv3d on frames ``f`` (N*T, C, H, W) -> frames (N*T_out, O, H_out, W_out)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown Conv3d strategy {strategy!r}; choose {', '.join(STRATEGIES)}")
    spatial = dict(stride=list(spec.stride[1:]), padding=list(spec.padding[1:]), dilation=list(spec.dilation[1:]))
    taps = spec.live_taps() or [0]
    if strategy == "channels" and len(taps) > 1 and spec.groups > 1:
        return _banded(ops, f, spec, weight, bias, spatial)

    starts = [spec.tap_start(k) for k in taps]

    def conv(x, w, b):
        return ops.call(aten.conv2d.default, x, ops.const(w, "w"), None if b is None else ops.const(b, "b"),
                        spatial["stride"], spatial["padding"], spatial["dilation"], spec.groups)

    stacked_weights: dict[tuple[int, ...], torch.Tensor] = {}
    parts = []
    for first, end, live in time_ranges(spec.t, spec.t_out, spec.stride[0], starts):
        if not live:  # the kernel only covers padding: the bias (or zeros), from a zero-weight conv
            y = conv(take_time(ops, f, spec.n, spec.t, 0, 1, 1), torch.zeros_like(weight[:, :, 0]), bias)
            parts.append(repeat_time(ops, y, spec.n, end - first))
            continue
        inputs = [take_time(ops, f, spec.n, spec.t, first * spec.stride[0] + starts[i], spec.stride[0], end - first)
                  for i in live]
        if strategy == "channels" and len(live) > 1:  # dense: shifted frame sets stacked as channels
            key = tuple(live)
            if key not in stacked_weights:
                chosen = weight[:, :, [taps[i] for i in live]]
                stacked_weights[key] = chosen.permute(0, 2, 1, 3, 4).reshape(
                    spec.out_channels, len(live) * spec.c, *spec.kernel[1:])
            part = conv(ops.call(aten.cat.default, inputs, 1), stacked_weights[key], bias)
        else:
            part = None
            for j, (i, x) in enumerate(zip(live, inputs)):
                y = conv(x, weight[:, :, taps[i]], bias if j == 0 else None)
                part = y if part is None else ops.call(aten.add.Tensor, part, y)
        parts.append(part)
    return cat_time(ops, parts, spec.n)


def banded_weight(spec: Conv3dSpec, weight: torch.Tensor) -> torch.Tensor:
    """Grouped Conv2d weight over all frames: (O*T_out, C/g*T, kh, kw), zero off the band."""
    o, cg = spec.out_channels, spec.c // spec.groups
    t, t_out = spec.t, spec.t_out
    band = weight.new_zeros(o, t_out, cg, t, *spec.kernel[1:])
    for to in range(t_out):
        for k in range(spec.kernel[0]):
            ti = to * spec.stride[0] + spec.tap_start(k)
            if 0 <= ti < t:
                band[:, to, :, ti] = weight[:, :, k]
    return band.reshape(o * t_out, cg * t, *spec.kernel[1:])


def _banded(ops: Ops, f, spec: Conv3dSpec, weight, bias, spatial):
    n, t, t_out = spec.n, spec.t, spec.t_out
    x = from_frames(ops, f, n, spec.c, t, spec.h, spec.w)
    x = ops.call(aten.reshape.default, x, [n, spec.c * t, spec.h, spec.w])
    b = None if bias is None else ops.const(bias.repeat_interleave(t_out), "b")
    y = ops.call(aten.conv2d.default, x, ops.const(banded_weight(spec, weight), "w"), b,
                 spatial["stride"], spatial["padding"], spatial["dilation"], spec.groups)
    _, _, h_out, w_out = ops.shape(y)
    y = ops.call(aten.reshape.default, y, [n, spec.out_channels, t_out, h_out, w_out])
    return to_frames(ops, y, n, spec.out_channels, t_out, h_out, w_out)
