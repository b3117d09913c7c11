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

The paper's experiments (Sec. 4) that use Part 1 are reproduced by policy_bench.py.
"""
import contextlib
import math
from dataclasses import asdict, dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch.func import functional_call
from tqdm import tqdm

from model import CramBERT, ModelConfig, flops_per_token, sparse_positions


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


def law_check(task: Task, gamma: torch.Tensor, segment: int, probes: int = 8) -> dict:
    """The Learning Law's properties, checked on c_{t,n} = ∇L_desired(θ_t)·∇l_n(θ_t) at `probes` evenly spaced steps.
    An example counts as kept if γ_{t,n} > 0.1/N, else as zero-weight. The Law (Sec. 3) is the stationarity
    (KKT) condition of minimising J over the simplex: the kept examples share one contribution λ_t, and an
    example with zero weight has c_{t,n} <= λ_t (it would lower J if it got weight otherwise): noisy examples
    pulling the wrong way (c < 0), or examples already learned (c ≈ 0, their gradient is spent).
      spread: the median over probes of std/|mean| of the kept examples' c (the median, because once uniform
        training fits its data the mean contribution nears 0 and a single probe's CV explodes); the Law: -> 0;
      zero_share: the share of (t, n) with zero weight;
      zero_below: among those, the share with c_{t,n} below the kept examples' mean at t; the Law: -> 1.
        None when the policy zeroes no example (uniform)."""
    n = len(task.noisy)
    _, _, trajectory = run(task, gamma, segment, keep_params=True)
    spreads, zero, below = [], 0, 0
    for t in torch.linspace(0, len(gamma) * segment - 1, probes).long().tolist():
        params = {k: p.clone().requires_grad_() for k, p in trajectory[t].items()}
        desired_grad = torch.autograd.grad(task.desired_loss(params), list(params.values()))
        c = contributions(task.train_loss, params, dict(zip(params, desired_grad)), n)
        is_kept = gamma[t // segment] > 0.1 / n
        kept = c[is_kept]
        spreads.append((kept.std() / kept.mean().abs().clamp(min=1e-12)).item() if len(kept) > 1 else 0.0)
        zero += int((~is_kept).sum())
        below += int((c[~is_kept] < kept.mean()).sum())
    return dict(spread=torch.tensor(spreads).median().item(), zero_share=zero / (probes * n),
                zero_below=below / zero if zero else None)


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
# 100% at `mini`, where the 50k-word decoder dominates both. train.py counts it in the wall-clock budget and, by
# policy_flops, in --max-flops.

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


def weighted_mlm_loss(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor,
                      n_kept: int | None = None) -> torch.Tensor:
    """The policy's training loss Σ_n w_n · (mean cross-entropy over example n's masked tokens), from the logits
    CramBERT returns: (B, T, V) from the dense head, or (n_kept, V) at sparse_positions(labels, n_kept) from
    the sparse head (pass the n_kept the model was given). labels: (B, T); weights: (B,) on the simplex."""
    B, T = labels.shape
    if logits.dim() == 3:  # dense head: a row per position
        positions, logits = torch.arange(B * T, device=labels.device), logits.flatten(0, 1)
    else:
        positions = sparse_positions(labels, n_kept)
    labels = labels.flatten()[positions]
    token_loss = F.cross_entropy(logits.float(), labels, ignore_index=-100, reduction="none")  # (rows,)
    example = positions // T  # which example each row belongs to
    loss_sum = torch.zeros(B, device=logits.device).index_add_(0, example, token_loss)
    count = torch.zeros(B, device=logits.device).index_add_(0, example, (labels != -100).float())
    return (weights * loss_sum / count.clamp(min=1)).sum()


def example_alignment(model: CramBERT, batch, desired_batch=None, desired_gradient: dict | None = None,
                      n_kept: int | None = None) -> torch.Tensor:
    """Per-example contribution c_n = ∇L_desired · ∇l_n, both gradients restricted to the MLM head.
    batch and desired_batch are (input_ids, attention_mask, labels); pass desired_gradient to reuse one.
    n_kept: the sparse head's row count for batch (model.sparse_positions)."""
    if desired_gradient is None:
        desired_gradient = desired_head_gradient(model, desired_batch)
    input_ids, attention_mask, labels = batch

    def weighted_loss(params, u):
        logits = functional_call(model, params, (input_ids, attention_mask, labels), {"n_kept": n_kept})[0]
        return weighted_mlm_loss(logits, labels, u, n_kept)

    with evaluation_mode(model):
        return contributions(weighted_loss, _split_head(model), desired_gradient, input_ids.size(0))


def policy_flops(model_config: ModelConfig, rows: int, seq_len: int, mask_rate: float,
                 config: LearningLawPolicyConfig) -> float:
    """FLOPs one LearningLawPolicy.weights call adds to training on a micro-batch of `rows` sequences, the
    desired gradient's refresh amortised over refresh_every calls. An estimate counted like model.flops_per_token
    (matmuls only, 2 FLOPs per multiply-add; the head's rows are the sparse head's mask_rate share). It counts:
      - the batch's forward pass in example_alignment: flops_per_token / 3 per token (no graph in the encoder);
      - the head's double backward in contributions(): the first backward (create_graph) through the decoder and
        head_dense's weight gradient, then that graph's backward to the example weights u, each about one
        forward pass of the head (head_dense and the decoder): 2 head forwards per token;
      - every refresh_every calls, the desired batch's forward pass and its head backward (1 head forward).
    With the math attention backend torch's FlopCounterMode counts exactly this (tests/test_policy.py). Not
    counted, as in flops_per_token: norms, softmax, the simplex projection."""
    C, V = model_config.n_embd, model_config.vocab_size
    forward = flops_per_token(model_config, seq_len, mask_rate) / 3
    head = 2 * (C * C + C * V) * (mask_rate if model_config.mlm_head == "sparse" else 1.0)
    refresh = config.desired_batch_size * seq_len * (forward + head) / config.refresh_every
    return rows * seq_len * (forward + 2 * head) + refresh


class LearningLawPolicy:
    """Weights for each batch from the Learning Law, for train.py: loss = Σ_n w_n · mean-CE_n."""

    def __init__(self, config: LearningLawPolicyConfig, desired_batch):
        if config.refresh_every < 1 or config.step_size < 0:
            raise ValueError(f"need refresh_every >= 1 and step_size >= 0, got {config}")
        self.config = config
        self.desired_batch = tuple(desired_batch)  # (input_ids, attention_mask, labels), a fixed held-out batch
        self.calls = 0  # weights() calls so far: decides when the cached desired gradient is refreshed
        self.desired_gradient = None  # cached ∇_head L_desired, from the last refresh

    def weights(self, model: CramBERT, input_ids, attention_mask, labels, n_kept: int | None = None) -> torch.Tensor:
        """(B,) weights on the simplex for this batch (n_kept: the sparse head's row count for it)."""
        if self.calls % self.config.refresh_every == 0 or self.desired_gradient is None:
            device = input_ids.device
            self.desired_gradient = desired_head_gradient(model, [None if x is None else x.to(device)
                                                                  for x in self.desired_batch])
        self.calls += 1
        # after a resume with map_location="cpu" the cached gradient may sit on another device (a no-op otherwise)
        self.desired_gradient = {k: g.to(input_ids.device) for k, g in self.desired_gradient.items()}
        c = example_alignment(model, (input_ids, attention_mask, labels), desired_gradient=self.desired_gradient,
                              n_kept=n_kept)
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
