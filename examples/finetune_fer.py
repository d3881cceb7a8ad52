"""Fine-tune an expression model on your own faces, laid out as image folders:

    DATA/train/<class>/*.png   DATA/test/<class>/*.png       (class names such as happy, sad, neutral...)

    python examples/finetune_fer.py --data DATA --output runs/my_fer --epochs 20

Starts from the bundled CK+48 model (``--start scratch`` for random weights; ``--start hf-hub:org/name`` or a folder for
other weights of the same architecture); a different number of classes gets a new head. Faces must be cropped to the
face (``rwkv_vision.data.faces.crop_face``). The result is a model folder (``OUTPUT/model``: config.json,
model.safetensors, model card with the measured test accuracy) for ``rwkv_vision.from_pretrained`` or
``rwkv-vision predict``; the same run as a config file is ``rwkv-vision train --config ...`` (see configs/).
"""

from __future__ import annotations

import argparse

from rwkv_vision import weights
from rwkv_vision.train import Trainer, config_from_dict


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="folder with train/ and test/ class folders")
    parser.add_argument("--output", default="runs/finetune_fer")
    parser.add_argument("--start", default="bundled",
                        help="'bundled' (the CK+48 model), 'scratch', a model folder or hf-hub:org/name")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=5e-4, help="peak learning rate (AdamW, cosine schedule)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    args = parser.parse_args(argv)

    start = {"bundled": str(weights.path("ck48_rwkv_vit_nano")), "scratch": False}.get(args.start, args.start)
    model = {"name": "rwkv_vit_nano", "pretrained": start}
    if start is False:  # the bundled model's shape: 64 px faces, 8 px patches, convolutional stem
        model["args"] = {"img_size": 64, "patch_size": 8, "stem": "conv", "drop_path_rate": 0.1}
    config = config_from_dict({
        "task": "classification", "seed": 0, "output": args.output, "model": model,
        # preprocessing not given here (size, mean, std) comes from the starting model's config
        "data": {"name": "imagefolder", "args": {"root": args.data}, "train_split": "train", "val_split": "test",
                 "test_split": "test", "batch_size": args.batch_size,
                 **({"input_size": [64, 64], "mean": [0.5] * 3, "std": [0.25] * 3} if start is False else {})},
        "augment": {"scale": [0.7, 1.0], "ratio": [0.9, 1.1], "hflip": 0.5, "rotation": 10},
        "optim": {"name": "adamw", "lr": args.lr, "weight_decay": 0.05, "clip_grad": 1.0},
        "schedule": {"name": "cosine", "warmup_epochs": min(2, args.epochs - 1)},
        "loss": {"label_smoothing": 0.1},
        "train": {"epochs": args.epochs, "export": "last", "threads": args.threads},
    }, source="examples/finetune_fer.py")
    summary = Trainer(config).fit()
    test = summary["test"]
    print(f"test top-1 {test['top1']:.1%}, macro-F1 {test['macro_f1']:.1%} on {test['count']} faces; "
          f"model in {summary['model_dir']}")
    return summary


if __name__ == "__main__":
    main()
