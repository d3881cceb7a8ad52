"""Convert official checkpoints into rwkv-vision model folders (config.json + model.safetensors + model card), which
then load with ``rwkv_vision.from_pretrained(folder)`` and publish with ``examples/push_to_hub.py``.

    # Vision-RWKV ImageNet classifiers (github.com/OpenGVLab/Vision-RWKV): T/S/B at 224, L at 384
    python examples/convert_official.py vision-rwkv vrwkv_t_in1k_224.pth out/rwkv_vit_tiny --model rwkv_vit_tiny
    # POSTER V2 trained on RAF-DB (github.com/Talented-Q/POSTER_V2), 7 classes in RAF-DB's order
    python examples/convert_official.py poster-v2 raf-db-model_best.pth out/poster_v2_rafdb --labels rafdb
    # POSTER V2's ImageNet/MS-Celeb backbones (ir50.pth, mobilefacenet_model_best.pth.tar) into PosterRWKV
    python examples/convert_official.py poster-backbones out/poster_rwkv_init --model poster_rwkv \
        --ir50 ir50.pth --mobilefacenet mobilefacenet_model_best.pth.tar

Files are read without running code from them (``weights_only`` / a restricted unpickler) and loaded strictly: a
missing or unexpected key is an error naming it. The saved folder is loaded back and compared with the converted
model, tensor by tensor, before the script reports success. ``--set KEY=VALUE`` overrides a constructor argument
(e.g. ``--set img_size=384``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import rwkv_vision
from rwkv_vision.convert import load_backbone_files
from rwkv_vision.data.fer import LABEL_ORDERS
from rwkv_vision.hub import label_names
from rwkv_vision.train.config import parse_value


def _overrides(pairs: list[str]) -> dict:
    """``--set KEY=VALUE`` pairs -> keyword arguments; values are read as the training configs read them (JSON,
    else a string)."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--set {pair!r}: expected KEY=VALUE")
        out[key] = parse_value(value)
    return out


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="kind", required=True)
    p = sub.add_parser("vision-rwkv", help="an official Vision-RWKV classification checkpoint")
    p.add_argument("checkpoint")
    p.add_argument("output")
    p.add_argument("--model", default="rwkv_vit_tiny", help="rwkv_vit_tiny/small/base/large")
    p = sub.add_parser("poster-v2", help="an official POSTER V2 checkpoint (model_best.pth)")
    p.add_argument("checkpoint")
    p.add_argument("output")
    p.add_argument("--labels", default="rafdb", choices=sorted(LABEL_ORDERS),
                   help="the data set whose label order the checkpoint's outputs follow")
    p = sub.add_parser("poster-backbones", help="official IR-50 / MobileFaceNet files into a POSTER-family model")
    p.add_argument("output")
    p.add_argument("--model", default="poster_rwkv", help="poster_v2, poster_rwkv or poster_rwkv_small")
    p.add_argument("--ir50", default=None, help="ir50.pth (image stream of poster_v2 / poster_rwkv)")
    p.add_argument("--mobilefacenet", default=None, help="mobilefacenet_model_best.pth.tar (landmark stream)")
    for p in sub.choices.values():
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="constructor argument")
    args = parser.parse_args(argv)
    overrides = _overrides(args.set)

    if args.kind == "vision-rwkv":
        model = rwkv_vision.create_model(args.model, checkpoint_path=args.checkpoint, **overrides)
        names, source = label_names({"label_set": "imagenet-1k"}), args.checkpoint
        if model.num_classes != len(names):
            names = None  # not an ImageNet-1k head
        model.pretrained_cfg.update(label_names=names, license="apache-2.0",  # Vision-RWKV's licence
                                    datasets=["imagenet-1k"] if names else None)
    elif args.kind == "poster-v2":
        names, source = list(LABEL_ORDERS[args.labels]), args.checkpoint
        overrides.setdefault("num_classes", len(names))
        model = rwkv_vision.create_model("poster_v2", checkpoint_path=args.checkpoint, **overrides)
        model.pretrained_cfg.update(label_names=names, datasets=[args.labels])
    else:
        if args.ir50 is None and args.mobilefacenet is None:
            raise SystemExit("poster-backbones: give --ir50 and/or --mobilefacenet")
        model = rwkv_vision.create_model(args.model, **overrides)
        load_backbone_files(model, ir50_path=args.ir50, mobilefacenet_path=args.mobilefacenet)
        source = " and ".join(f for f in (args.ir50, args.mobilefacenet) if f)
        model.pretrained_cfg.update(task="image-classification")  # the head is new: train it before use
    model.pretrained_cfg["training"] = f"Converted from the official file(s) {source} by examples/convert_official.py."
    model.eval()
    model.save_pretrained(args.output)

    # The folder must give back the same model: the same class, arguments and every tensor bit for bit.
    loaded = rwkv_vision.from_pretrained(args.output)
    theirs = loaded.state_dict()
    differ = [k for k, v in model.state_dict().items() if k not in theirs or not torch.equal(v, theirs[k])]
    if type(loaded) is not type(model) or loaded.hub_config != model.hub_config or differ:
        raise SystemExit(f"{args.output}: the saved model does not reproduce the converted one "
                         f"({', '.join(differ[:5]) or 'class or arguments differ'})")
    n = sum(p.numel() for p in model.parameters())
    print(f"converted {source} -> {args.output} ({type(model).__name__}, {n:,} parameters); reload checked")
    return Path(args.output)


if __name__ == "__main__":
    main()
