"""
Downstream against pretraining compute (issue 19): for each checkpoint a run kept (`train.py --keep-minutes`),
its held-out loss against the unigram line and its bits per byte (from the run's log), its zero-shot grammar
(BLiMP, `blimp.py`) and SST-2 with 1 000 labels (`glue_eval.py`: a frozen-feature probe, and linear-probe-then-
fine-tune with each checkpoint's own learning rate): one table, one plot. The 0-minute checkpoint is the run's
own random initialisation, so its row is the random-init level every later row is read against.

    python train.py --hours 3 --corpus ../shared/data/wiki --keep-minutes 0,15,30,60,120,180 --out-dir runs/curve-3h
    python -m experiments.downstream_curve --run runs/curve-3h --results runs/curve-eval --evaluate   # scores what is missing
    python -m experiments.downstream_curve --run runs/curve-3h --results runs/curve-eval --plot runs/curve.png

--evaluate runs, for each kept checkpoint whose results are not there yet, exactly these commands (one at a time;
results are files, so an interrupted evaluation picks up where it stopped):

    python blimp.py --ckpt CKPT --max-pairs 100 --pll word --out RESULTS/blimp-M.json
    python glue_eval.py --ckpt CKPT --tasks sst2 --max-train-examples 1000 --seeds 5 --batch-size 32 --epochs 10 \\
        --pooling mean --method probe --out RESULTS/probe-M.json
    python glue_eval.py ... --method lp-ft --lr-grid 3e-4,1e-3 --out RESULTS/lpft-M.json
"""
import argparse
import json
import os
import subprocess
import sys

from data.files import atomic_path
from plot import pyplot, read_log

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SST2 = ["--tasks", "sst2", "--max-train-examples", "1000", "--seeds", "5", "--batch-size", "32", "--epochs", "10",
        "--pooling", "mean"]
RESULTS = {  # result file prefix -> the command's own arguments (after the checkpoint)
    "blimp": ["blimp.py", "--max-pairs", "100", "--pll", "word"],
    "probe": ["glue_eval.py", *SST2, "--method", "probe"],
    "lpft": ["glue_eval.py", *SST2, "--method", "lp-ft", "--lr-grid", "3e-4,1e-3"],
}


def kept_checkpoints(run_dir: str) -> list[dict]:
    """The run's kept checkpoints in order, each with the evaluation logged just before it was kept:
    [{"minutes", "step", "tokens", "path", "unigram_ratio", "bits_per_byte"}]."""
    log = read_log(run_dir)
    evals = {record["step"]: record for record in log["evals"]}  # a resumed run's repeated step: its latest
    kept = []
    for record in log["kept"]:
        evaluation = evals.get(record["step"])
        if evaluation is None:
            raise ValueError(f"{run_dir}: the copy kept at step {record['step']} has no evaluation at that step")
        kept.append({"minutes": record["minutes"], "step": record["step"], "tokens": evaluation["tokens"],
                     "path": os.path.join(run_dir, os.path.basename(record["path"])),
                     "unigram_ratio": evaluation["unigram_ratio"], "bits_per_byte": evaluation["bits_per_byte"]})
    if not kept:
        raise ValueError(f"{run_dir} records no kept checkpoint: run train.py with --keep-minutes")
    return kept


def result_path(results_dir: str, kind: str, minutes: float) -> str:
    return os.path.join(results_dir, f"{kind}-{minutes:g}.json")


def evaluation_commands(checkpoint: dict, results_dir: str) -> list[list[str]]:
    """The commands that score one kept checkpoint, for the results not written yet."""
    return [[sys.executable, os.path.join(REPO, RESULTS[kind][0]), "--ckpt", os.path.abspath(checkpoint["path"]),
             *RESULTS[kind][1:], "--out", os.path.abspath(result_path(results_dir, kind, checkpoint["minutes"]))]
            for kind in RESULTS if not os.path.isfile(result_path(results_dir, kind, checkpoint["minutes"]))]


def read_results(checkpoint: dict, results_dir: str) -> dict:
    """BLiMP's overall accuracy and SST-2's mean ± sd (and chosen lr) for one checkpoint, None where missing."""
    row = {"blimp": None, "probe": None, "lpft": None}
    path = result_path(results_dir, "blimp", checkpoint["minutes"])
    if os.path.isfile(path):
        with open(path) as f:
            row["blimp"] = 100 * json.load(f)["results"]["model"]["overall"]
    for kind in ("probe", "lpft"):
        path = result_path(results_dir, kind, checkpoint["minutes"])
        if os.path.isfile(path):
            with open(path) as f:
                sst2 = json.load(f)["results"]["1000"]["tasks"]["sst2"]["pretrained"]
            row[kind] = (sst2["mean"]["accuracy"], sst2["sd"]["accuracy"], sst2["chosen_lr"])
    return row


def curve_rows(run_dir: str, results_dir: str) -> list[dict]:
    return [{**checkpoint, **read_results(checkpoint, results_dir)} for checkpoint in kept_checkpoints(run_dir)]


def markdown_table(rows: list[dict]) -> str:
    def score(value):
        if value is None:
            return "–"
        mean, sd, lr = value
        return f"{mean:.1f} ± {sd:.1f}" + (f" (lr {lr:g})" if lr else "")

    lines = ["| minutes | step | tokens | held-out / unigram | bits/byte | BLiMP % | SST-2 1k probe | SST-2 1k LP-FT |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        blimp = "–" if row["blimp"] is None else f"{row['blimp']:.1f}"
        lines.append(f"| {row['minutes']:g} | {row['step']:,} | {row['tokens'] / 1e6:.1f} M | {row['unigram_ratio']:.3f} | "
                     f"{row['bits_per_byte']:.3f} | {blimp} | {score(row['probe'])} | {score(row['lpft'])} |")
    return "\n".join(lines)


def plot_curve(rows: list[dict], out: str) -> bool:
    """Four panels against minutes of pretraining, each with the 0-minute (random-init) level dashed; False
    without matplotlib."""
    plt = pyplot()
    if plt is None:
        return False
    panels = [("held-out / unigram", lambda r: r["unigram_ratio"]), ("BLiMP %", lambda r: r["blimp"]),
              ("SST-2 1k probe %", lambda r: r["probe"] and r["probe"][0]),
              ("SST-2 1k LP-FT %", lambda r: r["lpft"] and r["lpft"][0])]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.5))
    for ax, (label, value) in zip(axes, panels):
        points = [(row["minutes"], value(row)) for row in rows if value(row) is not None]
        if points:
            ax.plot(*zip(*points), marker="o")
            zero = [y for x, y in points if x == 0]
            if zero:
                ax.axhline(zero[0], linestyle="--", color="gray", label="random init (0 min)")
                ax.legend(fontsize=8)
        ax.set_xlabel("minutes of pretraining")
        ax.set_title(label)
    fig.tight_layout()
    with atomic_path(out, ".png") as tmp:
        fig.savefig(tmp)
    plt.close(fig)
    return True


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m experiments.downstream_curve", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="the train.py --out-dir that kept checkpoints (--keep-minutes)")
    parser.add_argument("--results", required=True, help="folder for the per-checkpoint result JSONs")
    parser.add_argument("--evaluate", action="store_true", help="score every kept checkpoint whose results are missing")
    parser.add_argument("--plot", help="write the four-panel plot here (PNG; needs matplotlib)")
    args = parser.parse_args(argv)
    try:
        checkpoints = kept_checkpoints(args.run)
    except (FileNotFoundError, ValueError) as error:
        sys.exit(f"error: {error}")
    os.makedirs(args.results, exist_ok=True)
    for checkpoint in checkpoints if args.evaluate else []:
        for command in evaluation_commands(checkpoint, args.results):
            print("running:", " ".join(command[1:]), flush=True)
            if subprocess.run(command, cwd=REPO).returncode != 0:  # the child printed its own error line
                sys.exit(f"error: stopped after this command failed: {' '.join(command[1:])}")
    rows = curve_rows(args.run, args.results)
    print(markdown_table(rows))
    if args.plot and not plot_curve(rows, args.plot):
        print("matplotlib is not installed: no plot (pip install matplotlib)")


if __name__ == "__main__":
    main()
