"""
Chinchilla's IsoFLOP sweep (Hoffmann et al. 2022, Sec. 3.2 and Fig. 3) at our scale: several model sizes per
compute level, each trained by train.py to exactly that many FLOPs, then the law of scaling.py fitted to the
final losses and plotted.

    python -m experiments.scaling_sweep --flops 1e12,3e12 --sizes 3 --data-dir data/cache/wiki00 --batch-tokens 4096 --micro-batch-size 32

The sweep is resumable: the same command again skips finished runs and resumes an interrupted one.
"""
import argparse
import json
import os
from dataclasses import asdict, replace

from data.files import write_json
from data.loader import read_meta
from plot import pyplot
from run.config import AUTO_MICRO_BATCH, TrainConfig
from run.corpus import prepared_tokenizer_settings
from scaling import ScalingLaw, best_candidate, candidates, fit_flags, fit_law, report_fit, size_overrides
from train import train

# ----------------------------------------------------------------------------------------------------
# IsoFLOP sweep (paper Sec. 3.2): several sizes per compute level, each trained to exactly that compute

def sweep(flops_levels: list[float], base: TrainConfig, out_dir: str, sizes: int = 5) -> list[dict]:
    """Train `sizes` neighbouring shapes around the Chinchilla-optimal one at every compute level, each run
    scheduled over exactly its FLOP budget (the paper matches the cosine cycle to each run's length; our
    one-cycle schedule follows train.py's progress, here FLOPs spent / budget). `base` carries everything
    else (data, batch, seed, device). Points go to out_dir/points.json after every run. Ctrl-C stops the
    sweep with the current run checkpointed; the same command again skips finished runs and resumes it."""
    os.makedirs(out_dir, exist_ok=True)
    points_path = os.path.join(out_dir, "points.json")
    points = []
    if os.path.exists(points_path):
        with open(points_path) as f:
            points = json.load(f)
    for compute in flops_levels:
        table = candidates(compute, "chinchilla", base.seq_len, base.micro_batch_size)
        centre = table.index(best_candidate(table, "chinchilla"))
        first = min(max(0, centre - sizes // 2), len(table) - sizes)
        for row in table[first:first + sizes]:
            name = f"C{compute:.1e}_{row.config.n_layer}x{row.config.n_embd}"
            if any(p["run"] == name for p in points):
                continue
            run_dir = os.path.join(out_dir, name)
            summary = train(replace(base, out_dir=run_dir, init_from="",
                                    resume=os.path.isfile(os.path.join(run_dir, "ckpt.pt")),
                                    model_overrides={**base.model_overrides, **size_overrides(row.config)},
                                    budget_seconds=0.0, max_steps=0, max_flops=compute))
            if not summary["finished"]:  # stopped by a signal: its loss is not a point of the sweep
                raise RuntimeError(f"{name} was interrupted (checkpointed); run the same command to resume the sweep")
            points.append({"N": summary["params"], "D": summary["tokens"], "loss": summary["final_val_loss"],
                           "C": compute, "run": name})
            write_json(points_path, points)  # a crash mid-sweep keeps every finished run
    return points


def plot_sweep(points: list[dict], law: ScalingLaw, path: str):
    """Loss against N, one colour per compute level, the fitted law dashed at the same (N, D)."""
    plt = pyplot()
    if plt is None:
        print("matplotlib is not installed: skipping the plot")
        return
    figure, axes = plt.subplots(figsize=(6, 4))
    for compute in sorted({p["C"] for p in points}):
        level = sorted((p for p in points if p["C"] == compute), key=lambda p: p["N"])
        n = [p["N"] for p in level]
        dots = axes.plot(n, [p["loss"] for p in level], "o-", label=f"C = {compute:.1e}")
        axes.plot(n, [law.loss(p["N"], p["D"]) for p in level], "--", color=dots[0].get_color())
    axes.set(xscale="log", xlabel="parameters N", ylabel="validation MLM loss", title="IsoFLOP sweep; dashed: fit")
    axes.legend()
    figure.savefig(path, dpi=120, bbox_inches="tight")
    print(f"wrote {path}")


# ----------------------------------------------------------------------------------------------------
# Command line

def main(argv=None):
    sweep_parser = argparse.ArgumentParser(prog="python -m experiments.scaling_sweep",
                                           description=__doc__, parents=[fit_flags()],
                                           formatter_class=argparse.RawDescriptionHelpFormatter)
    sweep_parser.add_argument("--flops", required=True, help="comma-separated compute levels, e.g. 1e14,3e14,1e15")
    sweep_parser.add_argument("--sizes", type=int, default=5, help="model sizes per compute level")
    sweep_parser.add_argument("--out-dir", default="runs/sweep", help="for the runs, points.json, law.json, the plot")
    sweep_parser.add_argument("--data-dir", default=TrainConfig.data_dir, help="prepared token files (train.py)")
    sweep_parser.add_argument("--corpus", help="train.py --corpus: text to prepare if --data-dir is empty")
    sweep_parser.add_argument("--batch-tokens", type=int, default=TrainConfig.batch_tokens,
                              help="tokens per optimizer step; small budgets need small batches to take enough steps")
    sweep_parser.add_argument("--micro-batch-size", type=int, default=AUTO_MICRO_BATCH,
                              help="rows per forward pass")
    sweep_parser.add_argument("--lr", type=float, default=TrainConfig.lr, help="peak learning rate of every run")
    sweep_parser.add_argument("--device", default=TrainConfig.device, help="auto, cuda, mps or cpu")
    sweep_parser.add_argument("--seed", type=int, default=TrainConfig.seed, help="seed of every run")
    args = sweep_parser.parse_args(argv)
    # Only the final loss enters the fit, so evaluate four times per run rather than twenty.
    base = TrainConfig(data_dir=args.data_dir, batch_tokens=args.batch_tokens, lr=args.lr, device=args.device,
                       micro_batch_size=args.micro_batch_size, seed=args.seed, eval_interval=0.25,
                       progress_bar=False, **prepared_tokenizer_settings(read_meta(args.data_dir)),
                       **({"corpus": args.corpus} if args.corpus else {}))
    try:
        points = sweep([float(c) for c in args.flops.split(",")], base, args.out_dir, args.sizes)
        law = fit_law([p["N"] for p in points], [p["D"] for p in points], [p["loss"] for p in points],
                      args.delta, args.starts)
    except (FileNotFoundError, ValueError, RuntimeError) as error:  # one clear message, no traceback
        raise SystemExit(f"error: {error}")
    print(report_fit(law, len(points)))
    out = os.path.join(args.out_dir, "law.json")
    write_json(out, asdict(law))
    print(f"wrote {out}")
    plot_sweep(points, law, os.path.join(args.out_dir, "sweep.png"))


if __name__ == "__main__":
    main()
