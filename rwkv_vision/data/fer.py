"""Facial expression data sets, with one canonical label vocabulary and a mapping between label orders.

Every reader returns ``(image, target)``: image float32 [3, H, W] RGB in [0, 1] (grey, palette, RGBA and 16-bit files
are converted) passed through ``transform`` if given; target an int class index in the reader's ``classes`` order, or
for :class:`FERPlus` with ``labels="soft"`` a float32 [8] vote distribution.

Each reader's ``classes`` holds canonical names (:data:`EXPRESSIONS`) in the order its files use, so a model trained
on one set can be scored on another: :func:`label_mapping` gives, for each class of one order, its index in another.
``targets`` lists the hard label of every sample (for class-balanced sampling and per-class counts).

Readers check at construction that every listed image exists and raise ``FileNotFoundError`` naming the first
missing one (and the listing line); an image that cannot be decoded raises ``OSError`` naming its path.

* :class:`RAFDBBasic`: ``EmoLabel/list_patition_label.txt`` + ``Image/aligned`` (labels 1..7).
* :class:`AffectNet`: ``training.csv`` / ``validation.csv`` with 7 or 8 classes.
* :class:`FER2013`: ``fer2013.csv`` (pixels in the csv).
* :class:`FERPlus`: ``fer2013new.csv`` votes over the ``fer2013.csv`` pixels; majority or soft labels.
* :class:`ImageFolder`: class sub-folders (CAER-S, image-folder re-packs of FER2013, anything else).
* :class:`CKPlus48`: CK+48 class folders, split into subject-disjoint folds (:func:`subject_folds`).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

__all__ = ["EXPRESSIONS", "LABEL_ORDERS", "IMAGE_EXTENSIONS", "AffectNet", "CKPlus48", "FER2013", "FERDataset",
           "FERPlus", "ImageFolder", "RAFDBBasic", "canonical_expression", "ferplus_target", "label_mapping",
           "pil_to_tensor", "read_image", "subject_folds"]

# Canonical vocabulary, in AffectNet-8 order (the largest label set in use).
EXPRESSIONS = ("neutral", "happiness", "sadness", "surprise", "fear", "disgust", "anger", "contempt")

_ALIASES = {
    "neutral": "neutral", "neutrality": "neutral",
    "happy": "happiness", "happiness": "happiness", "joy": "happiness",
    "sad": "sadness", "sadness": "sadness",
    "surprise": "surprise", "surprised": "surprise",
    "fear": "fear", "fearful": "fear", "afraid": "fear",
    "disgust": "disgust", "disgusted": "disgust",
    "anger": "anger", "angry": "anger",
    "contempt": "contempt", "contemptuous": "contempt",
}

# Label index -> canonical name, as each data set's files number them (../shared/REFERENCE.md section 4).
LABEL_ORDERS: dict[str, tuple[str, ...]] = {
    "rafdb": ("surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral"),  # file labels 1..7
    "affectnet7": EXPRESSIONS[:7],
    "affectnet8": EXPRESSIONS,
    "fer2013": ("anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral"),
    "ferplus": ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt"),
    # folder data sets: folder names sorted alphabetically
    "caer_s": ("anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise"),
    "ckplus": ("anger", "contempt", "disgust", "fear", "happiness", "sadness", "surprise"),
}

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
Transform = Callable[[torch.Tensor], torch.Tensor]


def canonical_expression(name: str) -> str:
    """The canonical name of an expression label ("Happy", "angry", "Sadness" -> "happiness", "anger", "sadness").
    Raises ``KeyError`` for a name that is not an expression."""
    key = name.strip().lower()
    if key not in _ALIASES:
        raise KeyError(f"{name!r} is not a known expression; canonical names: {', '.join(EXPRESSIONS)}")
    return _ALIASES[key]


def label_mapping(source: Sequence[str], target: Sequence[str]) -> list[int]:
    """For each class of ``source`` (in order), its index in ``target``, or -1 if ``target`` lacks it.

    Names are compared canonically when both are expressions, else verbatim, e.g.
    ``label_mapping(LABEL_ORDERS["rafdb"], LABEL_ORDERS["affectnet8"]) == [3, 4, 5, 1, 2, 6, 0]``.
    """
    index = {_canonical_or_same(name): i for i, name in enumerate(target)}
    return [index.get(_canonical_or_same(name), -1) for name in source]


def _canonical_or_same(name: str) -> str:
    """The canonical expression name, or ``name`` unchanged if it is not an expression (free-form class sets)."""
    return _ALIASES.get(name.strip().lower(), name)


def pil_to_tensor(img: Image.Image) -> torch.Tensor:
    """A PIL image of any mode -> float32 [3, H, W] RGB in [0, 1].

    Grey and palette images are expanded to RGB, alpha is dropped (after applying a palette's transparency), 16- and
    32-bit grey images are scaled to 8 bits first (Pillow's own RGB conversion would clip them at 255).
    """
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        bits = 16 if img.mode.startswith("I;16") else 32
        array = np.asarray(img).astype(np.float64) / (2 ** bits - 1) * 255
        img = Image.fromarray(array.round().astype(np.uint8))
    elif img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")  # Pillow warns when a transparent palette goes straight to RGB
    array = np.asarray(img.convert("RGB"))
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)


def read_image(path: str | Path) -> torch.Tensor:
    """An image file -> float32 [3, H, W] RGB in [0, 1] (see :func:`pil_to_tensor` for the mode conversions).
    Raises ``OSError`` naming ``path`` if it cannot be read or decoded."""
    try:
        with Image.open(path) as img:
            return pil_to_tensor(img)
    except OSError as exc:
        raise OSError(f"cannot read image {path}: {exc}") from exc


def _grey_to_rgb(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 [H, W] -> float32 [3, H, W] in [0, 1]."""
    return pixels.float().div(255.0).expand(3, -1, -1).contiguous()


class FERDataset(Dataset):
    """Base of the readers: ``classes`` (canonical names, label order), ``targets`` (hard label per sample),
    ``transform`` applied to the float [3, H, W] image. Subclasses fill ``samples`` and implement ``_load``."""

    classes: tuple[str, ...]
    targets: list[int]

    def __init__(self, transform: Transform | None = None):
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def _load(self, index: int) -> tuple[torch.Tensor, int | torch.Tensor]:
        raise NotImplementedError

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int | torch.Tensor]:
        image, target = self._load(index)
        return (self.transform(image) if self.transform is not None else image), target

    def class_counts(self) -> list[int]:
        """Number of samples per class, in ``classes`` order."""
        return np.bincount(np.asarray(self.targets, dtype=np.int64), minlength=len(self.classes)).tolist()


class _FileListDataset(FERDataset):
    """Readers whose samples are image files: ``paths[i]`` with label ``targets[i]``."""

    def __init__(self, paths: list[Path], targets: list[int], classes: Sequence[str], source: str,
                 transform: Transform | None):
        super().__init__(transform)
        if not paths:
            raise ValueError(f"{source}: no images found")
        self.paths, self.targets, self.classes = paths, targets, tuple(classes)

    def _load(self, index: int) -> tuple[torch.Tensor, int]:
        return read_image(self.paths[index]), self.targets[index]


def _require_file(path: Path, where: str) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"{where}: image {path} does not exist")
    return path


def _split_name(split: str, allowed: dict[str, str], reader: str) -> str:
    if split not in allowed:
        raise ValueError(f"{reader}: split must be one of {sorted(allowed)}; got {split!r}")
    return allowed[split]


class RAFDBBasic(_FileListDataset):
    """RAF-DB basic expressions: ``root/EmoLabel/list_patition_label.txt`` (lines ``train_00001.jpg 5``, labels 1..7
    in :data:`LABEL_ORDERS` ``"rafdb"`` order) and ``root/Image/aligned/train_00001_aligned.jpg`` (100x100).

    Args:
        root: the RAF-DB ``basic`` folder.
        split: "train" (12,271 images) or "test" (3,068); chosen by the file-name prefix.
        aligned: read ``Image/aligned/*_aligned.jpg`` (True) or ``Image/original/*.jpg`` (False).
    """

    def __init__(self, root: str | Path, split: str = "train", aligned: bool = True,
                 transform: Transform | None = None):
        root = Path(root)
        prefix = _split_name(split, {"train": "train_", "test": "test_"}, "RAFDBBasic")
        listing = root / "EmoLabel" / "list_patition_label.txt"
        paths, targets = [], []
        with open(listing) as f:
            for number, line in enumerate(f, start=1):
                parts = line.split()
                if not parts:
                    continue
                if len(parts) != 2 or not parts[1].isdigit() or not 1 <= int(parts[1]) <= 7:
                    raise ValueError(f"{listing} line {number}: expected 'name.jpg label(1-7)', got {line.strip()!r}")
                if not parts[0].startswith(prefix):
                    continue
                stem = Path(parts[0]).stem
                path = (root / "Image" / "aligned" / f"{stem}_aligned.jpg" if aligned
                        else root / "Image" / "original" / parts[0])
                paths.append(_require_file(path, f"{listing} line {number}"))
                targets.append(int(parts[1]) - 1)
        super().__init__(paths, targets, LABEL_ORDERS["rafdb"], f"{listing} ({split})", transform)


class AffectNet(_FileListDataset):
    """AffectNet from its csv (``training.csv`` or ``validation.csv``): columns ``subDirectory_filePath, face_x,
    face_y, face_width, face_height, facial_landmarks, expression, valence, arousal``.

    Args:
        csv_file: the csv of the split (the official validation set serves as the test set).
        root: folder the ``subDirectory_filePath`` entries are relative to (e.g. ``Manually_Annotated_Images``);
            default: the csv's folder.
        num_classes: 7 (expressions 0-6) or 8 (0-7, with contempt); rows with other labels (8-10 are not
            emotions) are skipped.
        crop_face: crop each image to its face box (for the uncropped images).
    """

    def __init__(self, csv_file: str | Path, root: str | Path | None = None, num_classes: int = 8,
                 crop_face: bool = False, transform: Transform | None = None):
        if num_classes not in (7, 8):
            raise ValueError(f"AffectNet: num_classes must be 7 or 8; got {num_classes}")
        csv_file = Path(csv_file)
        root = Path(root) if root is not None else csv_file.parent
        paths, targets, boxes = [], [], []
        with open(csv_file, newline="") as f:
            reader = csv.DictReader(f)
            needed = {"subDirectory_filePath", "expression", "face_x", "face_y", "face_width", "face_height"}
            if reader.fieldnames is None or not needed <= set(reader.fieldnames):
                raise ValueError(f"{csv_file}: expected columns {sorted(needed)}; got {reader.fieldnames}")
            for number, row in enumerate(reader, start=2):
                try:
                    label = int(row["expression"])
                    box = tuple(int(row[k]) for k in ("face_x", "face_y", "face_width", "face_height"))
                except ValueError as exc:
                    raise ValueError(f"{csv_file} line {number}: {exc}") from exc
                if not 0 <= label < num_classes:
                    continue
                paths.append(_require_file(root / row["subDirectory_filePath"], f"{csv_file} line {number}"))
                targets.append(label)
                boxes.append(box)
        self.boxes = boxes if crop_face else None
        super().__init__(paths, targets, LABEL_ORDERS[f"affectnet{num_classes}"], str(csv_file), transform)

    def _load(self, index: int) -> tuple[torch.Tensor, int]:
        image, target = super()._load(index)
        if self.boxes is not None:
            x, y, w, h = self.boxes[index]
            H, W = image.shape[-2:]
            x0, y0 = min(max(x, 0), W - 1), min(max(y, 0), H - 1)
            image = image[:, y0:min(y0 + max(h, 1), H), x0:min(x0 + max(w, 1), W)]
        return image, target


_FER2013_USAGE = {"train": "Training", "val": "PublicTest", "test": "PrivateTest"}


def _read_fer2013_pixels(csv_file: Path, split: str) -> tuple[list[int], torch.Tensor, list[int]]:
    """Rows of ``split`` in fer2013.csv -> (row indices, uint8 pixels [N, 48, 48], emotion labels)."""
    usage = _split_name(split, _FER2013_USAGE, "FER2013")
    rows, images, labels = [], [], []
    with open(csv_file, newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or not {"emotion", "pixels", "Usage"} <= set(reader.fieldnames):
            raise ValueError(f"{csv_file}: expected columns emotion, pixels, Usage; got {reader.fieldnames}")
        for row_index, row in enumerate(reader):
            if row["Usage"] != usage:
                continue
            pixels = np.array(row["pixels"].split(), dtype=np.uint8)
            if pixels.size != 48 * 48:
                raise ValueError(f"{csv_file} line {row_index + 2}: {pixels.size} pixel values, expected 2304")
            rows.append(row_index)
            images.append(pixels.reshape(48, 48))
            labels.append(int(row["emotion"]))
    if not rows:
        raise ValueError(f"{csv_file}: no rows with Usage {usage!r}")
    return rows, torch.from_numpy(np.stack(images)), labels


class FER2013(FERDataset):
    """FER2013 from ``fer2013.csv`` (``emotion, pixels, Usage``; 48x48 grey as 2304 space-separated ints).

    Args:
        csv_file: path to ``fer2013.csv``.
        split: "train" (Usage Training, 28,709), "val" (PublicTest, 3,589) or "test" (PrivateTest, 3,589).
    """

    def __init__(self, csv_file: str | Path, split: str = "train", transform: Transform | None = None):
        super().__init__(transform)
        _, self.pixels, labels = _read_fer2013_pixels(Path(csv_file), split)
        if any(not 0 <= label < 7 for label in labels):
            raise ValueError(f"{csv_file}: emotion labels must be 0-6")
        self.targets, self.classes = labels, LABEL_ORDERS["fer2013"]

    def _load(self, index: int) -> tuple[torch.Tensor, int]:
        return _grey_to_rgb(self.pixels[index]), self.targets[index]


_FERPLUS_EMOTIONS = 8  # vote columns: 8 emotions, then unknown, NF (not a face)


def ferplus_target(votes: Sequence[float], labels: str = "majority") -> int | list[float] | None:
    """FERPlus votes [10] (8 emotions in ``LABEL_ORDERS["ferplus"]`` order, unknown, NF) -> a target, or None to
    drop the image. Single votes are treated as noise and removed first (the FERPlus reference code does this).

    ``"majority"``: the class holding more than half of the remaining votes, else None.
    ``"soft"``: the remaining emotion votes normalised to sum 1 [8], or None if unknown or NF gets the most votes.
    """
    if labels not in ("majority", "soft"):
        raise ValueError(f"FERPlus labels must be 'majority' or 'soft'; got {labels!r}")
    if len(votes) != _FERPLUS_EMOTIONS + 2:
        raise ValueError(f"FERPlus votes: expected {_FERPLUS_EMOTIONS + 2} columns, got {len(votes)}")
    votes = [v if v > 1 else 0.0 for v in votes]
    total = sum(votes)
    if total == 0:
        return None
    top = max(range(len(votes)), key=votes.__getitem__)
    if top >= _FERPLUS_EMOTIONS:
        return None
    if labels == "majority":
        return top if votes[top] > total / 2 else None
    emotion_total = sum(votes[:_FERPLUS_EMOTIONS])
    return [v / emotion_total for v in votes[:_FERPLUS_EMOTIONS]]


class FERPlus(FERDataset):
    """FERPlus: the FER2013 images relabelled by 10 voters (``fer2013new.csv``: ``Usage, Image name`` and vote
    columns neutral, happiness, surprise, sadness, anger, disgust, fear, contempt, unknown, NF, one row per row of
    ``fer2013.csv``).

    Args:
        votes_csv: ``fer2013new.csv``.
        fer2013_csv: ``fer2013.csv`` (the pixels).
        split: "train", "val" or "test" (Training / PublicTest / PrivateTest).
        labels: "majority" (int targets) or "soft" (float32 [8] vote distributions; ``targets`` holds their argmax);
            see :func:`ferplus_target`. Rows without an image name or without a usable vote are skipped.
    """

    def __init__(self, votes_csv: str | Path, fer2013_csv: str | Path, split: str = "train",
                 labels: str = "majority", transform: Transform | None = None):
        super().__init__(transform)
        votes_csv = Path(votes_csv)
        rows, pixels, _ = _read_fer2013_pixels(Path(fer2013_csv), split)
        with open(votes_csv, newline="") as f:
            vote_rows = list(csv.reader(f))[1:]  # header: Usage, Image name, 10 vote columns
        keep, soft, targets = [], [], []
        for i, row_index in enumerate(rows):
            if row_index >= len(vote_rows):
                raise ValueError(f"{votes_csv} has {len(vote_rows)} rows but {fer2013_csv} has row {row_index + 1}; "
                                 "the two files must be row-aligned")
            row = vote_rows[row_index]
            if not row[1].strip():
                continue
            try:
                target = ferplus_target([float(v) for v in row[2:]], labels)
            except ValueError as exc:
                raise ValueError(f"{votes_csv} line {row_index + 2}: {exc}") from exc
            if target is None:
                continue
            keep.append(i)
            if labels == "soft":
                soft.append(target)
                targets.append(int(np.argmax(target)))
            else:
                targets.append(target)
        self.pixels = pixels[keep]
        self.soft = torch.tensor(soft, dtype=torch.float32) if labels == "soft" else None
        self.targets, self.classes = targets, LABEL_ORDERS["ferplus"]

    def _load(self, index: int) -> tuple[torch.Tensor, int | torch.Tensor]:
        target = self.soft[index] if self.soft is not None else self.targets[index]
        return _grey_to_rgb(self.pixels[index]), target


def _class_folders(root: Path) -> list[Path]:
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist")
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    if not folders:
        raise ValueError(f"{root} holds no class sub-folders")
    return folders


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


class ImageFolder(_FileListDataset):
    """Images in class sub-folders, ``root[/split]/<class>/<image>`` (CAER-S, image-folder FER2013, any other set).

    Args:
        root: the folder holding the class folders, or their parent when ``split`` is given.
        split: a sub-folder of ``root`` to read (CAER-S: "train" or "test"); None reads ``root`` itself.
        classes: class folder names in label order (a subset selects those classes); default: all folders, sorted
            alphabetically as torchvision does. Expression names are canonicalised ("Happy" -> "happiness");
            other names are kept as they are.
    """

    def __init__(self, root: str | Path, split: str | None = None, classes: Sequence[str] | None = None,
                 transform: Transform | None = None):
        folder = Path(root) / split if split is not None else Path(root)
        found = {p.name: p for p in _class_folders(folder)}
        names = list(classes) if classes is not None else sorted(found)
        missing = [n for n in names if n not in found]
        if missing:
            raise FileNotFoundError(f"{folder}: no class folder {missing}; found {sorted(found)}")
        paths, targets = [], []
        for label, name in enumerate(names):
            images = _images_in(found[name])
            paths += images
            targets += [label] * len(images)
        super().__init__(paths, targets, [_canonical_or_same(n) for n in names], str(folder), transform)


def subject_folds(subjects: Sequence[str], num_folds: int = 10) -> list[int]:
    """Fold index (0..num_folds-1) of each sample, such that all samples of a subject share one fold.

    Subjects are sorted and dealt round-robin (the i-th subject in sorted order goes to fold i mod num_folds): the
    assignment depends on the subject ids only, never on file order or a random seed.
    """
    unique = sorted(set(subjects))
    if not 2 <= num_folds <= len(unique):
        raise ValueError(f"num_folds must be in [2, {len(unique)}] (the number of subjects); got {num_folds}")
    fold_of = {s: i % num_folds for i, s in enumerate(unique)}
    return [fold_of[s] for s in subjects]


_CK_NAME = re.compile(r"^(S\d+)_\d+_\d+$")


class CKPlus48(_FileListDataset):
    """CK+48: class folders anger, contempt, disgust, fear, happy, sadness, surprise of 48x48 grey PNGs named
    ``S###_###_########`` (subject, sequence, frame), split subject-independently.

    Args:
        root: the folder holding the seven class folders.
        split: "train" (all folds but ``fold``), "test" (fold ``fold``) or "all".
        fold: the held-out fold, 0..num_folds-1.
        num_folds: number of subject folds (:func:`subject_folds`); 10 is the usual protocol.

    ``subjects`` holds the subject id of every sample; no subject is in both the train and the test split.
    """

    def __init__(self, root: str | Path, split: str = "train", fold: int = 0, num_folds: int = 10,
                 transform: Transform | None = None):
        if split not in ("train", "test", "all"):
            raise ValueError(f"CKPlus48: split must be 'train', 'test' or 'all'; got {split!r}")
        if not 0 <= fold < num_folds:
            raise ValueError(f"CKPlus48: fold must be in [0, {num_folds}); got {fold}")
        root = Path(root)
        folders = _class_folders(root)
        names = tuple(_canonical_or_same(p.name) for p in folders)
        if names != LABEL_ORDERS["ckplus"]:
            raise ValueError(f"{root}: expected the CK+48 class folders {LABEL_ORDERS['ckplus']}; got {names}")
        paths, targets, subjects = [], [], []
        for label, folder in enumerate(folders):
            for path in _images_in(folder):
                match = _CK_NAME.match(path.stem)
                if match is None:
                    raise ValueError(f"CK+48 file {path} is not named S###_###_######## (subject_sequence_frame)")
                paths.append(path)
                targets.append(label)
                subjects.append(match.group(1))
        folds = subject_folds(subjects, num_folds)
        keep = [i for i, f in enumerate(folds)
                if split == "all" or (f == fold) == (split == "test")]
        self.subjects = [subjects[i] for i in keep]
        self.fold, self.num_folds = fold, num_folds
        super().__init__([paths[i] for i in keep], [targets[i] for i in keep], names,
                         f"{root} ({split}, fold {fold}/{num_folds})", transform)
