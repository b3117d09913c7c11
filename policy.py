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

The paper's experiments (Sec. 4) that use Part 1 are reproduced by experiments/policy_bench.py.
"""
import contextlib
import os
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from data.loader import MLMBatches, TokenFile, data_tokenizer, mask_tokens
from model import CramBERT, ModelConfig, flops_per_token, scored_share, sparse_positions
from run.config import max_mask_rate

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
# Cost. c needs each example's gradient dotted with the desired gradient; over all parameters that is a
# per-example backward. We restrict both gradients to the decoder, the last layer (the V×C output
# projection, tied to the input embedding): "last-layer gradient features" are the standard cheap stand-in
# for per-example gradients (Katharopoulos & Fleuret 2018, Sec. 3.3; Mirzasoleiman et al. 2020, CRAIG), and
# the decoder's are the ones with a closed form. For a masked token t with decoder input h_t (C) and logits
# z_t (V), ∂l_t/∂W = g_t h_t^T with g_t = softmax(z_t) − onehot(y_t). So with the desired batch's gradient
# G = mean_s g_s h_s^T (V×C), an example's contribution is c_n = mean_{t∈n} g_t · (G h_t), made from the
# logits and decoder inputs of the training forward pass itself (a forward hook keeps h): no extra forward
# pass, no autograd. What is left per micro-batch is G h_t for its masked rows (one decoder-sized matmul,
# ~1/3 of the head's training cost) and, every refresh_every calls, a no-grad forward pass of the desired
# batch to recompute G. An earlier version (commit f894455) restricted the gradients to the head's C×C
# transform instead, which needed its own forward pass and a double backward: ~2.6× the cost of a training
# step on the CPU recipe, too much for any reweighting to pay back. train.py counts the policy's cost in the
# wall-clock budget and, by policy_flops, in --max-flops.
#
# The loss score (the default). On a corpus with 40% shuffled-word documents (data/plant.py, BENCHMARKS.md),
# contributions at this scale are too noisy to find the planted rows: after a 6-minute CPU run the exact
# all-parameter c_n ranked a clean row above its shuffled copy in 62% of pairs and the decoder's c_n in 53% (it
# mostly tracks how frequent the masked words are), while the example's own loss did in 99%. So the default
# keeps the Law's property that noisy examples get weight 0 and finds them by their loss: an example whose loss
# is more than loss_margin standard deviations above the desired batch's mean example loss is unlike the data we
# want; the others share the batch equally. The losses come with the training forward pass, so only the refresh
# costs anything. What no reweighting can do is save compute: a weight-0 row has been through the forward pass
# and still goes through the backward (the batch is one tensor), and BENCHMARKS.md shows that is what limits it.


@dataclass
class LearningLawPolicyConfig:
    refresh_every: int = 100  # recompute the desired batch's losses (and G) every this many calls (they drift slowly)
    step_size: float = 1.0  # "decoder": ε in units of 1/B per std of the contributions: 1 zeroes examples ~1 std below
    desired_batch_size: int = 32  # held-out sequences train.py draws for the desired batch (fixed for the run)
    rank: int = 16  # "decoder": keep G's top singular directions (0 = all): G h_t costs r·(V + C), not V·C, per row
    score: str = "loss"  # "loss": drop examples whose loss is far above the desired batch's; "decoder": contributions
    loss_margin: float = 1.5  # "loss": weight 0 above the desired batch's mean example loss + this many std


@contextlib.contextmanager
def evaluation_mode(model: CramBERT):
    """No dropout noise in the scores and no draw from the training RNG; the caller's mode is restored."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def head_rows(logits: torch.Tensor, labels: torch.Tensor, n_kept: int | None = None):
    """(positions into the flattened (B, T) labels, logits as (rows, V)) for the logits CramBERT returns:
    (B, T, V) from the dense head (a row per position), or (n_kept, V) from the sparse head."""
    if logits.dim() == 3:
        return torch.arange(labels.numel(), device=labels.device), logits.flatten(0, 1)
    return sparse_positions(labels, n_kept), logits


def example_losses(logits: torch.Tensor, labels: torch.Tensor, n_kept: int | None = None) -> torch.Tensor:
    """(B,) each example's mean cross-entropy over its masked tokens, from the logits CramBERT returns: (B, T, V)
    from the dense head, or (n_kept, V) at sparse_positions(labels, n_kept) from the sparse head (pass the
    n_kept the model was given). labels: (B, T)."""
    B, T = labels.shape
    positions, logits = head_rows(logits, labels, n_kept)
    labels = labels.flatten()[positions]
    token_loss = F.cross_entropy(logits.float(), labels, ignore_index=-100, reduction="none")  # (rows,)
    example = positions // T  # which example each row belongs to
    loss_sum = torch.zeros(B, device=logits.device).index_add_(0, example, token_loss)
    count = torch.zeros(B, device=logits.device).index_add_(0, example, (labels != -100).float())
    return loss_sum / count.clamp(min=1)


def weighted_mlm_loss(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor,
                      n_kept: int | None = None) -> torch.Tensor:
    """The policy's training loss Σ_n w_n · l_n, l_n from example_losses; weights: (B,) on the simplex."""
    return (weights * example_losses(logits, labels, n_kept)).sum()


def logit_gradients(logits: torch.Tensor, labels: torch.Tensor, n_kept: int | None = None):
    """Per labelled token: (g_t, example index, row of logits), g_t = ∂CE/∂z_t = softmax(z_t) − onehot(y_t).
    logits as CramBERT returns them: (B, T, V) dense, or (n_kept, V) at sparse_positions(labels, n_kept)."""
    T = labels.size(1)
    positions, logits = head_rows(logits, labels, n_kept)
    targets = labels.flatten()[positions]
    rows = (targets != -100).nonzero().squeeze(1)  # logit rows that carry a label
    g = torch.softmax(logits[rows].float(), dim=-1)
    g[torch.arange(len(rows), device=g.device), targets[rows]] -= 1
    return g, positions[rows] // T, rows


def low_rank(G: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(left (V, r), right (r, C)) with left @ right the best rank-r approximation of G (Eckart–Young: the top
    singular directions); rank 0 or ≥ C keeps G whole as (G, I)."""
    if rank == 0 or rank >= min(G.shape):
        return G, torch.eye(G.size(1), device=G.device)
    U, S, Vh = torch.linalg.svd(G, full_matrices=False)
    return U[:, :rank] * S[:rank], Vh[:rank]


def decoder_contributions(logits: torch.Tensor, decoder_input: torch.Tensor, labels: torch.Tensor,
                          desired_gradient: tuple[torch.Tensor, torch.Tensor], n_kept: int | None = None) -> torch.Tensor:
    """(B,) c_n = ∇_W l_n · G for the decoder weight W, l_n the mean cross-entropy over example n's masked
    tokens (as weighted_mlm_loss weighs it). decoder_input: the decoder's input rows matching logits' rows
    ((B, T, C) or (n_kept, C)); desired_gradient: G ≈ left @ right, the factors of low_rank.
    Per token g_t · (G h_t) = (leftᵀ g_t) · (right h_t) with leftᵀ g_t = leftᵀ softmax(z_t) − left[y_t]:
    the V-wide g_t is never formed, which on a CPU is most of the cost."""
    B, T = labels.shape
    left, right = desired_gradient
    positions, logits = head_rows(logits.detach(), labels, n_kept)
    targets = labels.flatten()[positions]
    labelled = (targets != -100).float()  # the sparse head's static count can include unlabelled rows
    h = decoder_input.detach().reshape(-1, decoder_input.size(-1)).float()
    projected_g = torch.softmax(logits.float(), dim=-1) @ left - left[targets.clamp(min=0)]  # (rows, r)
    per_token = (projected_g * (h @ right.T)).sum(-1) * labelled
    example = positions // T
    total = torch.zeros(B, device=h.device).index_add_(0, example, per_token)
    count = torch.zeros(B, device=h.device).index_add_(0, example, labelled)
    return total / count.clamp(min=1)


def policy_flops(model_config: ModelConfig, rows: int, seq_len: int, mask_rate: float,
                 config: LearningLawPolicyConfig) -> float:
    """FLOPs one LearningLawPolicy.weights call adds to training on a micro-batch of `rows` sequences, the
    desired gradient's refresh amortised over refresh_every calls. Counted like model.flops_per_token (matmuls
    only, 2 FLOPs per multiply-add; the decoder's rows are the sparse head's mask_rate share):
      - g_t · G h_t for the batch's decoder rows through G's factors: 2·r·(C + V) per row (r = C when whole);
      - every refresh_every calls, the desired batch's forward pass (flops_per_token / 3 per token) and
        G = mean g_s h_s^T over its decoder rows (2·C·V per row).
    With the math attention backend torch's FlopCounterMode counts exactly this (tests/test_policy.py). Not
    counted, as in flops_per_token: norms, the softmax, the SVD, the simplex projection."""
    C, V = model_config.n_embd, model_config.vocab_size
    r = config.rank if 0 < config.rank < min(C, V) else C
    share = scored_share(model_config, mask_rate)  # decoder rows per token
    forward = flops_per_token(model_config, seq_len, mask_rate) / 3
    if config.score == "loss":  # the example losses come with the training forward pass: only the refresh costs
        return config.desired_batch_size * seq_len * forward / config.refresh_every
    refresh = config.desired_batch_size * seq_len * (forward + 2 * C * V * share) / config.refresh_every
    return rows * seq_len * 2 * r * (C + V) * share + refresh


class LearningLawPolicy:
    """Weights for each batch from the Learning Law, for train.py: loss = Σ_n w_n · mean-CE_n.

    Per micro-batch: logits, loss = model(...) as usual, then loss = policy.weighted_loss(raw_model, logits,
    labels, n_kept): weighted_mlm_loss with this batch's weights. Call policy.watch(raw_model) once before the
    first forward pass (and before torch.compile traces it, so the hook is part of the graph); again after
    growth, to move the hook to the grown model: it keeps the decoder's input."""

    def __init__(self, config: LearningLawPolicyConfig, desired_batch: tuple | None):
        if config.refresh_every < 1 or config.step_size < 0 or config.score not in ("loss", "decoder"):
            raise ValueError(f"need refresh_every >= 1, step_size >= 0 and score loss or decoder, got {config}")
        self.config = config
        # (input_ids, attention_mask, labels): a fixed held-out batch (train.py sets it once the data is prepared)
        self.desired_batch = None if desired_batch is None else tuple(desired_batch)
        self.calls = 0  # weights() calls so far: decides when the cached desired gradient is refreshed
        self.desired_gradient = None  # cached G = ∇_W L_desired (V, C) as low_rank's factors, from the last refresh
        self.desired_losses = None  # (mean, std) of the desired batch's example losses, from the last refresh
        self.watched, self.hook, self.decoder_input = None, None, None

    def watch(self, model: CramBERT):
        """Keep the decoder's input (head_norm's output) of every forward pass of `model`."""
        if self.watched is not model.head_norm:
            if self.hook is not None:
                self.hook.remove()
            self.hook = model.head_norm.register_forward_hook(self._keep_decoder_input)
            self.watched, self.decoder_input = model.head_norm, None

    def _keep_decoder_input(self, module, inputs, output):
        self.decoder_input = output.detach()

    @torch.no_grad()
    def refresh(self, model: CramBERT):
        """The desired batch's example-loss mean and std (and G for the decoder score) from a forward pass
        (no dropout noise, no draw from the training RNG)."""
        self.watch(model)
        device = model.decoder.weight.device
        input_ids, attention_mask, labels = (None if x is None else x.to(device) for x in self.desired_batch)
        with evaluation_mode(model):
            logits = model(input_ids, attention_mask, labels)[0]
        losses = example_losses(logits, labels)
        self.desired_losses = torch.stack([losses.mean(), losses.std()])
        if self.config.score == "loss":
            return
        g, _, rows = logit_gradients(logits, labels)
        h = self.decoder_input.reshape(-1, self.decoder_input.size(-1))[rows].float()
        self.desired_gradient = low_rank(g.T @ h / len(rows), self.config.rank)

    def weights(self, model: CramBERT, logits: torch.Tensor, labels: torch.Tensor,
                n_kept: int | None = None) -> torch.Tensor:
        """(B,) weights on the simplex for the batch whose forward pass through `model` just gave `logits`."""
        if self.watched is not model.head_norm or self.decoder_input is None:
            raise RuntimeError("call policy.watch(model) before the forward pass whose logits you pass")
        decoder_input = self.decoder_input  # this batch's: a refresh below runs another forward pass
        if self.calls % self.config.refresh_every == 0 or self.desired_losses is None:
            self.refresh(model)
        self.calls += 1
        if self.config.score == "loss":
            losses = example_losses(logits.detach(), labels, n_kept)
            mean, std = self.desired_losses.to(losses.device)
            kept = (losses <= mean + self.config.loss_margin * std).float()
            return kept / kept.sum().clamp(min=1)
        # after a resume with map_location="cpu" the cached gradient may sit on another device (a no-op otherwise)
        self.desired_gradient = tuple(factor.to(logits.device) for factor in self.desired_gradient)
        c = decoder_contributions(logits, decoder_input, labels, self.desired_gradient, n_kept)
        B = c.numel()
        scaled = c / c.std().clamp(min=1e-12) if B > 1 else torch.zeros_like(c)
        return project_to_simplex((1 + self.config.step_size * scaled) / B).detach()

    def weighted_loss(self, model: CramBERT, logits: torch.Tensor, labels: torch.Tensor,
                      n_kept: int | None = None) -> torch.Tensor:
        """This batch's training loss Σ_n w_n · mean-CE_n, the weights from the forward pass that gave logits."""
        return weighted_mlm_loss(logits, labels, self.weights(model, logits, labels, n_kept), n_kept)

    def state_dict(self) -> dict:
        return {"config": asdict(self.config), "calls": self.calls, "desired_batch": self.desired_batch,
                "desired_gradient": self.desired_gradient, "desired_losses": self.desired_losses}

    def load_state_dict(self, state: dict):
        self.config = LearningLawPolicyConfig(**state["config"])
        self.calls, self.desired_batch = state["calls"], tuple(state["desired_batch"])
        self.desired_gradient, self.desired_losses = state["desired_gradient"], state["desired_losses"]


def make_policy(config) -> LearningLawPolicy | None:
    """train.py's --policy: None for uniform (the plain mean loss), else a LearningLawPolicy. Its desired batch
    comes once the data is prepared (held_out_batch)."""
    if config.policy == "uniform":
        return None
    if config.policy != "learning-law":
        raise ValueError(f"unknown policy {config.policy!r}; choose uniform or learning-law")
    return LearningLawPolicy(LearningLawPolicyConfig(), desired_batch=None)


def held_out_batch(config, rows: int) -> tuple:
    """The Learning Law's "desired" data: held-out rows just after the evaluation rows of val.bin, so the policy
    aims at the held-out distribution without ever seeing the rows we report losses on."""
    val = MLMBatches(TokenFile(os.path.join(config.data_dir, "val.bin"), data_tokenizer(config.data_dir)),
                     config.seq_len, config.eval_mask_rate)
    if config.eval_rows + rows > val.num_rows:
        raise ValueError(f"val.bin has {val.num_rows} rows: too few for --eval-rows {config.eval_rows} plus the "
                         f"policy's {rows} desired rows; lower --eval-rows")
    ids = val.rows(np.arange(config.eval_rows, config.eval_rows + rows))
    input_ids, labels = mask_tokens(ids, config.eval_mask_rate, torch.Generator().manual_seed(config.seed), val.tokenizer)
    return input_ids, None, labels


def charged_flops_per_token(model: CramBERT, config, policy_config: LearningLawPolicyConfig | None) -> float:
    """Training FLOPs charged per token against --max-flops (and used for MFU): the model's forward and backward
    (model.flops_per_token) plus, with --policy learning-law, the policy's own work on each micro-batch (a
    decoder-sized product for the contributions and the amortised desired-gradient refresh: policy_flops)."""
    model_flops = model.flops_per_token(config.seq_len, max_mask_rate(config))
    if policy_config is None:
        return model_flops
    micro_batch_tokens = config.micro_batch_size * config.seq_len
    return model_flops + policy_flops(model.config, config.micro_batch_size, config.seq_len, max_mask_rate(config),
                                      policy_config) / micro_batch_tokens
