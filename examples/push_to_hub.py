"""Publish a saved model folder (``rwkv-vision train``'s ``model/``, or anything ``save_pretrained`` wrote) on the
Hugging Face Hub: config.json, model.safetensors and the model card, in one commit.

    python examples/push_to_hub.py runs/ck48_rwkv_vit/model my-org/rwkv-vit-nano-ck48 [--private] [--branch B]

The token comes from ``--token``, else ``HF_TOKEN`` or ``huggingface-cli login``; ``HF_ENDPOINT`` points it at
another Hub server. The model is loaded (strictly, checking its config) before anything is uploaded, and the card's
loading snippet names the repository. Afterwards anyone can run ``rwkv_vision.from_pretrained("my-org/...")``.
"""

from __future__ import annotations

import argparse

import rwkv_vision


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", help="a model folder saved by save_pretrained / rwkv-vision train")
    parser.add_argument("repo_id", help="the Hub repository, e.g. my-org/rwkv-vit-nano-ck48 (created if missing)")
    parser.add_argument("--private", action="store_true", help="create the repository as private")
    parser.add_argument("--branch", default=None, help="push to this branch (default: main)")
    parser.add_argument("--token", default=None, help="Hub token (default: HF_TOKEN or the saved login)")
    parser.add_argument("--message", default="Upload rwkv-vision model", help="commit message")
    args = parser.parse_args(argv)

    model = rwkv_vision.from_pretrained(args.folder)  # fails here, naming the problem, if the folder is broken
    url = model.push_to_hub(args.repo_id, private=args.private, branch=args.branch, token=args.token,
                            commit_message=args.message)
    print(f"pushed {type(model).__name__} from {args.folder} to {url}")
    print(f"load it with: rwkv_vision.from_pretrained({args.repo_id!r})")
    return url


if __name__ == "__main__":
    main()
