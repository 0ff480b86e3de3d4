"""``memoptim demo``: Adam vs Adam+CG vs Adam+CM on the Goldstein-Price surface, in seconds.

Each starting point is its own parameter tensor (one buffer per run, priority
per tensor), with the paper's Table 11 hyperparameters, 500 steps and the
learning rate divided by 10 at step 250.  Prints the mean and best final loss.
"""

from __future__ import annotations

import argparse

# (registry name, hyperparameters) from the paper's Table 11 (Goldstein-Price column).
DEMO_OPTIMIZERS: dict[str, dict] = {
    "adam": {"lr": 0.1, "betas": (0.9, 0.99)},
    "adam+cg": {"lr": 0.1, "betas": (0.9, 0.99), "buffer_size": 5, "decay": 0.7},
    "adam+cm": {"lr": 0.1, "betas": (0.9, 0.999), "buffer_size": 20, "decay": 0.99},
}


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("demo", help="quick Adam / Adam+CG / Adam+CM comparison on Goldstein-Price")
    p.add_argument("--points", type=int, default=20, help="random starting points in [-2, 2]^2")
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def final_losses(name: str, starts, steps: int) -> list[float]:
    import torch

    from memoptim import create_optimizer
    from memoptim.lab.surfaces import goldstein_price

    params = [s.clone().requires_grad_(True) for s in starts]
    hp = dict(DEMO_OPTIMIZERS[name])
    if name != "adam":
        hp["priority"] = "tensor"  # one independent buffer per starting point
    opt = create_optimizer(name, params, **hp)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[steps // 2], gamma=0.1)
    for _ in range(steps):
        opt.zero_grad()
        goldstein_price(torch.stack(params)).sum().backward()
        opt.step()
        sched.step()
    with torch.no_grad():
        return goldstein_price(torch.stack(params)).tolist()


def run(args: argparse.Namespace) -> int:
    import torch

    if args.points < 1 or args.steps < 2:
        raise SystemExit("demo: --points must be >= 1 and --steps >= 2")
    g = torch.Generator().manual_seed(args.seed)
    starts = list(-2 + 4 * torch.rand(args.points, 2, generator=g, dtype=torch.float64))
    print(f"Goldstein-Price (log-scaled, global minimum -3.129), {args.points} starts, {args.steps} steps")
    print(f"{'optimizer':<10} {'mean final loss':>16} {'best':>9} {'reached global basin':>21}")
    for name in DEMO_OPTIMIZERS:
        losses = final_losses(name, starts, args.steps)
        hits = sum(v < -3.0 for v in losses)
        print(f"{name:<10} {sum(losses) / len(losses):>16.4f} {min(losses):>9.4f} "
              f"{hits:>14d}/{len(losses)}")
    return 0
