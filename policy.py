"""
The Learning Law (Gu et al. 2024, "Towards Optimal Learning of Language Models"): learn how much weight
each training example should get at each step so that a held-out "desired" loss falls as fast as possible.

A learning policy γ gives example n the weight γ_{t,n} at step t, each row on the simplex (Σ_n γ_{t,n} = 1):
    θ_{t+1} = θ_t − η Σ_n γ_{t,n} ∇l_n(θ_t)                       (weighted full-batch gradient descent)
    J(γ)    = (1/T) Σ_{t=1..T} L_desired(θ_t)                      (area under the loss curve, Sec. 2)
Minimising the AUC is maximising the compression ratio of the data in the "training as lossless
compression" view (Sec. 2). The Learning Law (Sec. 3): along the optimal policy every example with
non-zero weight has the same contribution ∇L_desired(θ_t)·∇l_n(θ_t); noisy, redundant or already learned
examples get weight 0.

Part 1 finds γ exactly at small scale: γ ← Proj_simplex(γ − ε ∇_γ J) (proximal gradient, Sec. 4), with
∇_γ J from autograd through the whole unrolled trajectory, in two settings (perceptron; a tiny CramBERT
doing MLM on Wikipedia). Part 2 (LearningLawPolicy) is a cheap approximation that train.py can afford:
one proximal step from the uniform policy with the meta-gradient truncated to a single step.

    OMP_NUM_THREADS=1 python policy.py perceptron
    OMP_NUM_THREADS=1 python policy.py transformer --outer-epochs 20 --plot transformer.png
(the tensors are small: one thread per process is faster than two fighting on a busy machine)
"""
import argparse
import contextlib
import gzip
import os
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch.func import functional_call
from torch.nn.attention import SDPBackend, sdpa_kernel
from tqdm import tqdm

from data.loader import mask_tokens
from data.tokenizer import Tokenizer
from model import CramBERT, preset_config

DATA_DIR = Path(__file__).resolve().parent / ".." / "shared" / "data"


# ----------------------------------------------------------------------------------------------------
# Projection onto the simplex

def project_to_simplex(v: torch.Tensor) -> torch.Tensor:
    """Euclidean projection of every row of v onto {x : x >= 0, Σ x = 1} (Duchi et al. 2008, Fig. 1).
    The answer is max(v − τ, 0) for the one threshold τ that makes it sum to 1. Sorting v in descending
    order, the entries kept are a prefix; its length ρ is the last k where u_k stays above the threshold
    computed from the first k entries, (Σ_{j<=k} u_j − 1) / k."""
    if not torch.isfinite(v).all():
        raise ValueError("cannot project non-finite values onto the simplex (did a loss diverge?)")
    u = torch.sort(v, dim=-1, descending=True).values
    excess = u.cumsum(dim=-1) - 1  # Σ_{j<=k} u_j − 1, for every prefix length k
    k = torch.arange(1, v.size(-1) + 1, device=v.device, dtype=v.dtype)
    rho = (u - excess / k > 0).sum(dim=-1, keepdim=True)  # ρ >= 1 always: the largest entry is kept
    tau = excess.gather(-1, rho - 1) / rho
    return (v - tau).clamp(min=0)


# ----------------------------------------------------------------------------------------------------
# Part 1: the exact method. A task is a few pure functions of a parameter dict, so one unrolled loop
# serves the perceptron and the transformer.

@dataclass
class Task:
    params: dict  # θ_0, name -> tensor
    train_loss: Callable  # (θ, weights (N,)) -> Σ_n weights_n l_n(θ)
    desired_loss: Callable  # θ -> L_desired(θ) on the held-out set the policy is optimised for
    test_loss: Callable  # θ -> loss on further held-out data, only reported (does γ generalise?)
    noisy: torch.Tensor  # (N,) bool: the training examples we perturbed
    lr: float  # η of the inner full-batch gradient descent


def run(task: Task, gamma: torch.Tensor, segment: int = 1, differentiable: bool = False, keep_params: bool = False):
    """Train from θ_0 for len(gamma) * segment full-batch steps; step t uses the row gamma[t // segment].
    Returns (desired curve (T+1,), test curve (T+1,) or None, [θ_0..θ_T] if keep_params). With
    differentiable=True the steps are recorded by autograd (create_graph: the update θ − η∇L is itself
    differentiated), so the desired curve is a differentiable function of gamma; the test curve, only
    reported, is then skipped."""
    params = {name: p.detach().clone().requires_grad_() for name, p in task.params.items()}
    desired, test, trajectory = [], [], []
    for t in range(len(gamma) * segment + 1):
        if differentiable:
            desired.append(task.desired_loss(params))
        else:
            with torch.no_grad():
                desired.append(task.desired_loss(params))
                test.append(task.test_loss(params))
        if keep_params:
            trajectory.append({name: p.detach() for name, p in params.items()})
        if t == len(gamma) * segment:
            break
        loss = task.train_loss(params, gamma[t // segment])
        grads = torch.autograd.grad(loss, list(params.values()), create_graph=differentiable)
        params = {name: p - task.lr * g for (name, p), g in zip(params.items(), grads)}
        if not differentiable:  # cut the history, or memory would still grow with T
            params = {name: p.detach().requires_grad_() for name, p in params.items()}
    return torch.stack(desired), torch.stack(test) if test else None, trajectory


def area_under_curve(curve: torch.Tensor) -> torch.Tensor:
    """J = (1/T) Σ_{t=1..T} L(θ_t); L(θ_0) does not depend on the policy. The ratio of two AUCs is also the
    inverse ratio of the compression ratios the paper reports (CR = T log|V| / Σ_t L, Sec. 2)."""
    return curve[1:].mean()


def uniform_policy(rows: int, n: int) -> torch.Tensor:
    return torch.full((rows, n), 1.0 / n)


def optimise_policy(task: Task, steps: int, segment: int, outer_epochs: int, outer_lr: float):
    """Proximal gradient descent on γ (Sec. 4): γ ← Proj_simplex(γ − ε_k ∇_γ J). The paper uses a fixed
    ε with a linear decay; we also normalise the step by the gradient's size, ε_k = outer_lr (1 − k/K) /
    (N · rms(∇_γ J)), so outer_lr = 1 moves a typical entry by about one uniform weight 1/N in the first
    iteration whatever the task's loss scale. Returns the γ with the lowest J seen and the J history."""
    if steps % segment:
        raise ValueError(f"steps={steps} must be a multiple of segment={segment}")
    n = len(task.noisy)
    gamma = uniform_policy(steps // segment, n)
    best_gamma, best_auc, history = gamma, float("inf"), []
    for epoch in tqdm(range(outer_epochs), desc="optimising γ", leave=False):
        gamma.requires_grad_()
        auc = area_under_curve(run(task, gamma, segment, differentiable=True)[0])
        (grad,) = torch.autograd.grad(auc, gamma)
        history.append(auc.item())
        if auc.item() < best_auc:
            best_gamma, best_auc = gamma.detach(), auc.item()
        step = outer_lr * (1 - epoch / outer_epochs) / (n * grad.pow(2).mean().sqrt().clamp(min=1e-30))
        gamma = project_to_simplex(gamma.detach() - step * grad)
    return best_gamma, history


def contributions(weighted_loss: Callable, params: dict, direction: dict, n: int) -> torch.Tensor:
    """c_n = ∇_θ l_n · direction for all n at once, without N per-example gradients: with
    L(u) = Σ_n u_n l_n, ∇_θ L · d = Σ_n u_n (∇_θ l_n · d), so differentiating that scalar by u gives c.
    weighted_loss(params, u) -> Σ_n u_n l_n. Costs one double backward."""
    like = next(iter(direction.values()))
    u = torch.ones(n, dtype=like.dtype, device=like.device, requires_grad=True)
    names = list(direction)
    grads = torch.autograd.grad(weighted_loss(params, u), [params[k] for k in names], create_graph=True)
    alignment = sum((g * direction[k]).sum() for g, k in zip(grads, names))
    return torch.autograd.grad(alignment, u)[0]


def contribution_spread(task: Task, gamma: torch.Tensor, segment: int, probes: int = 8) -> float:
    """The Law's check: coefficient of variation std/|mean| of c_{t,n} = ∇L_desired(θ_t)·∇l_n(θ_t) over the
    examples the policy keeps (γ_{t,n} > 0.1/N) at `probes` evenly spaced steps; the median over them (once
    uniform training fits its data, the mean contribution nears 0 and a single probe's CV explodes).
    The Law predicts it goes to 0 along the optimal policy."""
    n = len(task.noisy)
    _, _, trajectory = run(task, gamma, segment, keep_params=True)
    spreads = []
    for t in torch.linspace(0, len(gamma) * segment - 1, probes).long().tolist():
        params = {k: p.clone().requires_grad_() for k, p in trajectory[t].items()}
        desired_grad = torch.autograd.grad(task.desired_loss(params), list(params.values()))
        c = contributions(task.train_loss, params, dict(zip(params, desired_grad)), n)
        kept = c[gamma[t // segment] > 0.1 / n]
        spreads.append((kept.std() / kept.mean().abs().clamp(min=1e-12)).item() if len(kept) > 1 else 0.0)
    return torch.tensor(spreads).median().item()


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
                          final=desired[-1].item(), spread=contribution_spread(task, policy, segment),
                          noisy_weight=policy[:, task.noisy].sum(dim=1).mean().item())
    return dict(rows=rows, horizon=horizon, speedups=dict(desired=speedups(uniform_desired, opt_desired),
                                                          test=speedups(uniform_test, opt_test)),
                curves=dict(uniform=uniform_desired[:steps + 1], optimised=opt_desired))


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
    masked, labels = mask_tokens(rows, 0.25, generator, gpt2)  # exactly 25% of each row: mlm_fraction's count
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
            return functional_call(model, params, (ids, None, labels), {"example_weights": weights})[1]

    return Task(params={k: v.detach() for k, v in model.named_parameters()},
                train_loss=lambda params, weights: loss(params, ids_train, lab_train, weights),
                desired_loss=lambda params: loss(params, ids_desired, lab_desired),
                test_loss=lambda params: loss(params, ids_test, lab_test),
                noisy=torch.isin(torch.arange(config.n_train), noisy), lr=config.lr)


# ----------------------------------------------------------------------------------------------------
# Part 2: a policy cheap enough for real pretraining (train.py --policy learning-law)
#
# Derivation. The meta-gradient of part 1 is ∂J/∂γ_{t,n} = −η a_{t+1}·∇l_n(θ_t), where the adjoint
# a_{t+1} = ∂J/∂θ_{t+1} carries the effect of θ_{t+1} on all later desired losses through the dynamics.
# Keeping only its immediate term, a_{t+1} ≈ (1/T) ∇L_desired(θ_{t+1}) ≈ (1/T) ∇L_desired(θ_t), leaves
# −(η/T) c_{t,n}: the example's contribution of the Law, computable at the current step. One proximal-gradient
# step from the uniform policy with this truncated gradient is w = Proj_simplex(1/B + ε c), which gives more weight
# to examples that move the model the way the desired data wants and weight 0 to examples whose
# contribution is far below the batch's (noise, or data the model already fits), the two properties of the
# optimal policy the Law states. The step ε is set relative to the batch: ε = step_size / (B · std(c)).
#
# Cost. c needs each example's gradient dotted with the desired gradient. Over all parameters that is a
# per-example backward. We restrict both gradients to the MLM head's transform (head_dense, head_norm): its
# C×C weights see every example's final hidden states and the error signal from the vocabulary, so the
# dot product there is a low-dimensional proxy ("last-layer gradient features"; on the tiny model its
# correlation with the all-parameter contribution was 0.5-0.95 in our checks), and it is cheap:
# the encoder runs once without building a graph (its weights are detached), and only the head is
# differentiated, twice (contributions()). The desired-batch gradient is refreshed every refresh_every
# calls and cached. Per call the overhead is one forward pass of the batch plus the head's double
# backward: measured on CPU, 40% of a training step (forward, backward, AdamW) at the `base` size and
# 100% at `mini`, where the 50k-word decoder dominates both. train.py must count it in the wall-clock budget.

HEAD_PARAMETERS = ("head_dense.", "head_norm.")


@dataclass
class LearningLawPolicyConfig:
    refresh_every: int = 50  # recompute the desired batch's head gradient every this many calls (it drifts slowly)
    step_size: float = 1.0  # ε in units of the uniform weight 1/B per std of the contributions: 1 zeroes examples ~1 std below
    desired_batch_size: int = 64  # held-out sequences train.py draws for the desired batch (fixed for the run)


def _split_head(model: CramBERT) -> dict:
    """All parameters detached (no graph through the encoder), the head's made leaves that need grad."""
    params = {name: p.detach() for name, p in model.named_parameters()}
    if not any(name.startswith(HEAD_PARAMETERS) for name in params):
        raise ValueError("no head_dense/head_norm parameters: pass the unwrapped CramBERT (not DDP or compiled)")
    for name in params:
        if name.startswith(HEAD_PARAMETERS):
            params[name] = params[name].requires_grad_()
    return params


@contextlib.contextmanager
def evaluation_mode(model: CramBERT):
    """No dropout noise in the scores and no draw from the training RNG; the caller's mode is restored."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def desired_head_gradient(model: CramBERT, desired_batch) -> dict:
    """∇ of the desired batch's MLM loss with respect to the head's parameters."""
    input_ids, attention_mask, labels = desired_batch
    params = _split_head(model)
    with evaluation_mode(model):
        loss = functional_call(model, params, (input_ids, attention_mask, labels))[1]
    head = [name for name in params if name.startswith(HEAD_PARAMETERS)]
    return dict(zip(head, torch.autograd.grad(loss, [params[name] for name in head])))


def example_alignment(model: CramBERT, batch, desired_batch=None, desired_gradient: dict | None = None) -> torch.Tensor:
    """Per-example contribution c_n = ∇L_desired · ∇l_n, both gradients restricted to the MLM head.
    batch and desired_batch are (input_ids, attention_mask, labels); pass desired_gradient to reuse one."""
    if desired_gradient is None:
        desired_gradient = desired_head_gradient(model, desired_batch)
    input_ids, attention_mask, labels = batch

    def weighted_loss(params, u):
        return functional_call(model, params, (input_ids, attention_mask, labels), {"example_weights": u})[1]

    with evaluation_mode(model):
        return contributions(weighted_loss, _split_head(model), desired_gradient, input_ids.size(0))


class LearningLawPolicy:
    """Weights for each batch from the Learning Law, for train.py: loss = Σ_n w_n · mean-CE_n."""

    def __init__(self, config: LearningLawPolicyConfig, desired_batch):
        if config.refresh_every < 1 or config.step_size < 0:
            raise ValueError(f"need refresh_every >= 1 and step_size >= 0, got {config}")
        self.config = config
        self.desired_batch = tuple(desired_batch)  # (input_ids, attention_mask, labels), a fixed held-out batch
        self.calls = 0  # weights() calls so far: decides when the cached desired gradient is refreshed
        self.desired_gradient = None  # cached ∇_head L_desired, from the last refresh

    def weights(self, model: CramBERT, input_ids, attention_mask, labels) -> torch.Tensor:
        """(B,) weights on the simplex for this batch."""
        if self.calls % self.config.refresh_every == 0 or self.desired_gradient is None:
            device = input_ids.device
            self.desired_gradient = desired_head_gradient(model, [None if x is None else x.to(device)
                                                                  for x in self.desired_batch])
        self.calls += 1
        # after a resume with map_location="cpu" the cached gradient may sit on another device (a no-op otherwise)
        self.desired_gradient = {k: g.to(input_ids.device) for k, g in self.desired_gradient.items()}
        c = example_alignment(model, (input_ids, attention_mask, labels), desired_gradient=self.desired_gradient)
        B = c.numel()
        scaled = c / c.std().clamp(min=1e-12) if B > 1 else torch.zeros_like(c)
        return project_to_simplex((1 + self.config.step_size * scaled) / B).detach()

    def state_dict(self) -> dict:
        return {"config": asdict(self.config), "calls": self.calls, "desired_batch": self.desired_batch,
                "desired_gradient": self.desired_gradient}

    def load_state_dict(self, state: dict):
        self.config = LearningLawPolicyConfig(**state["config"])
        self.calls, self.desired_batch = state["calls"], tuple(state["desired_batch"])
        self.desired_gradient = state["desired_gradient"]


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
    print(f"{'policy':<10} {'AUC':>8} {'test AUC':>9} {'final loss':>11} {'spread (CV)':>12} {'weight on noisy':>16}")
    for name, row in result["rows"].items():
        print(f"{name:<10} {row['auc']:>8.4f} {row['test_auc']:>9.4f} {row['final']:>11.4f} "
              f"{row['spread']:>12.3g} {row['noisy_weight']:>16.3f}")
    desired, test = result["speedups"]["desired"], result["speedups"]["test"]
    labels = {"auc": "AUC ratio (uniform / optimised)",
              "steps": "steps uniform needs for optimised final loss / T",
              "catch_up": "T / steps optimised needs for uniform's best in T"}
    print(f"{'speed-up':<50} {'desired':>9} {'test':>9}")
    for key, label in labels.items():
        unreached = f">{result['horizon']}x" if key == "steps" else "never"
        cells = [f"{s[key]:.2f}x" if s[key] is not None else unreached for s in (desired, test)]
        print(f"{label:<50} {cells[0]:>9} {cells[1]:>9}")


def save_plot(path: str, result: dict):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
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
    temporary = f"{path}.tmp{os.getpid()}.png"
    figure.savefig(temporary, format="png")
    os.replace(temporary, path)
    print(f"saved {path}")


def main(argv=None):
    parser = argparse.ArgumentParser(description="Learn a Learning-Law data policy exactly on a small problem.")
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
