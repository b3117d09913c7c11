"""
Tools to see what a pretrained encoder brings to a downstream task and what fine-tuning does to it
(glue_eval.py's --method probe and --report-drift; --method lp-ft, Kumar et al. 2022, "Fine-Tuning can Distort
Pretrained Features and Underperform Out-of-Distribution", ICLR, is in finetune.finetune_task):

  - a linear probe: a linear model on frozen sentence vectors, standardised, fitted to its optimum by L-BFGS,
    its L2 strength chosen on a held-out part of the training rows (never on dev). It reads what the features
    already hold; fine-tuning can only add to that if it does not destroy it first.
  - a drift monitor: how far each part of the model has moved from where fine-tuning started, ||W - W0|| / ||W0||,
    and the size of the sentence vectors, at a few steps.
"""
import math

import numpy as np
import torch
import torch.nn.functional as F

PROBE_L2_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)  # L2 strengths tried, per unit of the mean loss
PROBE_HELD_OUT = 0.2  # share of the training rows held out to choose the L2 strength
DRIFT_STEPS = (0, 10, 50, 200)  # steps at which the drift monitor records, besides the last one


# ----------------------------------------------------------------------------------------------------
# The linear probe

def linear_objective(features, targets, weight, bias, l2: float) -> torch.Tensor:
    """Mean cross-entropy (classes) or mean squared error (one output: regression) + l2/2 ||W||² (the bias is
    not penalised). features (N, C), weight (K, C), bias (K,)."""
    outputs = features @ weight.T + bias  # (N, K)
    loss = F.mse_loss(outputs[:, 0], targets) if weight.size(0) == 1 else F.cross_entropy(outputs, targets)
    return loss + 0.5 * l2 * weight.pow(2).sum()


def fit_linear(features, targets, num_labels: int, l2: float, max_iter: int = 500) -> tuple:
    """(weight (K, C), bias (K,), objective at the optimum). The objective is convex (strictly, with l2 > 0), so
    L-BFGS with a strong-Wolfe line search reaches its one optimum from zero; in float64 so that the answer
    does not depend on rounding."""
    features = features.double()
    targets = targets.double() if num_labels == 1 else targets.long()
    weight = torch.zeros(num_labels, features.size(1), dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(num_labels, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], lr=1, max_iter=max_iter, tolerance_grad=1e-10,
                                  tolerance_change=1e-14, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = linear_objective(features, targets, weight, bias, l2)
        loss.backward()
        return loss
    optimizer.step(closure)
    with torch.no_grad():
        objective = float(linear_objective(features, targets, weight, bias, l2))
    return weight.detach(), bias.detach(), objective


def choose_l2(features, targets, num_labels: int, seed: int) -> float:
    """The strength from PROBE_L2_GRID whose fit on the other rows has the lowest unpenalised loss on a
    PROBE_HELD_OUT share of the training rows (drawn with `seed`)."""
    order = torch.randperm(len(targets), generator=torch.Generator().manual_seed(seed))
    n_held_out = max(1, int(PROBE_HELD_OUT * len(targets)))
    held_out, fit = order[:n_held_out], order[n_held_out:]
    targets_held_out = targets[held_out].double() if num_labels == 1 else targets[held_out].long()
    losses = []
    for l2 in PROBE_L2_GRID:
        weight, bias, _ = fit_linear(features[fit], targets[fit], num_labels, l2)
        losses.append(float(linear_objective(features[held_out].double(), targets_held_out, weight, bias, 0.0)))
    return PROBE_L2_GRID[int(np.argmin(losses))]


def fit_probe(features, targets, num_labels: int, seed: int = 0) -> tuple:
    """The linear probe on raw features: standardise each feature (mean 0, sd 1 over the training rows, so one
    L2 strength suits every feature), choose the L2 strength, fit on all rows. Returns (weight, bias, l2) with
    the standardisation folded in, W (x - m) / s + b = (W / s) x + (b - (W / s) m), so that they apply to raw
    features."""
    mean, sd = features.double().mean(0), features.double().std(0).clamp_min(1e-6)
    standard = (features.double() - mean) / sd
    l2 = choose_l2(standard, targets, num_labels, seed)
    weight, bias, _ = fit_linear(standard, targets, num_labels, l2)
    weight = weight / sd
    return weight.float(), (bias - weight @ mean).float(), l2


# ----------------------------------------------------------------------------------------------------
# What fine-tuning changes first

def relative_change(now: list, start: list) -> float:
    """||W - W0|| / ||W0|| over a group of tensors taken together (0 for a group that started at zero)."""
    change = math.sqrt(sum(float((a.detach().float() - b.float()).pow(2).sum()) for a, b in zip(now, start)))
    size = math.sqrt(sum(float(b.float().pow(2).sum()) for b in start))
    return change / size if size else 0.0


def drift_parts(model) -> dict:
    """The groups of a CramBERTForSequenceClassification whose drift is reported: the token embedding table,
    every LayerNorm's weight (the scales a pre-LN model trains hardest), each block whole, and the head."""
    encoder = model.encoder
    parts = {"token_embedding": [encoder.embedding.tok.weight], "embedding_norm": [encoder.embedding.norm.weight]}
    for index, block in enumerate(encoder.blocks):
        parts[f"block{index}"] = list(block.parameters())
        parts[f"block{index}.norm1"], parts[f"block{index}.norm2"] = [block.norm1.weight], [block.norm2.weight]
    if hasattr(encoder.final_norm, "weight"):  # pre-LN only
        parts["final_norm"] = [encoder.final_norm.weight]
    parts["head"] = list(model.pooler.parameters()) + list(model.classifier.parameters())
    return parts


class DriftMonitor:
    """Called by the fine-tuning loop as monitor(step, total_steps, model) before the first step and after
    each one; at DRIFT_STEPS and the last step it appends to `records`: each drift_parts group's relative
    change since step 0, the change of the embedding rows of the tokens the training set uses (the other rows
    get no gradient, so the whole table's change understates it), and the mean L2 norm of the summary and
    pooled vectors (model.pool) of a fixed batch, computed without dropout."""

    def __init__(self, batch: tuple, seen_token_ids: torch.Tensor):
        self.batch, self.seen_token_ids = batch, seen_token_ids  # (input_ids, attention_mask), (n_seen,)
        self.start, self.start_seen_rows, self.records = None, None, []

    def __call__(self, step: int, total_steps: int, model):
        parts = drift_parts(model)
        table = model.encoder.embedding.tok.weight
        seen_rows = table[self.seen_token_ids.to(table.device)]
        if self.start is None:
            self.start = {name: [p.detach().clone() for p in params] for name, params in parts.items()}
            self.start_seen_rows = seen_rows.detach().clone()
        if step not in DRIFT_STEPS and step != total_steps:
            return
        record = {"step": step, **{name: relative_change(params, self.start[name]) for name, params in parts.items()},
                  "token_embedding_seen_rows": relative_change([seen_rows], [self.start_seen_rows])}
        was_training = model.training
        model.eval()
        with torch.no_grad():
            summary, pooled = model.pool(*self.batch)
        model.train(was_training)
        record["summary_norm"] = float(summary.float().norm(dim=-1).mean())
        record["pooled_norm"] = float(pooled.float().norm(dim=-1).mean())
        self.records.append(record)
