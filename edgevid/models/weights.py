"""Resolving ``--weights``: an explicit path, 'random', the shipped reference weights, or the cache."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import CheckpointError
from ..paths import edgevid_home
from .registry import canonical_name, get_spec

SHIPPED = Path(__file__).parent / "weights"
CHECKPOINT_SUFFIXES = (".pth", ".pt", ".pyth", ".bin", ".ckpt")


@dataclass(frozen=True)
class WeightsChoice:
    path: Path | None  # None = random initialisation
    source: str  # 'random', 'reference' or the path

    @property
    def random(self) -> bool:
        return self.path is None


def cache_dir() -> Path:
    return edgevid_home() / "checkpoints"


def resolve_weights(model: str, weights: str | None) -> WeightsChoice:
    """Decide which weights ``model`` is built with; explain where to get them if there are none."""
    name = canonical_name(model)
    if weights == "random":
        return WeightsChoice(None, "random")
    if weights == "reference":
        shipped = SHIPPED / f"{name}.pt"
        if not shipped.is_file():
            raise CheckpointError(f"--weights reference: edgevid ships no reference weights for {name}; pass a checkpoint"
                                  " file or 'random'")
        return WeightsChoice(shipped, "reference")
    if weights:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise CheckpointError(f"--weights {weights}: no such file; pass a checkpoint file, 'reference' or 'random'")
        return WeightsChoice(path.resolve(), str(path))
    shipped = SHIPPED / f"{name}.pt"
    if shipped.is_file():
        return WeightsChoice(shipped, "reference")
    for suffix in CHECKPOINT_SUFFIXES:
        cached = cache_dir() / f"{name}{suffix}"
        if cached.is_file():
            return WeightsChoice(cached.resolve(), str(cached))
    url = get_spec(name).checkpoint_url
    where = f"download the official checkpoint from {url}" if url else "no official checkpoint is published"
    raise CheckpointError(
        f"no weights for {name}: {where} into {cache_dir()}/{name}.pth or pass --weights PATH"
        " (--weights random builds with random weights, for speed work only)"
    )
