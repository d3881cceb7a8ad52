"""Quickstart: load a model, classify faces, build any registered model by name.

    python examples/quickstart.py                 # the bundled sample photographs
    python examples/quickstart.py --face me.png   # your own face crop (square, face only, like CK+48)

Runs offline: the expression model and the photographs ship inside the package.
"""

from __future__ import annotations

import argparse

import torch
from PIL import Image

import rwkv_vision
from rwkv_vision import weights
from rwkv_vision.data.faces import crop_face
from rwkv_vision.demo import sample_faces


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--face", nargs="*", default=None, help="face crops to classify (default: the samples)")
    args = parser.parse_args(argv)

    # 1. A saved model folder (here the bundled CK+48 expression model; a Hub id such as "org/name" works the same).
    model = rwkv_vision.from_pretrained(weights.path("ck48_rwkv_vit_nano"))
    print(f"{type(model).__name__}: {sum(p.numel() for p in model.parameters()):,} parameters, "
          f"labels {model.pretrained_cfg['label_names']}")

    # 2. A pipeline does the model's own preprocessing (size, normalisation) and returns the top-k labels.
    classify = rwkv_vision.pipeline("image-classification", model, top_k=3)
    if args.face:
        faces = {path: Image.open(path) for path in args.face}
    else:  # full photographs: crop each boxed face the way the training faces were cropped
        faces = {f"{path} face {i}": crop_face(Image.open(path), box)
                 for path, boxes in sample_faces().items() for i, box in enumerate(boxes, 1)}
    for name, face in faces.items():
        print(name, ", ".join(f"{p['label']} {p['score']:.1%}" for p in classify(face)))

    # 3. Any registered model by name, timm-style: RWKVViT for 10 classes at 384 px, and its intermediate features.
    print("registered:", ", ".join(rwkv_vision.list_models("rwkv_vit*")))
    vit = rwkv_vision.create_model("rwkv_vit_nano", num_classes=10, img_size=384).eval()
    with torch.no_grad():
        logits = vit(torch.randn(1, 3, 384, 384))
        features = vit.forward_intermediates(torch.randn(1, 3, 384, 384), indices=2, intermediates_only=True)
    print("logits", tuple(logits.shape), "features", [tuple(f.shape) for f in features])


if __name__ == "__main__":
    main()
