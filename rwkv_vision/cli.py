"""The ``rwkv-vision`` command line: thin subcommands over the Python API.

    rwkv-vision demo [--output DIR] [--image IMAGE ...] [--depth-model DIR --depth-image IMAGE]
    rwkv-vision info [--check]
    rwkv-vision train --config FILE [KEY=VALUE ...] [--resume]
    rwkv-vision evaluate --model DIR_OR_HUB --data NAME [KEY=VALUE ...] | --data CONFIG [OVERRIDE ...]
    rwkv-vision predict --model DIR_OR_HUB IMAGE [IMAGE ...] [--top-k K] [--json] [--output DIR]
    rwkv-vision benchmark {wkv,models,poster,unet_depth,report} [SCRIPT ARGS ...]   (from a source checkout)

Several processes: ``torchrun --nproc_per_node=N -m rwkv_vision.cli train --config FILE``.
"""

from __future__ import annotations

import argparse
import json


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(args.output, images=args.image, top_k=args.top_k, depth_model=args.depth_model,
             depth_image=args.depth_image, device=args.device)
    return 0


def _train(args: argparse.Namespace) -> int:
    from .train import Trainer, load_config

    Trainer(load_config(args.config, args.overrides)).fit(resume=args.resume)
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from .evaluate import evaluate_command

    result = evaluate_command(args.model, args.data, split=args.split, output_dir=args.output,
                              batch_size=args.batch_size, workers=args.workers, device=args.device,
                              precision=args.precision, panels=args.panels)
    shown = {k: v for k, v in result.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    print(json.dumps(shown, indent=1))
    for note in result.get("notes", []):
        print(f"note: {note}")
    print(f"results in {result['output_dir']}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from .predict import format_table, predict

    results = predict(args.model, args.images, top_k=args.top_k, output_dir=args.output, device=args.device)
    print(json.dumps(results, indent=1) if args.json else format_table(results))
    return 0


BENCHMARKS = ("wkv", "models", "poster", "unet_depth", "report")


def _benchmark(args: argparse.Namespace) -> int:
    """Run benchmarks/bench_NAME.py (or report.py) of the source checkout with the remaining arguments."""
    import runpy
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / (
        "report.py" if args.name == "report" else f"bench_{args.name}.py")
    if not script.is_file():
        raise FileNotFoundError(f"{script} not found: the benchmarks ship with the source checkout, not the wheel")
    sys.argv = [str(script), *args.script_args]
    sys.path.insert(0, str(script.parent))  # as `python benchmarks/x.py` would: the scripts share common.py
    runpy.run_path(str(script), run_name="__main__")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rwkv-vision", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="expressions of the faces in the bundled photos (bundled model), offline")
    p.add_argument("--output", default="rwkv-vision-demo", help="folder for the face crops, results.json, depth PNGs")
    p.add_argument("--image", nargs="+", default=None, metavar="IMAGE",
                   help="your photographs instead of the bundled ones (faces detected; needs rwkv-vision[faces])")
    p.add_argument("--top-k", type=int, default=3, help="expressions shown per face")
    p.add_argument("--depth-model", default=None, help="a trained UNetDepth folder (none ships: see the docs)")
    p.add_argument("--depth-image", default=None, help="indoor photograph for --depth-model")
    p.add_argument("--device", default="cpu")

    p = sub.add_parser("info", help="versions, device, and which WKV backend runs and why")
    p.add_argument("--check", action="store_true", help="also run the WKV operator and compare with PyTorch")

    p = sub.add_parser("train", help="train a model from a config file (YAML, TOML or JSON)")
    p.add_argument("--config", required=True, help="config file, e.g. configs/ck48_rwkv_vit.yaml")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. optim.lr=1e-3")
    p.add_argument("--resume", action="store_true", help="continue from OUTPUT/checkpoint.pt")

    p = sub.add_parser("evaluate", help="metrics of a saved model on a data set (JSON, confusion matrix / panels)")
    p.add_argument("--model", required=True, help="folder saved by train/save_pretrained, or a Hub repository")
    p.add_argument("--data", required=True, nargs="+", metavar="SPEC",
                   help="NAME [KEY=VALUE ...] (e.g. ckplus root=data/ckplus48 fold=0), or a training config file "
                        "[OVERRIDE ...]")
    p.add_argument("--split", default=None, help="split to evaluate (default: the config's test split, or 'test')")
    p.add_argument("--output", default=None,
                   help="results folder (default: eval-NAME-SPLIT beside the model folder)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=0, help="data loading processes")
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="none", choices=("none", "bf16", "fp16"))
    p.add_argument("--panels", type=int, default=4, help="depth: image|truth|prediction rows in panels.png")

    p = sub.add_parser("predict", help="top-k labels (classification) or depth maps (depth) for image files")
    p.add_argument("--model", required=True, help="folder saved by train/save_pretrained, or a Hub repository")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--top-k", type=int, default=5, help="classification: labels shown per image")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--output", default="predictions", help="depth: folder for the PNG files")
    p.add_argument("--device", default="cpu")

    p = sub.add_parser("benchmark", help="run a benchmark script of the source checkout (benchmarks/)")
    p.add_argument("name", choices=BENCHMARKS)
    p.add_argument("script_args", nargs=argparse.REMAINDER, help="arguments passed to the script")

    args = parser.parse_args(argv)
    if args.command == "demo" and (args.depth_model is None) != (args.depth_image is None):
        parser.error("demo: --depth-model and --depth-image go together (no indoor image is bundled)")
    if args.command == "info":
        from . import info

        return info.main(check=args.check)
    from .train.config import ConfigError

    try:
        commands = {"demo": _demo, "train": _train, "evaluate": _evaluate, "predict": _predict, "benchmark": _benchmark}
        return commands[args.command](args)
    except (ConfigError, FileNotFoundError, ImportError) as exc:  # the user's input: the message says what, no traceback
        parser.exit(2, f"rwkv-vision {args.command}: error: {exc}\n")


if __name__ == "__main__":
    raise SystemExit(main())
