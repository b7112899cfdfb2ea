"""Class names of the label sets that models are trained on."""

from __future__ import annotations

from pathlib import Path

LABEL_DIR = Path(__file__).parent / "label_sets"


def labels_for(label_set: str, num_classes: int) -> list[str]:
    """The class names, or ``class_<i>`` placeholders when the set's names are not shipped."""
    if label_set == "synthmotion":
        from .data.synthmotion import CLASSES

        names = list(CLASSES)
    else:
        path = LABEL_DIR / f"{label_set}.txt"
        names = [line.strip() for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
    if len(names) != num_classes:
        names = [f"class_{i}" for i in range(num_classes)]
    return names
