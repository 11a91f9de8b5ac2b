"""The ``vitrt`` command line. Each subcommand is a thin layer over a Python function."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from .errors import VitrtError

log = logging.getLogger("vitrt")


def _cmd_list_models(args: argparse.Namespace) -> int:
    from models import list_models

    print("\n".join(list_models(args.pattern)))
    return 0


def _cmd_inspect(args: argparse.Namespace) -> int:
    from .inspect import model_card

    print(
        model_card(
            args.model,
            img_size=args.img_size,
            fusion=args.fusion,
            attention=args.attention,
            checkpoint=args.checkpoint,
        )
    )
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(model_name=args.model, img_size=args.img_size)


def _add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="a model name (see `vitrt list-models`)")
    p.add_argument("--img-size", type=int, default=224, help="square input side in pixels (default 224)")
    p.add_argument("--fusion", default=None, help="token fusion preset: mctf, mctf-fast, tome")
    p.add_argument("--attention", default=None, help="attention: dense, scatterbrain, lsh, performer")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vitrt", description="Compile vision transformers into verified, profiled engines."
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("list-models", help="list the models vitrt can build")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 't2t*'")
    p.set_defaults(func=_cmd_list_models)

    p = sub.add_parser("inspect", help="model card: parameters, MACs, tokens per stage, preprocessing")
    _add_model_options(p)
    p.add_argument("--checkpoint", default=None, help="load these weights first (.pth/.pth.tar/.safetensors)")
    p.set_defaults(func=_cmd_inspect)

    p = sub.add_parser("demo", help="build a model, check it against itself in batch, time it on CPU")
    p.add_argument("--model", default="t2t_vit_7", help="model name (default t2t_vit_7)")
    p.add_argument("--img-size", type=int, default=224)
    p.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``vitrt`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=(logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)],
        format="%(levelname)s %(name)s: %(message)s",
    )
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except VitrtError as err:
        print(f"vitrt {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
