"""
Cramming's ablation study (Geiping & Goldstein 2022, Sec. 4): which changes to BERT's pretraining recipe
help under a fixed compute budget? We train the full crammed recipe and, for each recipe change, a variant
with just that change undone (the original-BERT choice), all for the same wall-clock budget on the same
data, and compare held-out MLM loss on one fixed validation set.

    python -m experiments.ablate --minutes 3 --preset mini --corpus ../shared/data/wiki
    python -m experiments.ablate --seconds 20 --preset tiny --only post-ln,dense-head --seeds 3

Equal wall-clock is the point: a change that makes each step slower (a dense head, dropout) must pay for
it with fewer tokens, exactly as in the paper's one-day budget.

Adding a switch (the course-assignment path):
  1. a training setting: one field in config.py's TrainConfig, `name: type = flag(crammed default, "help")`,
     which is also its flag --name (in `python train.py --help`); a model setting: a ModelConfig field
     (model.py) and one line in config.py's MODEL_FLAGS. Make the code use it;
  2. add one line to VARIANTS below. The table, JSON and plot pick it up.
"""
import argparse
import json
import os
import shutil
import statistics
from dataclasses import dataclass, field

from data.files import write_json
from data.loader import is_prepared
from data.prepare import PrepareConfig, default_corpus, prepare
from plot import pyplot
from run.config import TrainConfig
from train import train

# name: (what the variant changes, the TrainConfig fields it sets). "full" is the reference.
VARIANTS = {
    "full": ("the crammed recipe", {}),
    "post-ln": ("post-LN blocks (BERT)", {"model_overrides": {"norm_position": "post"}}),
    "biases": ("biases in linear layers", {"model_overrides": {"bias": True}}),
    "gelu-ffn": ("plain GELU feed-forward", {"model_overrides": {"ffn": "gelu"}}),
    "dense-head": ("MLM logits at every position", {"model_overrides": {"mlm_head": "dense"}}),
    "learned-pos": ("learned position embeddings", {"model_overrides": {"pos_emb": "learned"}}),
    "dropout": ("dropout 0.1 in pretraining", {"model_overrides": {"dropout": 0.1}}),
    "bert-schedule": ("warmup + linear decay by steps", {"schedule": "bert"}),
    "constant-lr": ("constant learning rate", {"schedule": "constant"}),
    "no-ramp": ("full batch from the first step", {"batch_ramp": False}),
    "mask-0.15": ("BERT's 15% masking", {"mask_rate": 0.15}),
    "untied": ("separate output embedding", {"model_overrides": {"tie_embeddings": False}}),
    "no-filter": ("no compression filter on the data", {"max_tokens_per_char": 0.0}),
}


@dataclass
class AblationConfig:
    budget_seconds: float = 180.0  # training budget of every run
    preset: str = "mini"  # model size
    variants: list = field(default_factory=lambda: list(VARIANTS))  # which rows to run ("full" is always run)
    seeds: int = 1  # runs per variant (different initialisation, data order and masking)
    corpus: str = field(default_factory=default_corpus)  # raw text, prepared twice (filter on and off)
    max_train_tokens: int = 0  # cap on prepared training tokens (0 = all)
    val_fraction: float = 0.005  # share of documents held out for validation
    data_dir: str = "data/cache/ablate"  # prepared token folders go here
    out_dir: str = "runs/ablate"  # one folder per run, ablation.json, ablation.png
    seq_len: int = 128
    batch_tokens: int = 16384  # full batch; small, since CPU budgets are minutes
    micro_batch_size: int = 32
    lr: float = 1e-3
    eval_rows: int = 512
    eval_interval: float = 0.05  # budget fraction between evaluations: the points of each run's curve


def prepare_data(config: AblationConfig) -> dict:
    """Two token folders: the recipe's (filtered) and an unfiltered one. The unfiltered folder gets the
    filtered validation file, so every variant is judged on the same held-out documents."""
    folders = {0.3: os.path.join(config.data_dir, "filtered"), 0.0: os.path.join(config.data_dir, "unfiltered")}
    for threshold, folder in folders.items():
        if not is_prepared(folder):
            prepare(PrepareConfig(corpus=config.corpus, out_dir=folder, max_tokens_per_char=threshold,
                                  max_train_tokens=config.max_train_tokens, val_fraction=config.val_fraction))
    shutil.copyfile(os.path.join(folders[0.3], "val.bin"), os.path.join(folders[0.0], "val.bin"))
    return folders


def run_variant(config: AblationConfig, name: str, seed: int, folders: dict, full_steps: int) -> dict:
    changes = VARIANTS[name][1]
    settings = dict(data_dir=folders[changes.get("max_tokens_per_char", 0.3)], preset=config.preset,
                    budget_seconds=config.budget_seconds, seq_len=config.seq_len, batch_tokens=config.batch_tokens,
                    micro_batch_size=config.micro_batch_size, lr=config.lr, eval_rows=config.eval_rows,
                    eval_interval=config.eval_interval,
                    out_dir=os.path.join(config.out_dir, f"{name}-seed{seed}"), seed=seed, progress_bar=False)
    if changes.get("schedule") == "bert":
        # BERT's schedule counts steps, so it must be told the total in advance; we give it the step count
        # the full recipe reached in this budget (an oracle one rarely has), with BERT's 1% warmup.
        settings.update(schedule_steps=full_steps, warmup_steps=max(1, full_steps // 100))
    shutil.rmtree(settings["out_dir"], ignore_errors=True)  # a fresh run, never a resumed one
    summary = train(TrainConfig(**{**settings, **changes}))
    with open(summary["log"]) as f:
        evals = [r for r in map(json.loads, f) if r["kind"] == "eval"]
    return {"variant": name, "seed": seed, "params": summary["params"], "tokens": summary["tokens"], "steps": summary["steps"],
            "tokens_per_second": summary["tokens"] / summary["elapsed_seconds"],
            "final_val_loss": summary["final_val_loss"], "curve": [(r["elapsed"], r["val_loss"]) for r in evals],
            "unigram_loss": evals[-1]["unigram_loss"] if evals else None}


def ablate(config: AblationConfig) -> list[dict]:
    unknown = set(config.variants) - set(VARIANTS)
    if unknown:
        raise ValueError(f"unknown variants {sorted(unknown)}; choose from {', '.join(VARIANTS)}")
    folders = prepare_data(config)
    names = ["full"] + [name for name in config.variants if name != "full"]
    runs = []
    for seed in range(config.seeds):
        full_steps = 0
        for name in names:
            print(f"[ablate] {name} (seed {seed}): {VARIANTS[name][0]}, {config.budget_seconds:.0f}s")
            run = run_variant(config, name, seed, folders, full_steps)
            if name == "full":
                full_steps = run["steps"]
            runs.append(run)
    return runs


def summarise(runs: list[dict]) -> list[dict]:
    """One row per variant: means over seeds, and the loss difference to the full recipe (same seed)."""
    full_loss = {r["seed"]: r["final_val_loss"] for r in runs if r["variant"] == "full"}
    rows = []
    for name in dict.fromkeys(r["variant"] for r in runs):
        mine = [r for r in runs if r["variant"] == name]
        deltas = [r["final_val_loss"] - full_loss[r["seed"]] for r in mine]
        rows.append({"variant": name, "change": VARIANTS[name][0], "params": mine[0]["params"],
                     "tokens": statistics.mean(r["tokens"] for r in mine),
                     "tokens_per_second": statistics.mean(r["tokens_per_second"] for r in mine),
                     "final_val_loss": statistics.mean(r["final_val_loss"] for r in mine),
                     "delta": statistics.mean(deltas), "delta_spread": statistics.stdev(deltas) if len(deltas) > 1 else 0.0,
                     "seeds": len(mine)})
    return rows


def format_table(rows: list[dict]) -> str:
    lines = ["| variant | change | params | tokens | tokens/s | final val loss | Δ vs full |", "|---|---|---|---|---|---|---|"]
    for row in rows:
        spread = f" ± {row['delta_spread']:.3f}" if row["seeds"] > 1 else ""
        lines.append(f"| {row['variant']} | {row['change']} | {row['params'] / 1e6:.2f}M | {row['tokens']:,.0f} | "
                     f"{row['tokens_per_second']:,.0f} | {row['final_val_loss']:.4f} | {row['delta']:+.3f}{spread} |")
    return "\n".join(lines)


def save_results(config: AblationConfig, runs: list[dict], rows: list[dict]):
    os.makedirs(config.out_dir, exist_ok=True)
    path = os.path.join(config.out_dir, "ablation.json")
    write_json(path, {"config": config.__dict__, "rows": rows, "runs": runs}, indent=2)
    plt = pyplot()
    if plt is None:
        print(f"wrote {path} (install matplotlib for a plot of the loss curves)")
        return
    figure, axis = plt.subplots(figsize=(9, 6))
    for run in runs:
        if run["seed"] == 0 and run["curve"]:
            elapsed, loss = zip(*run["curve"])
            axis.plot(elapsed, loss, label=run["variant"], linewidth=2.5 if run["variant"] == "full" else 1)
    unigram = next((run["unigram_loss"] for run in runs if run["unigram_loss"]), None)
    if unigram is not None:  # every variant shares the data, so one line: below it the models use context
        axis.axhline(unigram, color="grey", linestyle="--", linewidth=1, label="unigram line")
    axis.set(xlabel="training seconds", ylabel="held-out MLM loss", title="cramming ablation (seed 0)")
    axis.legend(fontsize=8)
    figure.savefig(os.path.join(config.out_dir, "ablation.png"), dpi=120)
    print(f"wrote {path} and ablation.png")


def main(argv=None):
    defaults = AblationConfig()
    parser = argparse.ArgumentParser(prog="python -m experiments.ablate",
                                     description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--minutes", type=float, help="training budget of each run (default 3)")
    budget.add_argument("--seconds", type=float, help="the same in seconds")
    parser.add_argument("--preset", default=defaults.preset, help="model size (tiny, mini, small, base, crammed)")
    parser.add_argument("--only", default="", help=f"comma-separated variants to run besides full: {', '.join(VARIANTS)}")
    parser.add_argument("--seeds", type=int, default=defaults.seeds, help="runs per variant; >1 shows the spread")
    parser.add_argument("--corpus", default=defaults.corpus, help="raw text: file, folder, glob or URL")
    parser.add_argument("--max-train-tokens", type=int, default=0, help="cap the prepared training tokens (0 = all)")
    parser.add_argument("--val-fraction", type=float, default=defaults.val_fraction, help="share of documents held out")
    parser.add_argument("--data-dir", default=defaults.data_dir, help="where the two prepared token folders go")
    parser.add_argument("--out-dir", default=defaults.out_dir, help="runs, ablation.json and ablation.png")
    parser.add_argument("--seq-len", type=int, default=defaults.seq_len, help="tokens per row")
    parser.add_argument("--batch-tokens", type=int, default=defaults.batch_tokens, help="full batch in tokens")
    parser.add_argument("--micro-batch-size", type=int, default=defaults.micro_batch_size, help="rows per forward pass")
    parser.add_argument("--lr", type=float, default=defaults.lr, help="peak learning rate")
    parser.add_argument("--eval-rows", type=int, default=defaults.eval_rows, help="rows in the validation set")
    parser.add_argument("--eval-interval", type=float, default=defaults.eval_interval,
                        help="budget fraction between evaluations (each run's loss curve)")
    args = parser.parse_args(argv)
    budget_seconds = args.minutes * 60 if args.minutes else args.seconds or defaults.budget_seconds
    config = AblationConfig(
        budget_seconds=budget_seconds, preset=args.preset, seeds=args.seeds, corpus=args.corpus,
        variants=[v for v in args.only.split(",") if v] or list(VARIANTS), max_train_tokens=args.max_train_tokens,
        val_fraction=args.val_fraction, data_dir=args.data_dir, out_dir=args.out_dir, seq_len=args.seq_len, batch_tokens=args.batch_tokens,
        micro_batch_size=args.micro_batch_size, lr=args.lr, eval_rows=args.eval_rows, eval_interval=args.eval_interval)
    try:
        runs = ablate(config)
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(f"error: {error}")
    rows = summarise(runs)
    print(format_table(rows))
    save_results(config, runs, rows)


if __name__ == "__main__":
    main()
