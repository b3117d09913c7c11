"""
The Learning Law's experiments (Gu et al. 2024, Sec. 4), scaled to run on a CPU in minutes: learn the
optimal policy exactly with policy.py's Part 1 for a perceptron with noisy labels and for a tiny CramBERT
doing MLM on Wikipedia, then compare it with uniform weights (AUC, speed-ups, the Law's contribution spread and
zero-weight property) and measure the speed-up the paper's way (Eq. 9: acceleration ratio on fitted test curves).

    OMP_NUM_THREADS=1 python -m experiments.policy_bench perceptron
    OMP_NUM_THREADS=1 python -m experiments.policy_bench transformer --outer-epochs 20 --plot transformer.png
(the tensors are small: one thread per process is faster than two fighting on a busy machine)
"""
import argparse
import gzip
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.func import functional_call
from torch.nn.attention import SDPBackend, sdpa_kernel

from data.files import atomic_path
from data.loader import mask_tokens
from data.tokenizer import Tokenizer
from model import CramBERT, preset_config
from plot import pyplot
from policy import Task, area_under_curve, law_check, optimise_policy, run, uniform_policy, weighted_mlm_loss

DATA_DIR = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"  # the repository's parent holds shared/


# ----------------------------------------------------------------------------------------------------
# The paper's speed-up measure (Sec. 4, Eq. 9): fitted learning curves and the acceleration ratio

@dataclass
class CurveFit:
    L0: float  # the shared irreducible loss
    B: tuple  # (conventional, near-optimal): the step scale of L(t) = L0 + (B/t)^β
    beta: tuple  # (conventional, near-optimal): how fast the reducible loss falls with t
    error: float  # total squared error of the fit, in log(L - L0)


def fit_learning_curves(conventional, optimal, start: int = 1, grid: int = 400) -> CurveFit:
    """Fit L(t) = L0 + (B/t)^β to two loss curves (index t = step; t >= start, as t = 0 is not on the curve)
    with one L0 for both, as the paper fits its conventional and near-optimal test curves. For a fixed L0 the
    fit is linear in log space: log(L - L0) = β log B - β log t, a least-squares line per curve (slope -β,
    intercept β log B). L0 is chosen on a grid below the lowest loss of either curve (L0 = lowest - gap, gaps
    log-spaced from 1e-6 to 1 times the lowest, kept >= 0) to minimise the two lines' total squared error,
    then refined on a 100-point linear grid between the best point's neighbours."""
    curves = [torch.as_tensor(c, dtype=torch.float64)[start:] for c in (conventional, optimal)]
    lowest = min(c.min().item() for c in curves)

    def lines(L0: torch.Tensor):  # (G,) -> per curve (slope, intercept) of shape (G,) each, and total error (G,)
        fits, total = [], 0.0
        for curve in curves:
            x = torch.arange(start, start + len(curve), dtype=torch.float64).log()
            y = (curve[None, :] - L0[:, None]).log()
            slope = ((x - x.mean()) * (y - y.mean(1, keepdim=True))).sum(1) / (x - x.mean()).pow(2).sum()
            intercept = y.mean(1) - slope * x.mean()
            total = total + (y - intercept[:, None] - slope[:, None] * x).pow(2).sum(1)
            fits.append((slope, intercept))
        return fits, total

    candidates = (lowest - lowest * torch.logspace(-6, 0, grid, dtype=torch.float64)).clamp(min=0)
    best = int(lines(candidates)[1].argmin())
    fine = torch.linspace(candidates[min(best + 1, grid - 1)].item(), candidates[max(best - 1, 0)].item(), 100,
                          dtype=torch.float64)
    fits, error = lines(fine)
    i = int(error.argmin())
    beta = tuple(-slope[i].item() for slope, _ in fits)
    B = tuple(math.exp(intercept[i].item() / b) for (_, intercept), b in zip(fits, beta))
    return CurveFit(L0=fine[i].item(), B=B, beta=beta, error=error[i].item())


def acceleration_ratio(fit: CurveFit, steps: int) -> float | None:
    """Eq. 9: AR = t* / T, t* the step at which the conventional fitted curve reaches the near-optimal fitted
    curve's loss at T. (B_c/t*)^β_c = (B_o/T)^β_o gives t* = B_c (T/B_o)^(β_o/β_c). None unless both β > 0
    (a curve that does not fall has no such step)."""
    (B_c, B_o), (beta_c, beta_o) = fit.B, fit.beta
    if beta_c <= 0 or beta_o <= 0:
        return None
    return B_c * (steps / B_o) ** (beta_o / beta_c) / steps


# ----------------------------------------------------------------------------------------------------
# Reporting: uniform against optimised

def first_step_reaching(curve: torch.Tensor, target: float):
    reached = (curve <= target).nonzero()
    return int(reached[0]) if len(reached) else None


def speedups(uniform: torch.Tensor, optimised: torch.Tensor) -> dict:
    """uniform: a loss curve run for longer than optimised's T steps. Three ways to say "how much faster":
    auc: AUC ratio over the first T steps (the objective itself);
    steps: steps uniform needs to reach the optimised final loss, over T (None: not within its run);
    catch_up: T over the step where the optimised run first reaches the best loss uniform had within T
    steps (finite even when uniform plateaus above the optimised run, as it does with noisy data)."""
    steps = len(optimised) - 1
    reach = first_step_reaching(uniform, optimised[-1].item())
    catch_up = first_step_reaching(optimised, uniform[:steps + 1].min().item())
    return dict(auc=(area_under_curve(uniform[:steps + 1]) / area_under_curve(optimised)).item(),
                steps=None if reach is None else reach / steps,
                catch_up=None if catch_up is None else steps / max(catch_up, 1))


def compare(task: Task, gamma: torch.Tensor, segment: int, horizon: int) -> dict:
    """Uniform vs optimised policy: per policy the AUCs (desired, test), final desired loss, contribution
    spread and weight on the perturbed examples (uniform: their share of the data); speed-ups on the
    desired loss (what γ was optimised for) and on the test loss (does it generalise?). Uniform runs
    horizon*T steps so that its steps-to-match can exceed T."""
    steps = len(gamma) * segment
    n = len(task.noisy)
    uniform_desired, uniform_test, _ = run(task, uniform_policy(horizon * steps, n))
    opt_desired, opt_test, _ = run(task, gamma, segment)
    rows = {}
    for name, policy, desired, test in (("uniform", uniform_policy(len(gamma), n), uniform_desired[:steps + 1],
                                         uniform_test[:steps + 1]), ("optimised", gamma, opt_desired, opt_test)):
        rows[name] = dict(auc=area_under_curve(desired).item(), test_auc=area_under_curve(test).item(),
                          final=desired[-1].item(), **law_check(task, policy, segment),
                          noisy_weight=policy[:, task.noisy].sum(dim=1).mean().item())
    return dict(rows=rows, horizon=horizon, speedups=dict(desired=speedups(uniform_desired, opt_desired),
                                                          test=speedups(uniform_test, opt_test)),
                law_fit=paper_measure(uniform_test[:steps + 1], opt_test),
                curves=dict(uniform=uniform_desired[:steps + 1], optimised=opt_desired))


PAPER = {"perceptron": dict(ar=5.50), "transformer": dict(ar=2.41, B_change=-0.966, beta_change=0.212)}  # Sec. 4


def paper_measure(uniform_test: torch.Tensor, optimised_test: torch.Tensor) -> dict:
    """The paper's own measure of the speed-up (Sec. 4, Eq. 9): L0 + (B/t)^β fitted to both test curves over the
    same T steps with a shared L0 (fit_learning_curves, above), the acceleration ratio AR on the fitted curves,
    and how the near-optimal policy changes B and β (relative change, optimised vs uniform)."""
    fit = fit_learning_curves(uniform_test, optimised_test)
    steps = len(optimised_test) - 1
    return dict(fit=fit, ar=acceleration_ratio(fit, steps), B_change=fit.B[1] / fit.B[0] - 1,
                beta_change=fit.beta[1] / fit.beta[0] - 1)


# ----------------------------------------------------------------------------------------------------
# The two settings of Sec. 4, scaled to run on a CPU in minutes

@dataclass
class ReproductionConfig:
    setting: str = "perceptron"  # "perceptron" (linear classification) or "transformer" (CramBERT MLM on wiki)
    steps: int = 400  # T: full-batch gradient-descent steps of the inner run (paper: 2000 / 4000)
    segment: int = 1  # consecutive steps sharing one row of γ (1 = a weight per step, as in the paper)
    outer_epochs: int = 40  # proximal-gradient iterations on γ
    outer_lr: float = 1.0  # ε in units of the uniform weight 1/N per rms of ∇_γ J (see optimise_policy)
    lr: float = 0.1  # η of the inner gradient descent (paper: 0.1)
    n_train: int = 1024  # N training examples (paper: 4096 perceptron, 16384 transformer)
    n_held_out: int = 1024  # size of the desired set, and again of the test set
    noise_fraction: float = 0.2  # share of training examples perturbed (flipped labels / random tokens)
    dim: int = 128  # perceptron input dimension D (paper: 128)
    seq_len: int = 32  # transformer sequence length (paper: 64)
    vocab: int = 512  # transformer vocabulary after remapping to the most frequent tokens (paper: 5k)
    horizon: int = 10  # uniform runs up to horizon*T steps when measuring the step speed-up
    seed: int = 0  # data, model initialisation and noise
    data_dir: str = str(DATA_DIR)  # holds wiki/enwiki-2015-00.txt.gz for the transformer setting

    def __post_init__(self):
        if self.steps < 1 or self.segment < 1 or self.steps % self.segment:
            raise ValueError(f"need steps >= 1 a multiple of segment >= 1, got steps={self.steps} segment={self.segment}")
        if not 0 <= self.noise_fraction < 1 or self.n_train < 2 or self.n_held_out < 1 or self.horizon < 1:
            raise ValueError(f"need 0 <= noise_fraction < 1, n_train >= 2, n_held_out >= 1, horizon >= 1: {self}")
        if self.vocab < 3:
            raise ValueError("vocab must leave room for [UNK], [MASK] and at least one word")


# The dataclass defaults are the perceptron setting; the transformer's overrides keep one outer epoch under
# half a minute on one busy core (memory grows with T * N: ~6.5 GB at these values).
SETTINGS = {
    "perceptron": {},
    "transformer": dict(steps=40, segment=5, outer_epochs=8, lr=0.1, n_train=128, n_held_out=64,
                        noise_fraction=0.5, horizon=5),
}


def reproduction_config(setting: str, **overrides) -> ReproductionConfig:
    if setting not in SETTINGS:
        raise ValueError(f"unknown setting {setting!r}; choose one of {', '.join(SETTINGS)}")
    return ReproductionConfig(**{"setting": setting, **SETTINGS[setting], **overrides})


def perceptron_task(config: ReproductionConfig) -> Task:
    """Linear classification with logistic loss. A random teacher w* labels Gaussian inputs; the desired
    and test sets are clean, and a fraction of the training labels are flipped: noise the Law says
    should get weight 0."""
    gen = torch.Generator().manual_seed(config.seed)
    teacher = torch.randn(config.dim, generator=gen)
    n_total = config.n_train + 2 * config.n_held_out
    x = torch.randn(n_total, config.dim, generator=gen)
    y = (x @ teacher > 0).float()
    noisy = torch.randperm(config.n_train, generator=gen)[:round(config.noise_fraction * config.n_train)]
    y[noisy] = 1 - y[noisy]
    splits = torch.split(torch.arange(n_total), [config.n_train, config.n_held_out, config.n_held_out])
    (x_train, y_train), (x_desired, y_desired), (x_test, y_test) = ((x[i], y[i]) for i in splits)

    def example_losses(params, x, y):  # (n,)
        return F.binary_cross_entropy_with_logits(x @ params["w"], y, reduction="none")

    return Task(params={"w": torch.zeros(config.dim)},
                train_loss=lambda params, weights: (weights * example_losses(params, x_train, y_train)).sum(),
                desired_loss=lambda params: example_losses(params, x_desired, y_desired).mean(),
                test_loss=lambda params: example_losses(params, x_test, y_test).mean(),
                noisy=torch.isin(torch.arange(config.n_train), noisy), lr=config.lr)


def read_wiki_tokens(path: Path, n_chars: int) -> list[int]:
    """GPT-2 ids of the first n_chars characters of a wiki shard (articles are separated by blank lines)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: the transformer setting reads a wiki shard from --data-dir")
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return Tokenizer.gpt2().encode(f.read(n_chars))


def remap_vocabulary(tokens: torch.Tensor, vocab: int, gpt2: Tokenizer):
    """Keep the vocab−2 most frequent GPT-2 ids (as ids 0..vocab−3), send every other id to [UNK] and keep
    one [MASK]. With 50k ids the tiny model's embedding table and output layer would dwarf its 2 blocks
    and dominate the cost of every unrolled step; 510 ids cover ~57% of wiki tokens. Returns (lookup: a
    (max_id+1,) table from GPT-2 id to new id, unk_id, mask_id)."""
    unk_id, mask_id = vocab - 2, vocab - 1
    lookup = torch.full((gpt2.num_tokens,), unk_id, dtype=torch.long)
    frequent = [token for token, _ in Counter(tokens.tolist()).most_common(vocab - 2)]
    lookup[torch.tensor(frequent)] = torch.arange(len(frequent))
    lookup[gpt2.mask_id] = mask_id
    return lookup, unk_id, mask_id


def mlm_examples(tokens: torch.Tensor, seq_len: int, lookup: torch.Tensor, generator: torch.Generator, gpt2: Tokenizer):
    """Cut a GPT-2 id stream into rows, mask them once (full-batch GD needs a fixed objective), remap."""
    rows = tokens[:len(tokens) // seq_len * seq_len].view(-1, seq_len)
    masked, labels = mask_tokens(rows, 0.25, generator, gpt2)  # exactly 25% of each row, every one a sparse-head row
    return lookup[masked], torch.where(labels >= 0, lookup[labels.clamp(min=0)], labels)


def transformer_task(config: ReproductionConfig, tokens: torch.Tensor | None = None) -> Task:
    """MLM with the `tiny` CramBERT (2 blocks, width 64) on Wikipedia rows, trained by full-batch GD. As the
    paper perturbs part of its TinyStories data, a fraction of the training rows is replaced by uniformly
    random (kept) tokens: the model can fit them, but nothing it learns from them helps on real text.
    tokens: a GPT-2 id stream (tests pass their own); default: the start of wiki shard 00."""
    if tokens is None:
        n_chars = 8 * config.seq_len * (config.n_train + 2 * config.n_held_out) + 1_000_000  # ~4 chars/token
        tokens = torch.tensor(read_wiki_tokens(Path(config.data_dir) / "wiki" / "enwiki-2015-00.txt.gz", n_chars))
    gen = torch.Generator().manual_seed(config.seed)
    gpt2 = Tokenizer.gpt2()
    lookup, unk_id, _ = remap_vocabulary(tokens, config.vocab, gpt2)
    n_total = config.n_train + 2 * config.n_held_out
    if len(tokens) < n_total * config.seq_len:
        raise ValueError(f"{len(tokens)} tokens cannot fill {n_total} rows of {config.seq_len}")
    rows = tokens[:n_total * config.seq_len].clone()
    noisy = torch.randperm(config.n_train, generator=gen)[:round(config.noise_fraction * config.n_train)]
    kept_ids = (lookup[:gpt2.num_ordinary] != unk_id).nonzero().squeeze(1)  # GPT-2 ids that survive the remap
    for i in noisy.tolist():
        random_ids = kept_ids[torch.randint(len(kept_ids), (config.seq_len,), generator=gen)]
        rows[i * config.seq_len:(i + 1) * config.seq_len] = random_ids
    ids, labels = mlm_examples(rows, config.seq_len, lookup, gen, gpt2)
    splits = [config.n_train, config.n_held_out, config.n_held_out]
    (ids_train, ids_desired, ids_test), (lab_train, lab_desired, lab_test) = ids.split(splits), labels.split(splits)
    torch.manual_seed(config.seed)
    model = CramBERT(preset_config("tiny", vocab_size=config.vocab, max_seq_len=config.seq_len))

    def loss(params, ids, labels, weights=None):
        # The fused CPU attention kernel has no double backward; the math path is plain differentiable ops.
        with sdpa_kernel(SDPBackend.MATH):
            logits, mean_loss = functional_call(model, params, (ids, None, labels))
            return mean_loss if weights is None else weighted_mlm_loss(logits, labels, weights)

    return Task(params={k: v.detach() for k, v in model.named_parameters()},
                train_loss=lambda params, weights: loss(params, ids_train, lab_train, weights),
                desired_loss=lambda params: loss(params, ids_desired, lab_desired),
                test_loss=lambda params: loss(params, ids_test, lab_test),
                noisy=torch.isin(torch.arange(config.n_train), noisy), lr=config.lr)


# ----------------------------------------------------------------------------------------------------
# Command line: reproduce a setting and print uniform vs optimised

def reproduce(config: ReproductionConfig) -> dict:
    torch.manual_seed(config.seed)
    task = perceptron_task(config) if config.setting == "perceptron" else transformer_task(config)
    gamma, history = optimise_policy(task, config.steps, config.segment, config.outer_epochs, config.outer_lr)
    return dict(gamma=gamma, history=history, noisy=task.noisy, **compare(task, gamma, config.segment, config.horizon))


def print_report(config: ReproductionConfig, result: dict):
    history = " ".join(f"{j:.4f}" for j in result["history"])
    print(f"{config.setting}: T={config.steps}, N={config.n_train} ({config.noise_fraction:.0%} perturbed); "
          f"J over {config.outer_epochs} proximal steps: {history}")
    print(f"{'policy':<10} {'AUC':>8} {'test AUC':>9} {'final loss':>11} {'spread (CV)':>12} {'weight on noisy':>16} "
          f"{'zero-weight share':>18} {'of them below kept':>19}")
    for name, row in result["rows"].items():
        below = "-" if row["zero_below"] is None else f"{row['zero_below']:.3f}"
        print(f"{name:<10} {row['auc']:>8.4f} {row['test_auc']:>9.4f} {row['final']:>11.4f} "
              f"{row['spread']:>12.3g} {row['noisy_weight']:>16.3f} {row['zero_share']:>18.3f} {below:>19}")
    desired, test = result["speedups"]["desired"], result["speedups"]["test"]
    labels = {"auc": "AUC ratio (uniform / optimised)",
              "steps": "steps uniform needs for optimised final loss / T",
              "catch_up": "T / steps optimised needs for uniform's best in T"}
    print(f"{'speed-up':<50} {'desired':>9} {'test':>9}")
    for key, label in labels.items():
        unreached = f">{result['horizon']}x" if key == "steps" else "never"
        cells = [f"{s[key]:.2f}x" if s[key] is not None else unreached for s in (desired, test)]
        print(f"{label:<50} {cells[0]:>9} {cells[1]:>9}")
    law, paper = result["law_fit"], PAPER[config.setting]
    fit = law["fit"]
    floor = " (at its floor: a loss is >= 0)" if fit.L0 == 0 else ""
    print(f"paper's measure (Eq. 9), test curves fitted over T with a shared L0 = {fit.L0:.4f}{floor} "
          f"(squared error {fit.error:.3g} in log(L - L0)):")
    for name, i in (("uniform", 0), ("optimised", 1)):
        print(f"  {name:<10} L(t) = L0 + ({fit.B[i]:.4g} / t)^{fit.beta[i]:.4g}")
    ar = "none (a fitted curve does not fall)" if law["ar"] is None else f"{law['ar']:.2f}x"
    print(f"  acceleration ratio AR = {ar} (paper: {paper['ar']:.2f}x), beside the test AUC ratio "
          f"{test['auc']:.2f}x; B {law['B_change']:+.1%}, β {law['beta_change']:+.1%}" +
          (f" (paper: B {paper['B_change']:+.1%}, β {paper['beta_change']:+.1%})" if "B_change" in paper else ""))


def save_plot(path: str, result: dict):
    plt = pyplot()
    if plt is None:
        print("matplotlib is not installed: no plot (pip install matplotlib)")
        return
    figure, (curves, weights) = plt.subplots(1, 2, figsize=(11, 4))
    for name, curve in result["curves"].items():
        curves.plot(curve.numpy(), label=name)
    curves.set(xlabel="step", ylabel="desired loss", title="loss curves")
    curves.legend()
    order = torch.argsort(result["noisy"].int(), stable=True)  # clean examples first, perturbed last
    image = weights.imshow(result["gamma"][:, order].T.numpy() * len(order), aspect="auto", cmap="viridis")
    weights.set(xlabel="γ row (step or segment)", ylabel="example (perturbed at the bottom)", title="N·γ")
    figure.colorbar(image, ax=weights)
    figure.tight_layout()
    with atomic_path(path, suffix=".png") as temporary:
        figure.savefig(temporary, format="png")
    print(f"saved {path}")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m experiments.policy_bench",
                                     description="Learn a Learning-Law data policy exactly on a small problem.")
    parser.add_argument("setting", choices=sorted(SETTINGS), help="which experiment of Sec. 4 to reproduce")
    # --- inner training run and policy optimisation (defaults per setting: see SETTINGS) ---
    parser.add_argument("--steps", type=int, help="T, full-batch gradient-descent steps")
    parser.add_argument("--segment", type=int, help="consecutive steps that share one row of γ")
    parser.add_argument("--outer-epochs", type=int, help="proximal-gradient iterations on γ")
    parser.add_argument("--outer-lr", type=float, help="step on γ, in uniform weights per rms of the gradient")
    parser.add_argument("--lr", type=float, help="learning rate of the inner gradient descent")
    # --- data ---
    parser.add_argument("--n-train", type=int, help="number of training examples N")
    parser.add_argument("--n-held-out", type=int, help="size of the desired set and of the test set")
    parser.add_argument("--noise-fraction", type=float, help="share of training examples perturbed")
    parser.add_argument("--dim", type=int, help="perceptron input dimension D")
    parser.add_argument("--seq-len", type=int, help="transformer sequence length")
    parser.add_argument("--vocab", type=int, help="transformer vocabulary size after remapping")
    parser.add_argument("--data-dir", help="folder holding wiki/ (transformer setting)")
    parser.add_argument("--seed", type=int, help="seed for data, initialisation and noise")
    # --- reporting ---
    parser.add_argument("--horizon", type=int, help="run uniform up to this many times T to measure the step speed-up")
    parser.add_argument("--plot", help="save loss curves and learned weights to this PNG (needs matplotlib)")
    args = parser.parse_args(argv)
    overrides = {k: v for k, v in vars(args).items() if v is not None and k not in ("setting", "plot")}
    try:
        config = reproduction_config(args.setting, **overrides)
    except ValueError as error:
        parser.error(str(error))
    result = reproduce(config)
    print_report(config, result)
    if args.plot:
        save_plot(args.plot, result)


if __name__ == "__main__":
    main()
