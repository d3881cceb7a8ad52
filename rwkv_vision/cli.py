"""The ``rwkv-vision`` command line: thin subcommands over the Python API."""

from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rwkv-vision", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("info", help="versions, device, and which WKV backend runs and why")
    p.add_argument("--check", action="store_true", help="also run the WKV operator and compare with PyTorch")
    args = parser.parse_args(argv)
    if args.command == "info":
        from . import info

        return info.main(check=args.check)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
