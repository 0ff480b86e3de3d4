"""``memoptim plot trajectories``: one-off trajectory pictures on the toy surfaces.

Example::

    memoptim plot trajectories --surface goldstein-price --optimizers adam,adam+cm

Each optimizer starts from the same points (random, or given with ``--start x,y``),
with the paper's Table 11 hyperparameters where it lists the optimizer (lr 0.1
otherwise; ``--lr`` overrides), 500 steps, learning rate / 10 at step 250.
"""

from __future__ import annotations

import argparse
import importlib.util

from memoptim.cli.common import HelpFormatter, fail, optimizer_names

SURFACE_CHOICES = ("goldstein-price", "ackley", "levy", "ackley-rosenbrock")


def _point(text: str) -> tuple[float, float]:
    try:
        x, y = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected x,y, got {text!r}") from None
    return x, y


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("plot", help="one-off pictures (trajectories on toy surfaces)")
    kinds = p.add_subparsers(dest="plot_kind", metavar="KIND", required=True)
    t = kinds.add_parser("trajectories", help="optimizer trajectories on a 2-D toy surface",
                         formatter_class=HelpFormatter)
    t.add_argument("--surface", default="goldstein-price", choices=SURFACE_CHOICES)
    t.add_argument("--optimizers", default="adam,adam+cm", metavar="NAMES",
                   help=f"comma-separated names among: {', '.join(optimizer_names())} "
                        "(default: adam,adam+cm)")
    t.add_argument("--out", default=None, metavar="FILE",
                   help="PNG file (default: trajectories-<surface>.png)")
    t.add_argument("--start", type=_point, action="append", metavar="X,Y",
                   help="starting point (repeatable); default: --n-starts random points")
    t.add_argument("--n-starts", type=int, default=4, help="random starting points (default 4)")
    t.add_argument("--seed", type=int, default=0, help="seed of the random starting points")
    t.add_argument("--steps", type=int, default=500)
    t.add_argument("--lr", type=float, default=None, help="override every learning rate")
    t.add_argument("--constant-lr", action="store_true",
                   help="no learning-rate drop (default: / 10 at half the steps)")
    t.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if importlib.util.find_spec("matplotlib") is None:
        return fail("plot", "this command needs the optional package 'matplotlib', which is not "
                            "installed: pip install 'memoptim[lab]'")
    import torch

    from memoptim.lab.plots import plot_trajectories
    from memoptim.lab.reproduce import START_BOXES, TABLE11
    from memoptim.lab.surfaces import get_surface
    from memoptim.lab.toy import run_toy
    from memoptim.registry import OPTIMIZERS

    surface = get_surface(args.surface)
    names = [n.strip().lower() for n in args.optimizers.split(",") if n.strip()]
    unknown = [n for n in names if n not in OPTIMIZERS]
    if not names or unknown:
        return fail("plot", f"unknown optimizer(s) {', '.join(map(repr, unknown)) or '(none given)'}; "
                            f"valid names: {', '.join(OPTIMIZERS)}")
    if args.steps < 1 or args.n_starts < 1:
        return fail("plot", "--steps and --n-starts must be >= 1")
    box = START_BOXES.get(surface.name, surface.box)
    if args.start:
        x0 = torch.tensor(args.start, dtype=torch.float64)
    else:
        g = torch.Generator().manual_seed(args.seed)
        x0 = box[0] + (box[1] - box[0]) * torch.rand(args.n_starts, 2, generator=g,
                                                     dtype=torch.float64)
    trajectories = {}
    for name in names:
        hp = dict(TABLE11.get(name, {"lr": 0.1}))
        if args.lr is not None:
            hp["lr"] = args.lr
        drop = None if args.constant_lr else args.steps // 2
        run_ = run_toy(surface.fn, x0, name, hp, steps=args.steps, lr_drop_at=drop)
        trajectories[name] = run_.trajectory
        finals = ", ".join(f"{v:.3f}" for v in run_.final_loss.tolist())
        print(f"{name:<12} final loss: {finals}")
    pts = torch.cat([t.reshape(-1, 2) for t in trajectories.values()])
    pts = pts[torch.isfinite(pts).all(1)]
    lo = torch.minimum(pts.min(0).values, torch.tensor([box[0], box[0]], dtype=pts.dtype))
    hi = torch.maximum(pts.max(0).values, torch.tensor([box[1], box[1]], dtype=pts.dtype))
    pad = 0.08 * (hi - lo)
    lo, hi = lo - pad, hi + pad
    out = args.out or f"trajectories-{surface.name}.png"
    path = plot_trajectories(
        surface.fn, trajectories, out, box=(float(lo[0]), float(hi[0]), float(lo[1]), float(hi[1])),
        minimum=surface.minimum,
        title=f"{surface.name} (eq. {surface.equation}), {args.steps} steps")
    print(f"wrote {path}")
    return 0
