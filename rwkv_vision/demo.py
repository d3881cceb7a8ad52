"""``rwkv-vision demo``: the library's main job on what the package ships, offline.

1. Reports the WKV backend that runs (compiled kernel or the PyTorch fallback) and why.
2. Classifies the facial expression of every face in the bundled sample photographs (``rwkv_vision/samples``: public
   domain, faces boxed in ``faces.json``) with the bundled expression model (``rwkv_vision/weights/
   ck48_rwkv_vit_nano``, trained on CK+48 by ``rwkv-vision train``); each face is cropped the way CK+48's faces are
   and the crop is saved beside the results. ``--image`` runs your own photographs instead (faces found with
   :func:`rwkv_vision.data.faces.detect_faces`, which needs the ``faces`` extra).
3. Depth: no UNetDepth weights trained on real depth data ship with rwkv-vision yet, and a depth map from random
   weights would mean nothing, so the demo says so. ``--depth-model DIR --depth-image FILE`` runs a depth model you
   trained (``rwkv-vision train --config configs/nyu_unet_depth.yaml``) and writes its colour-mapped depth PNG.

Everything it writes goes under ``--output`` (default ``rwkv-vision-demo``): ``faces/`` (the crops the model saw),
``results.json``, and the depth PNGs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image, ImageOps

from . import weights
from .data.faces import FaceBox, crop_face, detect_faces
from .hub import from_pretrained
from .pipelines import ImageClassificationPipeline
from .predict import predict

__all__ = ["EXPRESSION_MODEL", "SAMPLES", "run_demo", "sample_faces"]

EXPRESSION_MODEL = "ck48_rwkv_vit_nano"
SAMPLES = Path(__file__).resolve().parent / "samples"
NO_DEPTH_WEIGHTS = (
    "Depth: skipped. No UNetDepth weights trained on real depth data ship with rwkv-vision yet, and a depth map "
    "from random weights would mean nothing. Train one on NYU Depth V2 (rwkv-vision train --config "
    "configs/nyu_unet_depth.yaml), then: rwkv-vision demo --depth-model runs/nyu_unet_depth/model --depth-image "
    "ROOM.jpg")


def sample_faces() -> dict[str, list[FaceBox]]:
    """The bundled sample photographs and their face boxes: ``{file path: [FaceBox, ...]}``."""
    listing = json.loads((SAMPLES / "faces.json").read_text())["images"]
    return {str(SAMPLES / name): [FaceBox.from_dict(b, f"{SAMPLES / 'faces.json'}: {name}") for b in boxes]
            for name, boxes in listing.items()}


def _open(path: str | os.PathLike) -> Image.Image:
    """RGB, upright: phone photographs store their rotation in EXIF, which PIL does not apply by itself."""
    return ImageOps.exif_transpose(Image.open(path)).convert("RGB")




def run_demo(output_dir: str | os.PathLike = "rwkv-vision-demo", images: Sequence[str | os.PathLike] | None = None,
             top_k: int = 3, depth_model: str | os.PathLike | None = None,
             depth_image: str | os.PathLike | None = None, device: str = "cpu", echo=print) -> dict:
    """Run the demo (see the module docstring); ``echo`` receives each line of the report. Returns what it printed
    as data: ``{"wkv_backend", "wkv_reason", "model", "faces": [{"file", "face", "box", "crop", "predictions"}],
    "depth": {...} or None, "output_dir"}``, also written to ``output_dir/results.json``."""
    from .ops import _extension, wkv_backend

    if (depth_model is None) != (depth_image is None):
        raise ValueError("--depth-model and --depth-image go together (no indoor image is bundled): pass both")
    out = Path(output_dir)
    (out / "faces").mkdir(parents=True, exist_ok=True)
    backend = wkv_backend(device)
    reason = _extension.explain(torch.device(device).type)
    echo(f"WKV backend on {device}: {backend} ({reason})")

    folder = weights.path(EXPRESSION_MODEL)
    model = from_pretrained(folder)
    cfg = model.pretrained_cfg
    top1 = next((r["value"] for r in cfg.get("results", []) if r["metric"].startswith("top-1")), None)
    n_params = sum(p.numel() for p in model.parameters())
    echo(f"Expression model: {EXPRESSION_MODEL} ({type(model).__name__}, {n_params / 1e6:.2f}M parameters), "
         f"trained on CK+48 (posed, lab faces; no 'neutral' class); test top-1 {top1:.2f}% on its "
         f"subject-independent fold. Card: {folder / 'README.md'}")
    classify = ImageClassificationPipeline(model, device, top_k)

    if images is None:
        boxes = sample_faces()
    else:  # your photographs: faces found by the detector, on the photograph as it is cropped below
        missing = [str(p) for p in images if not Path(p).is_file()]
        if missing:
            raise FileNotFoundError(f"image file(s) not found: {', '.join(missing)}")
        boxes = dict.fromkeys(str(p) for p in images)
    faces = []
    for path, found in boxes.items():
        name = Path(path).name
        photo = _open(path)
        if found is None:
            found = detect_faces(photo)
        if not found:
            echo(f"{name}: no face found")
            continue
        for i, box in enumerate(found, 1):
            crop = crop_face(photo, box)
            crop_path = out / "faces" / f"{Path(path).stem}_face{i}.png"
            crop.save(crop_path)
            predictions = classify(crop)
            best, rest = predictions[0], predictions[1:]
            echo(f"{name} face {i} at ({box.left:.0f}, {box.top:.0f}) {box.width:.0f}x{box.height:.0f} px: "
                 f"{best['label']} {100 * best['score']:.1f}%" + (
                     "  (then " + ", ".join(f"{p['label']} {100 * p['score']:.1f}%" for p in rest) + ")" if rest
                     else ""))
            faces.append({"file": path, "face": i, "box": box.to_dict(), "crop": str(crop_path),
                          "predictions": predictions})

    depth = None
    if depth_model is None:
        echo(NO_DEPTH_WEIGHTS)
    else:
        depth = predict(depth_model, [depth_image], output_dir=out, device=device)[0]
        echo(f"Depth of {Path(depth_image).name}: {depth['min_m']:.2f}-{depth['max_m']:.2f} m -> {depth['color_png']}"
             f" (colour-mapped, near blue, far red) and {depth['depth_png']} (16-bit millimetres)")

    result = {"wkv_backend": backend, "wkv_reason": reason, "model": str(folder), "faces": faces, "depth": depth,
              "output_dir": str(out)}
    (out / "results.json").write_text(json.dumps(result, indent=1))
    echo(f"Outputs in {out}/: faces/ (the {len(faces)} crop(s) the model saw), results.json"
         + (", the depth PNGs" if depth else ""))
    return result
