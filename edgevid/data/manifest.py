"""Labelled video datasets: a CSV manifest or a folder per class.

CSV (UTF-8): a header row with ``path`` and ``label`` columns; a label is a class name or an
integer class index (ASCII digits); relative paths resolve against the CSV's folder. A
``classes.txt`` beside it (one name a line) fixes the class order; without one, names are sorted,
and integer labels are the model's class indices (the classes are the distinct integers; the
harness checks each against the model's range).

Folder: ``root/<class>/*.{mp4,avi,mkv,webm,mov}``, classes sorted (or ordered by
``root/classes.txt``). A folder holding ``manifest.csv`` is read as that CSV.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from edgevid.errors import DataError

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".webm", ".mov")
CLASSES_FILE = "classes.txt"
MANIFEST_FILE = "manifest.csv"


@dataclass
class VideoDataset:
    items: list[tuple[Path, int]]
    classes: list[str]
    source: Path | None = None

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self):
        return iter(self.items)

    @property
    def labels(self) -> list[int]:
        return [label for _, label in self.items]


def _read_classes(path: Path) -> list[str] | None:
    file = path / CLASSES_FILE
    if not file.is_file():
        return None
    classes = [line.strip() for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not classes:
        raise DataError(f"{file}: lists no classes; write one class name a line or delete it.")
    if len(set(classes)) != len(classes):
        raise DataError(f"{file}: lists a class twice; make every line unique.")
    return classes


def _check_files(items: list[tuple[Path, int]], source: Path, root: Path) -> None:
    missing = [str(path) for path, _ in items if not path.is_file()]
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise DataError(
            f"{source}: {len(missing)} of {len(items)} video files not found: {shown}; "
            f"fix the paths (relative paths resolve against {root})."
        )


def is_index(label: str) -> bool:
    """An integer class index: ASCII digits only (``'²'.isdigit()`` is True but no int)."""
    return label.isascii() and label.isdigit() and len(label) <= 4000  # int() refuses longer strings


def _load_csv(path: Path) -> VideoDataset:
    if path.suffix.lower() in VIDEO_SUFFIXES:
        raise DataError(f"{path}: is a video, not a dataset; pass a folder per class (root/<class>/*.mp4) or a CSV"
                        " manifest with path,label rows.")
    try:
        with open(path, newline="", encoding="utf-8-sig") as file:
            rows = list(csv.reader(file))
    except UnicodeDecodeError:
        head = path.read_bytes()[:2]
        what = "UTF-16 text" if head in (b"\xff\xfe", b"\xfe\xff") else "not UTF-8 text"
        raise DataError(f"{path}: {what}; save the manifest as UTF-8 CSV (path,label rows).") from None
    except csv.Error as exc:
        raise DataError(f"{path}: not a CSV file ({exc}); write a 'path,label' header and one row per video.") from None
    if not rows:
        raise DataError(f"{path}: empty file; write a 'path,label' header and one row per video.")
    header = [name.strip().lower() for name in rows[0]]
    if "path" not in header or "label" not in header:
        raise DataError(f"{path}: first row must be a header with 'path' and 'label' columns, got {rows[0]}; add one.")
    path_col, label_col = header.index("path"), header.index("label")
    rows = [row for row in rows[1:] if any(cell.strip() for cell in row)]
    if not rows:
        raise DataError(f"{path}: lists no videos; add one 'path,label' row per video.")
    for line, row in enumerate(rows, start=2):
        if len(row) <= max(path_col, label_col):
            raise DataError(f"{path}: row {line} has {len(row)} columns, the header {len(header)}; fix that row.")
    root = path.parent
    labels = [row[label_col].strip() for row in rows]
    classes = _read_classes(root)
    if classes is None:
        if all(is_index(label) for label in labels):
            classes = [str(i) for i in sorted({int(label) for label in labels})]  # only the ones used: never range(max)
        elif any(is_index(label) for label in labels):
            raise DataError(f"{path}: mixes class names and indices; use one, or add {root / CLASSES_FILE}.")
        else:
            classes = sorted(set(labels))
    index = {name: i for i, name in enumerate(classes)}
    items = []
    for line, (row, label) in enumerate(zip(rows, labels), start=2):
        if label in index:
            number = index[label]
        elif is_index(label) and int(label) < len(classes):
            number = int(label)
        else:
            listed = (root / CLASSES_FILE).is_file()
            where = f"the {len(classes)} classes of {root / CLASSES_FILE}" if listed else "the classes"
            raise DataError(f"{path}: row {line} has unknown label {label!r}, not among {where}; fix the label.")
        items.append((root / row[path_col].strip(), number))
    _check_files(items, path, root)
    return VideoDataset(items, classes, path)


def _load_folder(root: Path) -> VideoDataset:
    folders = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    classes = _read_classes(root) or folders
    unknown = sorted(set(folders) - set(classes))
    if unknown:
        raise DataError(f"{root}: class folders {unknown} are not in {root / CLASSES_FILE}; add them there.")
    items = [
        (video, label)
        for label, name in enumerate(classes)
        if (root / name).is_dir()
        for video in sorted((root / name).iterdir())
        if video.suffix.lower() in VIDEO_SUFFIXES and video.is_file()
    ]
    if not items:
        raise DataError(
            f"{root}: no videos found; lay out root/<class>/*.mp4 (or .avi .mkv .webm .mov) or pass a CSV manifest."
        )
    return VideoDataset(items, classes, root)


def load_dataset(path: str | Path) -> VideoDataset:
    """Read a CSV manifest, a folder holding ``manifest.csv``, or a folder per class."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: dataset not found; pass a CSV manifest or a folder per class.")
    if path.is_dir():
        return _load_csv(path / MANIFEST_FILE) if (path / MANIFEST_FILE).is_file() else _load_folder(path)
    return _load_csv(path)


def write_csv(dataset: VideoDataset, path: str | Path) -> Path:
    """Write ``path,label`` rows (class names; paths relative to the CSV's folder where they lie
    below it) and ``classes.txt`` beside it, so that ``load_dataset`` gives the dataset back."""
    path = Path(path)
    root = path.parent.resolve()
    with open(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["path", "label"])
        for video, label in dataset.items:
            video = Path(video).resolve()
            shown = video.relative_to(root) if video.is_relative_to(root) else video
            writer.writerow([shown.as_posix(), dataset.classes[label]])
    (path.parent / CLASSES_FILE).write_text("".join(f"{name}\n" for name in dataset.classes), encoding="utf-8")
    return path
