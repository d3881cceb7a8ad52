"""Train and evaluate UNetDepth on NYU Depth V2 in the Kaggle / DenseDepth layout:

    ROOT/data/nyu2_train.csv   rows "data/nyu2_train/<scene>/1.jpg,data/nyu2_train/<scene>/1.png"
    ROOT/data/nyu2_test.csv    the 654 test frames (16-bit PNG depth in millimetres)

    python examples/depth_nyu.py --data ROOT --encoder resnet18 --epochs 10 --output runs/depth_r18

Trains at half resolution (240x320 by default) with SILog + gradient losses, then scores the test frames with the
NYU protocol (Eigen crop, 1e-3..10 m, at the ground truth's size): delta1/2/3, AbsRel, SqRel, RMSE, RMSE log, log10,
SILog. Prints the metrics and writes OUTPUT/model (a folder for ``rwkv_vision.from_pretrained`` and
``rwkv-vision predict``) and OUTPUT/eval (results.json and image | truth | prediction panels).
``--pretrained-encoder`` starts the encoder from ImageNet weights on the Hub (needs the network once).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rwkv_vision.evaluate import eval_preprocessing, evaluate
from rwkv_vision.train import Trainer, build_dataset, config_from_dict

ENCODERS = ("resnet18", "resnet34", "resnet50", "mobilenet_v2", "rwkv_tiny")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="the folder holding data/nyu2_train.csv and data/nyu2_test.csv")
    parser.add_argument("--encoder", default="resnet18", choices=ENCODERS)
    parser.add_argument("--pretrained-encoder", action="store_true", help="ImageNet encoder weights from the Hub")
    parser.add_argument("--output", default="runs/depth_nyu")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--size", type=int, nargs=2, default=[240, 320], metavar=("H", "W"),
                        help="training and inference size in pixels")
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--workers", type=int, default=4, help="data loading processes")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)

    root = Path(args.data)
    data_args = {"root": str(root), "train_csv": str(root / "data" / "nyu2_train.csv"),
                 "test_csv": str(root / "data" / "nyu2_test.csv")}
    height, width = args.size
    config = config_from_dict({
        "task": "depth", "seed": 0, "output": args.output,
        "model": {"name": f"unet_depth_{args.encoder}", "pretrained": args.pretrained_encoder,
                  "args": {"min_depth": 1e-3, "max_depth": 10.0}},
        "data": {"name": "nyu_csv", "args": data_args, "train_split": "train", "val_split": None,
                 "test_split": None, "batch_size": args.batch_size, "workers": args.workers,
                 "input_size": [height, width], "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
        # random crops of 7/8 of the resized frame, multiples of 32 for the encoder's five stride-2 stages
        "augment": {"hflip": 0.5, "brightness": 0.2, "contrast": 0.2, "saturation": 0.2,
                    "crop": [max(32, height * 7 // 8 // 32 * 32), max(32, width * 7 // 8 // 32 * 32)]},
        "optim": {"name": "adamw", "lr": args.lr, "weight_decay": 0.01, "clip_grad": 1.0},
        "schedule": {"name": "cosine", "warmup_epochs": min(1, args.epochs - 1)},
        "loss": {"silog": 1.0, "grad": 0.5},
        "train": {"epochs": args.epochs, "export": "last", "threads": args.threads},
    }, source="examples/depth_nyu.py")
    summary = Trainer(config).fit()

    # The test frames, scored separately so the protocol's steps are visible: the model's own preprocessing, then
    # metrics at the ground truth's resolution.
    from rwkv_vision import from_pretrained

    model = from_pretrained(summary["model_dir"])
    test = build_dataset("nyu_csv", data_args, "test", transform=eval_preprocessing(model, "depth"))
    metrics = evaluate(model, test, "depth", batch_size=4, output_dir=Path(args.output) / "eval")
    print(f"{len(test)} test frames: " + ", ".join(
        f"{k} {metrics[k]:.3f}" for k in ("d1", "d2", "d3", "abs_rel", "rmse", "log10")))
    print(f"model in {summary['model_dir']}, panels in {Path(args.output) / 'eval'}")
    return metrics


if __name__ == "__main__":
    main()
