"""Facial expression readers: label orders and mapping, image modes, listings, subject-wise CK+48 folds."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rwkv_vision.data.fer import (EXPRESSIONS, LABEL_ORDERS, FER2013, AffectNet, CKPlus48, FERPlus, ImageFolder,
                                  RAFDBBasic, canonical_expression, ferplus_target, label_mapping, read_image,
                                  subject_folds)


def _png(path: Path, value: int = 128, size: tuple[int, int] = (8, 8), mode: str = "L") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value if mode == "L" else (value,) * len(mode)).save(path)
    return path


# ---------------------------------------------------------------------------------------------- vocabulary


def test_label_orders_use_the_canonical_vocabulary():
    for name, order in LABEL_ORDERS.items():
        assert len(set(order)) == len(order), name
        assert set(order) <= set(EXPRESSIONS), name
    assert LABEL_ORDERS["rafdb"][0] == "surprise" and LABEL_ORDERS["rafdb"][6] == "neutral"
    assert LABEL_ORDERS["fer2013"][0] == "anger" and LABEL_ORDERS["affectnet8"][7] == "contempt"


def test_canonical_names_and_mapping_between_orders():
    assert [canonical_expression(n) for n in ("Happy", "angry", " SAD ", "Surprised")] == \
        ["happiness", "anger", "sadness", "surprise"]
    with pytest.raises(KeyError, match="boredom"):
        canonical_expression("boredom")
    # RAF-DB (surprise, fear, disgust, happiness, sadness, anger, neutral) into AffectNet-8 order
    assert label_mapping(LABEL_ORDERS["rafdb"], LABEL_ORDERS["affectnet8"]) == [3, 4, 5, 1, 2, 6, 0]
    # contempt has no place in RAF-DB; folder spellings map through the aliases
    assert label_mapping(LABEL_ORDERS["affectnet8"], LABEL_ORDERS["rafdb"])[7] == -1
    assert label_mapping(["Happy", "Sad"], ["sadness", "happiness"]) == [1, 0]
    # every order maps into AffectNet-8 and back to itself
    for order in LABEL_ORDERS.values():
        there = label_mapping(order, EXPRESSIONS)
        back = label_mapping([EXPRESSIONS[i] for i in there], order)
        assert back == list(range(len(order)))


# ---------------------------------------------------------------------------------------------- images


def test_read_image_converts_every_mode_to_rgb(tmp_path):
    grey = _png(tmp_path / "grey.png", 51)
    image = read_image(grey)
    assert image.shape == (3, 8, 8) and image.dtype == torch.float32
    assert torch.allclose(image, torch.full_like(image, 51 / 255))

    rgba = tmp_path / "rgba.png"
    Image.new("RGBA", (5, 4), (255, 0, 0, 0)).save(rgba)
    assert read_image(rgba).shape == (3, 4, 5) and read_image(rgba)[0].eq(1).all()

    palette = Image.new("P", (4, 4), 1)
    palette.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    palette.info["transparency"] = 0
    palette.save(tmp_path / "palette.png")
    pal = read_image(tmp_path / "palette.png")
    assert pal[1].eq(1).all() and pal[0].eq(0).all()

    Image.fromarray(np.full((3, 3), 65535, dtype=np.uint16)).save(tmp_path / "deep.png")
    assert read_image(tmp_path / "deep.png").eq(1).all()  # full-scale 16-bit is white, not clipped garbage


def test_unreadable_image_names_its_path(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(OSError, match="broken.png"):
        read_image(bad)


# ---------------------------------------------------------------------------------------------- readers


def test_rafdb_listing_labels_and_missing_file(tmp_path):
    (tmp_path / "EmoLabel").mkdir()
    lines = ["train_00001.jpg 1", "train_00002.jpg 7", "test_0001.jpg 4"]
    (tmp_path / "EmoLabel" / "list_patition_label.txt").write_text("\n".join(lines) + "\n")
    for stem in ("train_00001", "train_00002", "test_0001"):
        _png(tmp_path / "Image" / "aligned" / f"{stem}_aligned.jpg")
    train = RAFDBBasic(tmp_path, "train")
    assert train.targets == [0, 6] and train.classes[0] == "surprise" and train.classes[6] == "neutral"
    image, target = train[1]
    assert image.shape == (3, 8, 8) and target == 6
    assert len(RAFDBBasic(tmp_path, "test")) == 1
    (tmp_path / "Image" / "aligned" / "train_00002_aligned.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="line 2.*train_00002_aligned.jpg"):
        RAFDBBasic(tmp_path, "train")


def test_affectnet_csv_seven_or_eight_classes_and_face_crop(tmp_path):
    rows = [("a/1.png", 7), ("a/2.png", 1), ("a/3.png", 9)]  # contempt, happy, not an emotion
    with open(tmp_path / "training.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["subDirectory_filePath", "face_x", "face_y", "face_width", "face_height", "facial_landmarks",
                    "expression", "valence", "arousal"])
        for name, label in rows:
            _png(tmp_path / name, size=(20, 10))
            w.writerow([name, 2, 1, 6, 4, "", label, 0, 0])
    eight = AffectNet(tmp_path / "training.csv", num_classes=8)
    assert eight.targets == [7, 1] and eight.classes[7] == "contempt"
    seven = AffectNet(tmp_path / "training.csv", num_classes=7, crop_face=True)
    assert seven.targets == [1] and seven[0][0].shape == (3, 4, 6)
    (tmp_path / "a/2.png").unlink()
    with pytest.raises(FileNotFoundError, match="2.png"):
        AffectNet(tmp_path / "training.csv")


def _fer2013_csv(path: Path) -> list[int]:
    labels = [0, 3, 6, 5]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["emotion", "pixels", "Usage"])
        for i, (label, usage) in enumerate(zip(labels, ["Training", "Training", "PublicTest", "PrivateTest"])):
            w.writerow([label, " ".join(str((i * 10 + j) % 256) for j in range(2304)), usage])
    return labels


def test_fer2013_splits_and_pixels(tmp_path):
    _fer2013_csv(tmp_path / "fer2013.csv")
    train = FER2013(tmp_path / "fer2013.csv", "train")
    assert train.targets == [0, 3] and len(FER2013(tmp_path / "fer2013.csv", "test")) == 1
    image, label = train[1]
    assert image.shape == (3, 48, 48) and label == 3
    assert image[0, 0, 1] == pytest.approx(11 / 255) and torch.equal(image[0], image[2])
    with open(tmp_path / "bad.csv", "w") as f:
        f.write("emotion,pixels,Usage\n0,1 2 3,Training\n")
    with pytest.raises(ValueError, match="line 2: 3 pixel values"):
        FER2013(tmp_path / "bad.csv")


def test_ferplus_vote_rules():
    # single votes are noise; a clear majority wins
    assert ferplus_target([6, 1, 1, 0, 0, 0, 0, 0, 2, 0]) == 0
    # no class above half of the remaining votes
    assert ferplus_target([4, 4, 2, 0, 0, 0, 0, 0, 0, 0]) is None
    # "not a face" wins: dropped in both modes
    assert ferplus_target([2, 0, 0, 0, 0, 0, 0, 0, 0, 8]) is None
    assert ferplus_target([2, 0, 0, 0, 0, 0, 0, 0, 0, 8], "soft") is None
    soft = ferplus_target([6, 3, 1, 0, 0, 0, 0, 0, 0, 0], "soft")
    assert soft == pytest.approx([6 / 9, 3 / 9, 0, 0, 0, 0, 0, 0])
    with pytest.raises(ValueError, match="columns"):
        ferplus_target([1, 2, 3])


def test_ferplus_majority_and_soft(tmp_path):
    _fer2013_csv(tmp_path / "fer2013.csv")
    with open(tmp_path / "fer2013new.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["Usage", "Image name", "neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear",
                    "contempt", "unknown", "NF"])
        w.writerow(["Training", "fer0000000.png", 0, 8, 2, 0, 0, 0, 0, 0, 0, 0])
        w.writerow(["Training", "", 0, 0, 0, 0, 0, 0, 0, 0, 0, 10])       # removed image
        w.writerow(["PublicTest", "fer0000002.png", 10, 0, 0, 0, 0, 0, 0, 0, 0, 0])
        w.writerow(["PrivateTest", "fer0000003.png", 0, 0, 0, 0, 0, 0, 3, 7, 0, 0])
    majority = FERPlus(tmp_path / "fer2013new.csv", tmp_path / "fer2013.csv", "train")
    assert majority.targets == [1] and majority.classes[1] == "happiness"
    soft = FERPlus(tmp_path / "fer2013new.csv", tmp_path / "fer2013.csv", "test", labels="soft")
    image, target = soft[0]
    assert target.shape == (8,) and target[7] == pytest.approx(0.7) and soft.targets == [7]
    assert image.shape == (3, 48, 48)


def test_image_folder_classes_order_and_split(tmp_path):
    for split in ("train", "test"):
        for name in ("Surprise", "Anger", "Happy"):
            _png(tmp_path / split / name / "0.png")
            _png(tmp_path / split / name / "1.jpg")
    train = ImageFolder(tmp_path, "train")
    assert train.classes == ("anger", "happiness", "surprise")  # sorted folder names, canonicalised
    assert train.class_counts() == [2, 2, 2]
    picked = ImageFolder(tmp_path, "test", classes=["Happy", "Anger"])
    assert picked.classes == ("happiness", "anger") and picked.targets == [0, 0, 1, 1]
    with pytest.raises(FileNotFoundError, match="Contempt"):
        ImageFolder(tmp_path, "test", classes=["Contempt"])
    with pytest.raises(FileNotFoundError, match="val"):
        ImageFolder(tmp_path, "val")


def _ck_tree(root: Path, subjects: int = 12) -> None:
    names = LABEL_ORDERS["ckplus"]
    folders = ["happy" if n == "happiness" else n for n in names]
    for s in range(subjects):
        folder = folders[s % len(folders)]
        for frame in range(3):
            _png(root / folder / f"S{s + 10:03d}_001_{frame:08d}.png")


def test_subject_folds_are_deterministic_and_balanced():
    subjects = [f"S{i:03d}" for i in range(23) for _ in range(3)]
    folds = subject_folds(subjects, 10)
    assert folds == subject_folds(list(subjects), 10)
    by_subject = {}
    for s, f in zip(subjects, folds):
        assert by_subject.setdefault(s, f) == f  # one fold per subject
    counts = np.bincount(list(by_subject.values()), minlength=10)
    assert counts.max() - counts.min() <= 1
    with pytest.raises(ValueError, match="num_folds"):
        subject_folds(["S1", "S2"], 3)


def test_ckplus_splits_are_subject_disjoint(tmp_path):
    _ck_tree(tmp_path)
    seen = []
    for fold in range(4):
        train = CKPlus48(tmp_path, "train", fold=fold, num_folds=4)
        test = CKPlus48(tmp_path, "test", fold=fold, num_folds=4)
        assert not set(train.subjects) & set(test.subjects)
        assert len(train) + len(test) == 36
        seen += test.subjects
    assert sorted(seen) == sorted(CKPlus48(tmp_path, "all").subjects)  # each subject tested exactly once
    (tmp_path / "anger" / "face.png").write_bytes(b"")
    with pytest.raises(ValueError, match="face.png"):
        CKPlus48(tmp_path)


def test_real_ckplus48(shared_data):
    root = shared_data / "ckplus48"
    if not root.is_dir():
        pytest.skip(f"{root} not found")
    everything = CKPlus48(root, "all")
    assert len(everything) == 981
    assert everything.class_counts() == [135, 54, 177, 75, 207, 84, 249]
    assert len(set(everything.subjects)) == 118
    total = 0
    for fold in range(10):
        test = CKPlus48(root, "test", fold=fold)
        train = CKPlus48(root, "train", fold=fold)
        assert not set(test.subjects) & set(train.subjects) and len(test) + len(train) == 981
        total += len(test)
    assert total == 981
    image, label = CKPlus48(root, "test", fold=0)[0]
    assert image.shape == (3, 48, 48) and torch.equal(image[0], image[1]) and 0 <= label < 7
