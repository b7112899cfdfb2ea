"""Class names of the label sets that models are trained on, and custom label files.

Shipped sets (``edgevid/label_sets/<name>.txt``, one name a line, index = line): ``kinetics400``,
``kinetics600``, ``kinetics700`` and ``ssv2``, in the index order of the official checkpoints
(alphabetical: the order of MMAction2's ``label_map_k400/600/700.txt`` and ``sthv2/label_map.txt``
and of the datasets' own label files; ``tests/test_labels.py`` pins their digests).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from .errors import DataError

LABEL_DIR = Path(__file__).parent / "label_sets"
SHIPPED_SETS = ("kinetics400", "kinetics600", "kinetics700", "ssv2")


def shipped_labels(label_set: str) -> list[str] | None:
    """A shipped label set's names, or None."""
    if label_set == "synthmotion":
        from .data.synthmotion import CLASSES

        return list(CLASSES)
    path = LABEL_DIR / f"{label_set}.txt"
    if not path.is_file():
        return None
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def labels_for(label_set: str, num_classes: int) -> list[str]:
    """The class names, or ``class_<i>`` placeholders when the set's names are not shipped (or the
    head was resized to another number of classes)."""
    names = shipped_labels(label_set) or []
    if len(names) != num_classes:
        names = [f"class_{i}" for i in range(num_classes)]
    return names


def normalise_name(name: str) -> str:
    """Class-name key that ignores case, underscores, hyphens, spaces and brackets:
    ``Playing_Guitar``, ``playing guitar`` and ``playing-guitar`` are one class."""
    return re.sub(r"[\s_\-\[\]()'\".,]+", " ", name.casefold()).strip()


def read_label_file(path: str | Path, flag: str = "--labels") -> list[str]:
    """Class names from ``path``: a text file (one name a line, index = line) or JSON (a list of
    names, or ``{name: index}`` as SSv2's ``labels.json``). One-line errors for anything else."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{flag} {path}: file not found; pass a text file with one class name a line.")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise DataError(f"{flag} {path}: not UTF-8 text; save it as UTF-8 with one class name a line.") from None
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{flag} {path}: invalid JSON ({exc.msg}, line {exc.lineno}); fix it or use one name a line.") from None
        if isinstance(data, list) and all(isinstance(n, str) for n in data):
            names = [n.strip() for n in data]
        elif isinstance(data, dict) and all(isinstance(k, str) for k in data):
            try:
                order = {name: int(index) for name, index in data.items()}
            except (TypeError, ValueError):
                raise DataError(f"{flag} {path}: a JSON object must map names to integer indices.") from None
            if sorted(order.values()) != list(range(len(order))):
                raise DataError(f"{flag} {path}: the indices must be 0..{len(order) - 1}, each once.")
            names = [name.strip() for name, _ in sorted(order.items(), key=lambda kv: kv[1])]
        else:
            raise DataError(f"{flag} {path}: JSON must be a list of names or an object {{name: index}}.")
    else:
        names = [line.strip() for line in text.splitlines() if line.strip()]
    if not names or any(not n for n in names):
        raise DataError(f"{flag} {path}: lists no class names (or an empty one); write one name a line.")
    seen: dict[str, str] = {}
    for name in names:
        key = normalise_name(name)
        if key in seen:
            raise DataError(f"{flag} {path}: {seen[key]!r} and {name!r} name the same class; make every name unique.")
        seen[key] = name
    return names
