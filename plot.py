"""
Compare training runs from their log.jsonl files: a summary table, and held-out loss against training
time on one plot with each run's unigram line (what predicting every masked token from word counts alone
scores: a run above its line has learned nothing from the context).

    python plot.py runs/laptop runs/laptop-8k --out runs/compare.png

train.py calls `plot_runs` itself to keep OUT_DIR/loss.png up to date; glue_eval.py --plot calls
`plot_label_efficiency`. matplotlib is optional: without it the table still prints and the plot is skipped
with a note.
"""
import argparse
import json
import os

from data.files import atomic_path


def read_log(run: str) -> dict:
    """The config line, the evaluation records, the summary and the kept copies of one run (a folder or its log.jsonl)."""
    path = os.path.join(run, "log.jsonl") if os.path.isdir(run) else run
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no log at {path}: pass a train.py --out-dir or a log.jsonl")
    config, evals, summary, kept = {}, [], {}, []
    with open(path) as f:
        for line_number, line in enumerate(f, 1):
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{line_number}: not a JSON line ({error})") from error
            if record.get("kind") == "config":
                config = record  # a resumed run logs its config again; its evaluations continue the curve
            elif record.get("kind") == "eval":
                evals.append(record)
            elif record.get("kind") == "summary":
                summary = record
            elif record.get("kind") == "kept":  # --keep-minutes' copies (experiments/downstream_curve.py)
                kept.append(record)
    return {"name": os.path.basename(os.path.normpath(os.path.dirname(path))), "config": config,
            "evals": evals, "summary": summary, "kept": kept}


def summary_table(runs: list[dict]) -> str:
    lines = [f"{'run':<24} {'steps':>6} {'minutes':>8} {'val loss':>9} {'unigram':>8} {'ratio':>6} {'bits/byte':>9}"]
    for run in runs:
        if not run["evals"]:
            lines.append(f"{run['name']:<24} (no evaluation yet)")
            continue
        last = run["evals"][-1]
        lines.append(f"{run['name']:<24} {last['step']:>6} {last['elapsed'] / 60:>8.1f} {last['val_loss']:>9.3f} "
                     f"{last.get('unigram_loss', float('nan')):>8.3f} {last.get('unigram_ratio', float('nan')):>6.3f} "
                     f"{last.get('bits_per_byte', float('nan')):>9.3f}")
    return "\n".join(lines)


def plot_runs(runs: list[dict], out: str) -> bool:
    """Held-out loss vs training minutes, one colour per run, its unigram line dashed in the same colour.
    Returns False (and writes nothing) when matplotlib is not installed."""
    plt = pyplot()
    if plt is None:
        return False
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for index, run in enumerate(runs):
        if not run["evals"]:
            continue
        colour = f"C{index % 10}"
        minutes = [e["elapsed"] / 60 for e in run["evals"]]
        ax.plot(minutes, [e["val_loss"] for e in run["evals"]], marker="o", ms=3, color=colour, label=run["name"])
        if "unigram_loss" in run["evals"][-1]:
            ax.axhline(run["evals"][-1]["unigram_loss"], color=colour, linestyle="--", linewidth=1,
                       label=f"{run['name']}: unigram line")
    ax.set_xlabel("training minutes (evaluation excluded)")
    ax.set_ylabel("held-out MLM loss (nats per masked token)")
    save_figure(plt, fig, ax, out)
    return True


def save_figure(plt, fig, ax, out: str):
    """Grid, legend, and the PNG written whole or not at all."""
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(out, suffix=".png") as temporary:
        fig.savefig(temporary, dpi=120)
    plt.close(fig)


def plot_label_efficiency(curves: dict, out: str, ylabel: str = "dev score (x100)") -> bool:
    """Score against the number of labelled training examples (log x), one line per arm with error bars:
    curves = {arm: [(examples, mean, standard error or None), ...]} (glue_eval.py --train-sizes --plot).
    Returns False (and writes nothing) when matplotlib is not installed."""
    plt = pyplot()
    if plt is None:
        return False
    fig, ax = plt.subplots(figsize=(6, 4))
    for arm, points in curves.items():
        examples, means, errors = zip(*sorted(points))
        ax.errorbar(examples, means, yerr=[0.0 if e is None else e for e in errors], marker="o", ms=4, capsize=3,
                    label=arm)
    ax.set_xscale("log")
    ax.set_xlabel("labelled training examples")
    ax.set_ylabel(f"{ylabel}, mean ± standard error over seeds")
    save_figure(plt, fig, ax, out)
    return True


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="train.py --out-dir folders (or their log.jsonl files)")
    parser.add_argument("--out", default="compare.png", help="where to write the plot (PNG)")
    args = parser.parse_args(argv)
    try:
        runs = [read_log(run) for run in args.runs]
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(f"error: {error}")
    print(summary_table(runs))
    if plot_runs(runs, args.out):
        print(f"plot written to {args.out}")
    else:
        print("matplotlib is not installed: no plot (pip install matplotlib)")


if __name__ == "__main__":
    main()


def pyplot():
    """matplotlib.pyplot drawing to files only (the Agg backend), or None when matplotlib is not installed."""
    try:
        import matplotlib  # optional dependency
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt
