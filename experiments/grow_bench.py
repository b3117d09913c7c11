"""
The LiGO paper's comparison (Wang et al. 2023, Fig. 2 and Table 1, at toy scale): held-out MLM loss against
training FLOPs for a big model trained from scratch and for the same model grown from a trained small one
by each method of grow.py, every run on the same FLOP budget.

    python -m experiments.grow_bench --data-dir data/cache/wiki00 --out-dir runs/grow_bench
    python -m experiments.grow_bench --data-dir data/cache/wiki00 --out-dir runs/grow_seeds --seeds 0,1,2   # mean ± spread

FLOPs saved is reported two ways. "Small charged": the small model's training counts against the grown runs,
the fair account when the small model is trained for the purpose. "Small given": it does not, the paper's
setting (Sec. 4: growth starts from an existing pretrained model); the operator's steps count in both.

The small model and the grown one share one one-cycle schedule over the whole budget: the small run is its first
--small-fraction (train.py --schedule-to) and stops with the learning rate still up, the operator's FLOPs pass
on the schedule's clock, and the grown run continues from there (--schedule-from) with a fresh optimizer and no
second warmup to the peak, as LiGO's released recipe trains the grown BERT (--warmup_steps 0). --rewarm ramps
the lr up again over a few per cent after growth (default off); --restart-schedule gives every run a one-cycle
of its own instead, the setting of BENCHMARKS.md's first LiGO table.

    python -m experiments.grow_bench --data-dir data/cache/wiki00 --out-dir runs/grow_rewarm --rewarm 0.02     # re-warm after growth
    python -m experiments.grow_bench --data-dir data/cache/wiki00 --out-dir runs/grow_half --grown-lr 1.5e-3  # grown runs at half the peak
    python -m experiments.grow_bench --data-dir data/cache/wiki00 --out-dir runs/grow_rows32 --ligo-steps 25,5 --ligo-rows 32

--scratch-from reuses an earlier comparison's scratch run (the settings are checked), so that another
--small-fraction costs only the small and grown runs:

    python -m experiments.grow_bench --data-dir data/cache/wiki00 --out-dir runs/grow_small50 --small-fraction 0.5 \
        --seeds 0,1,2 --scratch-from 'runs/grow_seeds/seed-{seed}/scratch'
"""
import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field, replace

from data.files import atomic_path, write_json
from data.loader import data_tokenizer, read_meta
from grow import grow_model, growth_flops, mlm_batches, trained_mask_rate
from model import preset_config
from plot import pyplot
from run.checkpoint import load_checkpoint, model_checkpoint, model_from_checkpoint, save_checkpoint
from run.config import TrainConfig
from run.corpus import prepared_tokenizer_settings
from train import train

# ----------------------------------------------------------------------------------------------------
# Benchmark: held-out MLM loss against training FLOPs, every method on the same FLOP budget

@dataclass
class BenchConfig:
    data_dir: str = "data/cache/wiki00"  # prepared token files (python -m data.prepare ...)
    out_dir: str = "runs/grow_bench"  # a folder per run, results.json, curves.png (with matplotlib)
    small: str = "tiny"  # preset of the small model, trained first
    small_overrides: dict = field(default_factory=lambda: dict(n_head=1))  # ModelConfig fields (head dim 64)
    big: str = "mini"  # preset of the big model, trained from scratch or grown from the small one
    big_overrides: dict = field(default_factory=lambda: dict(n_embd=128, n_head=2, intermediate_size=512))
    big_flops: float = 3e12  # scratch's training FLOPs; every grown run stops at the same total
    small_fraction: float = 0.3  # share of big_flops spent pretraining the small model
    methods: tuple = ("stack", "net2net", "ligo")  # growth methods compared with scratch
    ligo_steps: tuple = (100, 5)  # operator steps: a LiGO run for each ("ligo-100": the paper's count)
    ligo_rows: int = 8  # rows per operator step
    shared_qkv: bool = False  # one width expansion for Q, K and V (default: one each, as in the paper)
    ligo_lr: float = 0.03  # operator step size (train_operator divides it by each matrix's fan-in)
    noise: float = 0.01  # LiGO's symmetry-breaking noise of the width copies (stack and net2net stay exact)
    seq_len: int = 64  # tokens per row
    batch_tokens: int = 512  # tokens per optimizer step at full batch (train.py ramps up to it)
    micro_batch_size: int = 8  # rows per forward pass
    lr: float = 3e-3  # peak learning rate of every run (one-cycle over the run's own budget)
    grown_lr: float = 0.0  # the peak the grown runs' part of the shared schedule is scaled to (0 = lr)
    peak_at: float = 0.1  # budget fraction of the peak: short runs cannot afford cramming's 0.75 warmup
    eval_rows: int = 256  # rows of val.bin in the fixed held-out set (fewer: savings drown in noise)
    eval_interval: float = 0.125  # budget fraction between evaluations
    rewarm: float = 0.0  # share of the schedule over which a grown run's lr climbs back from 0 (0 = carries on)
    restart_schedule: bool = False  # every run its own one-cycle: the small one anneals to 0, the grown one warms up
    compile: bool | None = None  # torch.compile every run; None: train.py's default (on CUDA; eager for a CPU's FLOP budgets)
    scratch_from: str = ""  # an earlier comparison's scratch folder to reuse ("{seed}" = the seed); "" = train it
    seed: int = 0


def flops_to_reach(curve: list[tuple[float, float]], loss: float) -> float | None:
    """First x at which a (x, loss) curve gets down to `loss`, interpolated linearly; None if it never does."""
    for i, (x, y) in enumerate(curve):
        if y <= loss:
            if i == 0:
                return x
            x_before, y_before = curve[i - 1]  # above `loss`, so y_before > y
            return x_before + (x - x_before) * (y_before - loss) / (y_before - y)
    return None


def largest_rise(losses: list[float]) -> float | None:
    """The largest increase between consecutive evaluations; None with fewer than two."""
    return max((after - before for before, after in zip(losses, losses[1:])), default=None)


def eval_curve(log_path: str, flops_offset: float, seconds_offset: float) -> list[dict]:
    with open(log_path) as f:
        records = [json.loads(line) for line in f]
    return [{"flops": r["flops"] + flops_offset, "seconds": r["elapsed"] + seconds_offset, "val_loss": r["val_loss"],
             "unigram_loss": r.get("unigram_loss")} for r in records if r["kind"] == "eval"]


def run_settings(config: BenchConfig, name: str, flops: float, **settings) -> dict:
    """The TrainConfig fields the comparison sets for one run, in out_dir/name, stopped at `flops`; `settings` are
    its own fields (everything else is train.py's default)."""
    return dict(
        **prepared_tokenizer_settings(read_meta(config.data_dir)),  # its own tokenizer: no "only applies" warning
        data_dir=config.data_dir, out_dir=os.path.join(config.out_dir, name), budget_seconds=0, max_flops=flops,
        seq_len=config.seq_len, batch_tokens=config.batch_tokens, micro_batch_size=config.micro_batch_size,
        peak_at=config.peak_at, eval_rows=config.eval_rows, eval_interval=config.eval_interval,
        log_interval=5, checkpoint_minutes=1e9, progress_bar=False, compile=config.compile,
        **{"lr": config.lr, **settings})


def train_run(config: BenchConfig, name: str, flops: float, **settings) -> dict:
    """One train.py run of the comparison (run_settings)."""
    summary = train(TrainConfig(**run_settings(config, name, flops, **settings)))
    if summary["interrupted"]:  # train.py caught Ctrl-C / SIGTERM: stop here, not at the next run
        raise KeyboardInterrupt
    return summary


def reused_scratch(config: BenchConfig, expected: dict) -> dict:
    """The finished scratch run in config.scratch_from ("{seed}" becomes the seed), as train_run would return it,
    after checking that its log holds every setting this comparison would give its own scratch run (`expected`,
    run_settings; the folder and the tokenizer fields aside). A sweep over --small-fraction then trains scratch
    once per seed."""
    folder = config.scratch_from.format(seed=config.seed)
    log_path = os.path.join(folder, "log.jsonl")
    if not os.path.isfile(log_path):
        raise FileNotFoundError(f"--scratch-from {folder}: no log.jsonl there (a grow_bench scratch run's folder)")
    with open(log_path) as f:
        records = [json.loads(line) for line in f]
    logged = records[0]["config"]
    # The folder differs by design; the tokenizer fields only apply when train.py prepares a folder (the runs read
    # data_dir's own tokenizer), and runs logged before train_run passed them carry the defaults.
    ignored = {"out_dir", "tokenizer", "vocab_size"}
    as_logged = json.loads(json.dumps({key: value for key, value in expected.items() if key not in ignored}))
    differing = {key: (logged.get(key), value) for key, value in as_logged.items() if logged.get(key) != value}
    if differing:
        raise ValueError(f"--scratch-from {folder} is another run: " + ", ".join(
            f"{key} {was!r} there, {now!r} here" for key, (was, now) in sorted(differing.items())))
    if not any(r["kind"] == "summary" and r.get("finished") for r in records):
        raise ValueError(f"--scratch-from {folder}: that run did not finish its budget")
    print(f"scratch: reused from {folder} (its settings match; its seconds were measured under that run's load)")
    return {"log": log_path}


def bench(config: BenchConfig) -> dict:
    """Train the big model from scratch, the small one on small_fraction of that budget, grow it with each
    method and train on to the same total. The growth curves count the small model's and the operator's FLOPs
    (and seconds). Saved compute = 1 - (FLOPs to reach scratch's final loss) / (scratch's FLOPs)."""
    if not set(config.methods) <= {"stack", "net2net", "ligo"}:
        raise ValueError(f"bench compares growth methods stack, net2net and ligo with scratch, not {config.methods}")
    if not config.grown_lr >= 0:
        raise ValueError(f"--grown-lr {config.grown_lr:g}: must be >= 0 (0 = --lr)")
    if os.path.exists(config.out_dir) and os.listdir(config.out_dir):
        raise ValueError(f"{config.out_dir} is not empty: train.py appends to logs, so pick a fresh --out-dir")
    big_target = preset_config(config.big, **config.big_overrides)
    scratch_settings = dict(preset=config.big, model_overrides=config.big_overrides, seed=config.seed)
    if config.scratch_from:
        scratch = reused_scratch(config, run_settings(config, "scratch", config.big_flops, **scratch_settings))
    else:
        print(f"scratch: {config.big} {config.big_overrides} for {config.big_flops:.3g} FLOPs")
        scratch = train_run(config, "scratch", config.big_flops, **scratch_settings)
    curves = {"scratch": eval_curve(scratch["log"], 0.0, 0.0)}
    print(f"small: {config.small} {config.small_overrides} for {config.small_fraction * config.big_flops:.3g} FLOPs")
    shared = not config.restart_schedule  # one schedule over big_flops: the small run is its first small_fraction
    small_run = train_run(config, "small", config.small_fraction * config.big_flops, preset=config.small,
                          model_overrides=config.small_overrides, seed=config.seed,
                          schedule_to=config.small_fraction if shared else 1.0)
    curves["small"] = eval_curve(small_run["log"], 0.0, 0.0)
    curves.update(grow_and_train(config, big_target, small_run, shared))
    return summarise(config, curves, small_run)


def grow_and_train(config: BenchConfig, big_target, small_run: dict, shared: bool) -> dict:
    """Grow the small run's model to big_target (a ModelConfig) with each method (a LiGO per operator step count),
    train each grown model on to big_flops in all, and return each run's curve, its FLOPs and seconds counting the
    small run's and the operator's. `shared`: the grown run continues the small run's schedule, not one of its own."""
    small_checkpoint = load_checkpoint(small_run["checkpoint"])
    small = model_from_checkpoint(small_checkpoint)
    mask_rate = trained_mask_rate(small_checkpoint)
    curves = {}
    variants = [(method, steps) for method in config.methods for steps in (config.ligo_steps if method == "ligo" else (0,))]
    for method, steps in variants:
        name = f"ligo-{steps}" if method == "ligo" else method
        start = time.perf_counter()
        batches = mlm_batches(config.data_dir, config.seq_len, mask_rate, config.ligo_rows, seed=config.seed + 2)
        grown = grow_model(small, big_target, method, batches, steps, config.ligo_lr, noise=config.noise,
                           seed=config.seed, progress_bar=False, mask_rate=mask_rate, shared_qkv=config.shared_qkv)
        seconds = small_run["elapsed_seconds"] + time.perf_counter() - start
        spent = small_run["flops"] + growth_flops(small.config, big_target, method, steps,
                                                  config.ligo_rows * config.seq_len, config.seq_len, mask_rate)
        path = os.path.join(config.out_dir, name, "grown.pt")
        save_checkpoint(path, model_checkpoint(grown, data_tokenizer(config.data_dir), growth={"method": method}))
        if spent >= config.big_flops:
            raise ValueError(f"{name}: the small model and the operator already spend {spent:.3g} FLOPs "
                             f">= big_flops; lower --small-fraction or --ligo-steps")
        print(f"{name}: grown after {spent:.3g} FLOPs; training on for {config.big_flops - spent:.3g}")
        # Another seed, so another row order and masking: with the small run's seed the grown model would
        # relearn the very examples the small one saw, which costs held-out loss instead of lowering it.
        # The grown run is the rest of the shared schedule: its lr starts where the small run's stopped, moved on by
        # the operator's FLOPs (train.schedule_progress), not at a second warmup's 0.
        summary = train_run(config, name, config.big_flops - spent, init_from=path, seed=config.seed + 1,
                            lr=config.grown_lr or config.lr, rewarm=config.rewarm,
                            schedule_from=spent / config.big_flops if shared else 0.0)
        curves[name] = eval_curve(summary["log"], spent, seconds)
    return curves


def summarise(config: BenchConfig, curves: dict, small_run: dict) -> dict:
    """Each grown run's row (grown and final loss; FLOPs and seconds to reach scratch's final loss, and the share
    saved with the small model charged and given), printed, written to out_dir/results.json and plotted."""
    target = curves["scratch"][-1]["val_loss"]
    total = {"flops": curves["scratch"][-1]["flops"], "seconds": curves["scratch"][-1]["seconds"]}
    small_cost = {"flops": small_run["flops"], "seconds": small_run["elapsed_seconds"]}
    results = {"config": asdict(config), "scratch_final_loss": target, "small_cost": small_cost, "curves": curves,
               "methods": {}}
    for name in curves.keys() - {"scratch", "small"}:
        losses = [point["val_loss"] for point in curves[name]]  # the grown model's, then each evaluation's
        row = {"final_loss": losses[-1], "grown_loss": losses[0],
               # the first evaluation after growth minus the grown model's loss: > 0 is a rise (a schedule that
               # warms up again, a fresh optimizer's first steps) that the grown model then has to win back
               "rise_after_growth": losses[1] - losses[0] if len(losses) > 1 else None,
               # the largest step up anywhere in the curve from growth on (< 0: every evaluation lower than the one
               # before): a re-warmup (--rewarm) can move the rise to a later evaluation instead of removing it
               "largest_rise": largest_rise(losses)}
        for axis in ("flops", "seconds"):
            reached = flops_to_reach([(p[axis], p["val_loss"]) for p in curves[name]], target)
            row[f"{axis}_to_reach"] = reached
            row[f"{axis}_saved"] = None if reached is None else 1 - reached / total[axis]
            row[f"{axis}_saved_small_given"] = None if reached is None else 1 - (reached - small_cost[axis]) / total[axis]
        results["methods"][name] = row
    unigram = curves["scratch"][-1]["unigram_loss"]  # how far past word counts scratch got: the models must have learned
    ratio = results["scratch_ratio_to_unigram"] = target / unigram if unigram else None
    print(f"\nscratch final held-out loss {target:.4f} after {total['flops']:.3g} FLOPs, {total['seconds']:.0f} s"
          + (f" ({ratio:.3f} x the unigram line)" if ratio else "")
          + f"; the small model cost {small_cost['flops']:.3g} FLOPs")
    print_table({name: {key: [value] for key, value in row.items()} for name, row in results["methods"].items()})
    write_json(os.path.join(config.out_dir, "results.json"), results)
    plot(curves, os.path.join(config.out_dir, "curves.png"))
    return results


COLUMNS = [("grown_loss", "grown loss", ".4f"), ("rise_after_growth", "rise at the next eval", "+.4f"),
           ("largest_rise", "largest rise after growth", "+.4f"),
           ("final_loss", "final loss", ".4f"),
           ("flops_saved", "FLOPs saved (small charged)", ".1%"),
           ("flops_saved_small_given", "FLOPs saved (small given)", ".1%"),
           ("seconds_saved", "time saved (small charged)", ".1%")]


def print_table(rows: dict[str, dict[str, list]]):
    """A row per method; a cell is the mean of its values, ± their standard deviation when there are several
    (seeds), with "(k/n reached)" when only k of n runs reached scratch's final loss."""
    def cell(values, fmt):
        if not values:
            return "–"
        reached = [v for v in values if v is not None]
        if not reached:
            return "not reached"
        text = format(statistics.mean(reached), fmt)
        if len(reached) > 1:
            text += " ± " + format(statistics.stdev(reached), fmt)
        return text + (f" ({len(reached)}/{len(values)} reached)" if len(reached) < len(values) else "")
    print(" | ".join(["method"] + [title for _, title, _ in COLUMNS]))
    for name in sorted(rows):
        print(" | ".join([name] + [cell(rows[name][key], fmt) for key, _, fmt in COLUMNS]))


def bench_seeds(config: BenchConfig, seeds: list[int]) -> dict:
    """bench() once per seed (each in out_dir/seed-N: its own small model, scratch run and growth noise), then
    the table of means ± standard deviations over the seeds, also written to out_dir/summary.json. A seed whose
    results.json exists is read instead of run again: seeds can run apart (one per core) and be tabled together."""
    per_seed = []
    for seed in seeds:
        seed_dir = os.path.join(config.out_dir, f"seed-{seed}")
        if os.path.isfile(os.path.join(seed_dir, "results.json")):
            with open(os.path.join(seed_dir, "results.json")) as f:
                per_seed.append(json.load(f))
        else:
            per_seed.append(bench(replace(config, seed=seed, out_dir=seed_dir)))
    rows = {name: {key: [result["methods"][name].get(key) for result in per_seed] for key, _, _ in COLUMNS}
            for name in per_seed[0]["methods"]}
    rows["scratch"] = {key: [] for key, _, _ in COLUMNS}  # the reference: only its final loss is a number
    rows["scratch"]["final_loss"] = [result["scratch_final_loss"] for result in per_seed]
    print(f"\n{len(seeds)} seeds ({', '.join(map(str, seeds))}): mean ± standard deviation")
    print_table(rows)
    summary = {"seeds": seeds, "rows": rows}
    write_json(os.path.join(config.out_dir, "summary.json"), summary)
    return summary


def plot(curves: dict, path: str):
    plt = pyplot()
    if plt is None:
        print("matplotlib is not installed: no plot (the curves are in results.json)")
        return
    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name, curve in curves.items():
        for ax, axis in zip(axes, ("flops", "seconds")):
            ax.plot([p[axis] for p in curve], [p["val_loss"] for p in curve], marker=".", label=name)
            ax.set_xlabel("training FLOPs" if axis == "flops" else "training seconds")
    unigram = next((p["unigram_loss"] for curve in curves.values() for p in curve if p.get("unigram_loss")), None)
    for ax in axes if unigram is not None else ():  # the same data for every run: one line, below it context is used
        ax.axhline(unigram, color="grey", linestyle="--", linewidth=1, label="unigram line")
    axes[0].set_ylabel("held-out MLM loss")
    axes[0].legend()
    figure.tight_layout()
    with atomic_path(path, suffix=".png") as temporary:
        figure.savefig(temporary)
    print(f"plot: {path}")


# ----------------------------------------------------------------------------------------------------
# Command line

def main(argv=None):
    defaults = BenchConfig()
    parser = argparse.ArgumentParser(prog="python -m experiments.grow_bench", description=bench.__doc__)
    parser.add_argument("--data-dir", default=defaults.data_dir, help="prepared token files")
    parser.add_argument("--out-dir", default=defaults.out_dir, help="fresh folder for the runs and results")
    parser.add_argument("--small", default=defaults.small, help="small model's preset")
    parser.add_argument("--small-overrides", type=json.loads, default=defaults.small_overrides,
                        help='its ModelConfig fields as JSON, e.g. \'{"n_head": 1}\'')
    parser.add_argument("--big", default=defaults.big, help="big model's preset")
    parser.add_argument("--big-overrides", type=json.loads, default=defaults.big_overrides, help="JSON, as above")
    parser.add_argument("--flops", dest="big_flops", type=float, default=defaults.big_flops,
                        help="scratch's training FLOPs = every run's total")
    parser.add_argument("--small-fraction", type=float, default=defaults.small_fraction, help="small model's share")
    parser.add_argument("--methods", type=lambda text: tuple(text.split(",")), default=defaults.methods,
                        help="comma-separated growth methods")
    parser.add_argument("--ligo-steps", type=lambda text: tuple(int(s) for s in text.split(",")),
                        default=defaults.ligo_steps, help="operator steps, comma-separated: a LiGO run for each")
    parser.add_argument("--shared-qkv", action="store_true",
                        help="one width expansion for Q, K and V per layer (default: one each, as in the paper)")
    parser.add_argument("--ligo-rows", type=int, default=defaults.ligo_rows, help="rows per operator step")
    parser.add_argument("--ligo-lr", type=float, default=defaults.ligo_lr, help="operator step size")
    parser.add_argument("--noise", type=float, default=defaults.noise, help="LiGO's symmetry-breaking noise")
    parser.add_argument("--seq-len", type=int, default=defaults.seq_len, help="tokens per row")
    parser.add_argument("--batch-tokens", type=int, default=defaults.batch_tokens, help="tokens per step at full batch")
    parser.add_argument("--micro-batch-size", type=int, default=defaults.micro_batch_size, help="rows per forward pass")
    parser.add_argument("--lr", type=float, default=defaults.lr, help="peak learning rate of every run")
    parser.add_argument("--grown-lr", type=float, default=defaults.grown_lr,
                        help="peak learning rate the grown runs' part of the shared schedule is scaled to (0: --lr)")
    parser.add_argument("--peak-at", type=float, default=defaults.peak_at, help="budget fraction of the lr peak")
    parser.add_argument("--eval-rows", type=int, default=defaults.eval_rows, help="held-out rows")
    parser.add_argument("--eval-interval", type=float, default=defaults.eval_interval, help="budget between evals")
    parser.add_argument("--rewarm", type=float, default=defaults.rewarm,
                        help="share of the schedule over which a grown run's lr climbs back up from 0 (0 = off)")
    parser.add_argument("--restart-schedule", action="store_true",
                        help="every run its own one-cycle schedule (the small model anneals to 0, the grown one warms "
                             "up again) instead of one schedule shared through growth")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=defaults.compile,
                        help="torch.compile every run (default: train.py's choice, which leaves a CPU's FLOP budgets "
                             "eager; compiling pays for runs of more than a few minutes)")
    parser.add_argument("--scratch-from", default=defaults.scratch_from,
                        help="reuse the finished scratch run in this folder of an earlier comparison with the same "
                             "settings ({seed} is replaced by the seed) instead of training it again")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="seed of every run")
    parser.add_argument("--seeds", type=lambda text: [int(s) for s in text.split(",")],
                        help="comma-separated seeds: the whole comparison once per seed, then mean ± spread")
    args = vars(parser.parse_args(argv))
    seeds = args.pop("seeds")
    try:
        config = BenchConfig(**args)  # every other flag is a BenchConfig field
        if seeds:
            bench_seeds(config, seeds)
        else:
            bench(config)
    except (FileNotFoundError, ValueError) as error:  # bad input: one clear message, no traceback
        sys.exit(f"error: {error}")



if __name__ == "__main__":
    main()
