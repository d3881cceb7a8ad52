"""Face boxes and face crops for expression models trained on cropped faces.

Expression data sets ship faces already cropped; a photograph has to be cropped the same way before a model trained
on them sees it. :func:`crop_face` turns a face box (from a detector or an annotation) into the crop CK+48 uses: a
square about the box, a little wider than a frontal-face detector's box (forehead to just below the chin), grey,
48x48 pixels. :func:`detect_faces` finds the boxes with scikit-image's LBP frontal-face cascade (OpenCV's trained
file, shipped with scikit-image); it needs the ``faces`` extra: ``pip install "rwkv-vision[faces]"``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

__all__ = ["FaceBox", "crop_face", "detect_faces"]


@dataclass(frozen=True)
class FaceBox:
    """A face's box in pixels of the full image: ``left``, ``top`` (its top-left corner), ``width``, ``height``."""
    left: float
    top: float
    width: float
    height: float

    @classmethod
    def from_dict(cls, box: dict, where: str = "face box") -> FaceBox:
        """A box from ``{"left", "top", "width", "height"}``; a missing key or a non-positive size raises naming
        ``where``."""
        missing = [k for k in ("left", "top", "width", "height") if k not in box]
        if missing:
            raise ValueError(f"{where}: missing {', '.join(missing)} (a box is left, top, width, height in pixels)")
        face = cls(*(float(box[k]) for k in ("left", "top", "width", "height")))
        if face.width <= 0 or face.height <= 0:
            raise ValueError(f"{where}: width and height must be positive, got {face.width} x {face.height}")
        return face

    def to_dict(self) -> dict:
        return {"left": self.left, "top": self.top, "width": self.width, "height": self.height}


def crop_face(image: Image.Image, box: FaceBox, scale: float = 1.1, size: int = 48, grey: bool = True) -> Image.Image:
    """Crop a face like CK+48's: a square of side ``scale * max(width, height)`` centred on the box, borders
    replicated where it leaves the image, resized to ``size`` pixels (bilinear), grey (``grey``) and returned as RGB
    (three equal channels, as the readers return CK+48's grey files).

    ``scale`` 1.1 about a frontal-face cascade's box (eyebrows to chin) gives CK+48's framing: forehead to just below
    the chin, eyes about 40% down. A box outside the image raises ``ValueError``.
    """
    w, h = image.size
    if box.left >= w or box.top >= h or box.left + box.width <= 0 or box.top + box.height <= 0:
        raise ValueError(f"face box {box.to_dict()} lies outside the {w}x{h} image")
    side = scale * max(box.width, box.height)
    cx, cy = box.left + box.width / 2, box.top + box.height / 2
    left, top = round(cx - side / 2), round(cy - side / 2)
    right, bottom = left + round(side), top + round(side)
    pad = max(0, -left, -top, right - w, bottom - h)
    if pad:  # replicate the border rather than paint black bars the training data never had
        padded = np.pad(np.asarray(image.convert("RGB")), ((pad, pad), (pad, pad), (0, 0)), mode="edge")
        image, left, top, right, bottom = Image.fromarray(padded), left + pad, top + pad, right + pad, bottom + pad
    face = image.crop((left, top, right, bottom)).resize((size, size), Image.BILINEAR)
    return ImageOps.grayscale(face).convert("RGB") if grey else face.convert("RGB")


def detect_faces(image: Image.Image, min_size: int | None = None, max_size: int | None = None,
                 scale_factor: float = 1.2) -> list[FaceBox]:
    """Frontal faces in ``image``, largest first, with scikit-image's LBP cascade.

    ``min_size`` / ``max_size``: the smallest and largest face side searched, in pixels (defaults: an eighth of the
    image's short side, which keeps the cascade's small false detections out of portraits, and the short side);
    pass a smaller ``min_size`` for group photographs. ``scale_factor``: the step between searched sizes. The
    cascade answers a face several times at neighbouring sizes: boxes overlapping by more than 30% (intersection
    over union) are averaged into one. Needs scikit-image (``pip install "rwkv-vision[faces]"``).
    """
    try:
        from skimage import data as sk_data
        from skimage.feature import Cascade
    except ImportError:
        raise ImportError('detect_faces needs scikit-image: pip install "rwkv-vision[faces]"') from None
    rgb = np.asarray(image.convert("RGB"))
    short = min(rgb.shape[:2])
    low, high = min_size or max(24, short // 8), max_size or short
    cascade = Cascade(sk_data.lbp_frontal_face_cascade_filename())
    found = cascade.detect_multi_scale(img=rgb, scale_factor=scale_factor, step_ratio=1, min_size=(low, low),
                                       max_size=(high, high))
    boxes = np.array([[d["c"], d["r"], d["width"], d["height"]] for d in found], dtype=np.float64).reshape(-1, 4)
    merged = []
    while len(boxes):
        group = _iou(boxes[0], boxes) > 0.3  # includes boxes[0] itself
        merged.append(FaceBox(*(round(float(x), 1) for x in boxes[group].mean(axis=0))))
        boxes = boxes[~group]
    return sorted(merged, key=lambda b: -b.width * b.height)


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Intersection over union of one [left, top, width, height] box with each row of ``boxes``."""
    right, bottom = box[0] + box[2], box[1] + box[3]
    iw = np.clip(np.minimum(right, boxes[:, 0] + boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    ih = np.clip(np.minimum(bottom, boxes[:, 1] + boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = iw * ih
    return inter / (box[2] * box[3] + boxes[:, 2] * boxes[:, 3] - inter)
