"""
Compute-optimal planning with the Chinchilla scaling laws, and fitting our own law.

Hoffmann et al. 2022 ("Training Compute-Optimal Large Language Models") model the final loss of a run with
N parameters trained on D tokens as

    L(N, D) = E + A / N^alpha + B / D^beta                                     (paper Eq. 2)

and ask which (N, D) gives the lowest loss for a compute budget of C = 6ND FLOPs. This file uses that law:

    python scaling.py plan --hours 24                 # measure this machine, recommend a model and a token count
    python scaling.py plan --hours 24 --inference-tokens 1e12   # ... and the size that also serves 1e12 tokens cheaply
    python scaling.py fit runs/*/log.jsonl            # fit L(N, D) to our own runs, as the paper does (Approach 3)
    python -m experiments.scaling_sweep --flops 1e14,3e14,1e15 --data-dir data/cache/wiki   # train an IsoFLOP grid, then fit

N counts every parameter once, embeddings included: that is Chinchilla's convention (Kaplan et al. 2020 left
the embeddings out, which Pearce & Song 2024 find is most of why the two papers disagree). At our scale the
choice matters: the 50k-token embedding is most of a small model's parameters.
"""
import argparse
import csv
import itertools
import json
import math
import os
from dataclasses import asdict, dataclass, replace

import torch
import torch.distributed as dist
import torch.nn.functional as F

from data.files import write_json
from data.tokenizer import embedding_rows
from model import MASK_RATE, SHAPE_FIELDS, ModelConfig, flops_per_token, model_config_from_dict, preset_config
from run.config import AUTO_MICRO_BATCH, TrainConfig
from run.device import training_precision
from run.machine import available_memory_bytes, count_params, shape_tokens_per_second, training_memory_bytes

# ----------------------------------------------------------------------------------------------------
# The parametric law and its compute-optimal allocation

@dataclass(frozen=True)
class ScalingLaw:
    E: float  # irreducible loss: what an infinitely large model trained on infinite data still pays
    A: float  # size of the finite-model term A / N^alpha
    B: float  # size of the finite-data term B / D^beta
    alpha: float  # how fast the loss falls with parameters
    beta: float  # how fast the loss falls with training tokens

    def loss(self, params, tokens):
        return self.E + self.A / params ** self.alpha + self.B / tokens ** self.beta

    @property
    def exponents(self) -> tuple[float, float]:
        """(a, b) with N_opt ∝ C^a and D_opt ∝ C^b (paper Eq. 4); a + b = 1 because C = 6ND."""
        return self.beta / (self.alpha + self.beta), self.alpha / (self.alpha + self.beta)

    def compute_optimal(self, compute: float) -> tuple[float, float]:
        """Minimise L(N, D) subject to 6ND = compute. Putting D = C / 6N into L and setting dL/dN = 0 gives
        alpha A / N^alpha = beta B / D^beta, whose solution is paper Eq. 4:
        N_opt = G (C/6)^a and D_opt = (C/6)^b / G with G = (alpha A / (beta B))^(1 / (alpha + beta))."""
        a, b = self.exponents
        G = (self.alpha * self.A / (self.beta * self.B)) ** (1 / (self.alpha + self.beta))
        return G * (compute / 6) ** a, (compute / 6) ** b / G


LAWS = {
    "chinchilla": ScalingLaw(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28),  # Hoffmann et al. Sec. 3.3
    # Besiroglu et al. 2024 ("Chinchilla Scaling: A replication attempt") refit the paper's own data points;
    # their law agrees with the paper's Approaches 1 and 2 and with the ~20 tokens per parameter Chinchilla used.
    "epoch": ScalingLaw(E=1.8172, A=482.01, B=2085.43, alpha=0.3478, beta=0.3658),
}
TOKENS_PER_PARAM = 20  # Approaches 1 and 2 find N_opt and D_opt both ∝ C^0.5 with D/N ≈ 20 (paper Table 3)
# Our own law: `scaling.py fit experiments/scaling_points.json --out experiments/scaling_law.json`, the IsoFLOP sweep
# of the CPU recipe measured on a 2-core CPU (BENCHMARKS.md, "Chinchilla"). `--law ours` reads it.
OUR_LAW = os.path.join(os.path.dirname(os.path.abspath(__file__)), "experiments", "scaling_law.json")


def resolve_law(law):
    """A law given by name ("chinchilla", "epoch", "rule20"), as a ScalingLaw, or as a JSON file that
    `scaling.py fit --out` wrote. "rule20" stays a string: it is a ratio, not a loss surface."""
    if isinstance(law, ScalingLaw) or law == "rule20":
        return law
    if law in LAWS:
        return LAWS[law]
    if law == "ours":
        law = OUR_LAW
    if isinstance(law, str) and os.path.isfile(law):
        with open(law) as f:
            return ScalingLaw(**{k: float(v) for k, v in json.load(f).items() if k in ("E", "A", "B", "alpha", "beta")})
    raise ValueError(f"unknown law {law!r}: use chinchilla, epoch, rule20, ours or a JSON file written by `scaling.py fit`")


def law_range(law) -> tuple[float, float] | None:
    """The compute (6ND) range of the runs a fitted law's JSON was fitted on; None for the paper's laws."""
    path = OUR_LAW if law == "ours" else law
    if isinstance(path, str) and os.path.isfile(path):
        with open(path) as f:
            fitted_on = json.load(f).get("compute_range")
        return tuple(fitted_on) if fitted_on else None
    return None


def range_note(law, compute: float) -> str:
    """Whether a plan at `compute` FLOPs (6ND) stays inside the runs its law was fitted on, and if not by how much."""
    fitted_on = law_range(law)
    if fitted_on is None:
        return ""
    low, high = fitted_on
    if low <= compute <= high:
        return f"  the law was fitted on runs of {low:.3g}-{high:.3g} FLOPs: this plan ({compute:.3g}) is inside them"
    decades = math.log10(compute / high) if compute > high else math.log10(low / compute)
    return (f"  the law was fitted on runs of {low:.3g}-{high:.3g} FLOPs: this plan ({compute:.3g}) extrapolates "
            f"{decades:.1f} decades {'beyond' if compute > high else 'below'} them")


def law_covers(law, compute: float) -> bool:
    """Whether a fitted law was fitted on runs whose compute (6ND) includes `compute`."""
    fitted_on = law_range(law)
    return fitted_on is not None and fitted_on[0] <= compute <= fitted_on[1]


def compute_optimal(compute: float, law="chinchilla") -> tuple[float, float]:
    """(N_opt, D_opt) for `compute` = 6ND FLOPs under a law, or under the 20 tokens per parameter rule,
    where 6 N (20 N) = C gives N = sqrt(C / 120)."""
    law = resolve_law(law)
    if law == "rule20":
        params = math.sqrt(compute / (6 * TOKENS_PER_PARAM))
        return params, TOKENS_PER_PARAM * params
    return law.compute_optimal(compute)


def describe_law(law) -> str:
    law = resolve_law(law)
    if law == "rule20":
        return f"rule of thumb (paper Approaches 1-2): D = {TOKENS_PER_PARAM} N, N_opt = sqrt(C / {6 * TOKENS_PER_PARAM})"
    a, b = law.exponents
    return (f"L(N, D) = {law.E:.4g} + {law.A:.4g}/N^{law.alpha:.4g} + {law.B:.4g}/D^{law.beta:.4g}; "
            f"N_opt ∝ C^{a:.3f}, D_opt ∝ C^{b:.3f}")


# ----------------------------------------------------------------------------------------------------
# Planning: from a budget in seconds to a model shape and a token count

def candidate_configs(seq_len: int = 128, max_width: int = 2048, base: ModelConfig | None = None):
    """The shapes the planner chooses from, all shaped like the presets: depth = width / 64 (the
    aspect ratio of `mini` and `base`; Kaplan et al. Sec. 3.1 find loss barely depends on it), heads of
    64 dimensions and an FFN 4x as wide. Widths step by 64, so neighbouring sizes are close. The widest,
    32 x 2048 (1.7B parameters), is more than a day on one GPU can train compute-optimally. base: the run's
    other settings, its vocabulary above all (N of a small shape is mostly its embedding); default ModelConfig()."""
    base = base or ModelConfig()
    for width in range(64, max_width + 1, 64):
        yield replace(base, max_seq_len=seq_len, n_layer=max(2, width // 64), n_head=width // 64, n_embd=width,
                      intermediate_size=4 * width)


def size_overrides(config: ModelConfig) -> dict:
    """The fields a shape sets; the recipe switches keep their crammed defaults."""
    return {k: getattr(config, k) for k in SHAPE_FIELDS}


@dataclass
class Candidate:
    config: ModelConfig  # the shape
    params: int  # N, all parameters (Chinchilla's convention)
    flops_per_token: float  # real training FLOPs of one token (model.flops_per_token)
    tokens: float  # D = budget FLOPs / flops_per_token: what the budget buys for this shape
    law_params: float  # N_opt under the law at this candidate's Chinchilla compute 6ND
    law_tokens: float  # D_opt likewise
    memory_bytes: int  # training_memory_bytes at the planned micro-batch
    tokens_per_second: float = 0.0  # this shape's own measured speed, when the plan measured each shape


def candidate(config: ModelConfig, tokens_of, law="chinchilla", seq_len: int = 128,
              micro_batch_size: int = AUTO_MICRO_BATCH, tokens_per_second: float = 0.0) -> Candidate:
    """One shape with the tokens the budget buys it (tokens_of(FLOPs per token)) and where the law would put a run
    of its compute."""
    params, cost = count_params(config), flops_per_token(config, seq_len)
    tokens = tokens_of(cost)
    law_params, law_tokens = compute_optimal(6 * params * tokens, law)
    return Candidate(config, params, cost, tokens, law_params, law_tokens,
                     training_memory_bytes(config, params, micro_batch_size, seq_len), tokens_per_second)


def candidates(budget_flops: float, law="chinchilla", seq_len: int = 128,
               micro_batch_size: int = AUTO_MICRO_BATCH, base: ModelConfig | None = None) -> list[Candidate]:
    """Every shape with the tokens the budget buys it, and where the law would put a run of its compute.
    The law's compute is 6ND by definition (paper Sec. 3.3), but our real cost per token is not 6N: the
    embedding lookup is free, the sparse MLM head runs on a quarter of the tokens and attention adds
    12 L T C. So we convert the real budget to tokens with the real count, then ask the law which N
    suits that (N, D) pair's 6ND."""
    return [candidate(config, lambda cost: budget_flops / cost, law, seq_len, micro_batch_size)
            for config in candidate_configs(seq_len, base=base)]


def best_candidate(table: list[Candidate], law="chinchilla") -> Candidate:
    """The shape a law would train on this budget: the lowest predicted loss L(N, D) with D the tokens the
    real budget buys it (Candidate.tokens). Not the shape whose N is closest to N_opt: N_opt is taken at the
    Chinchilla compute 6ND, which is not the real budget (our FLOPs per token are not 6N), and the law is not
    symmetric in log N around N_opt, so the closest N can predict a higher loss (at 1e17 FLOPs under
    Chinchilla's law: 7 x 448 is closest, law loss 4.093; 5 x 320 predicts 4.062). The 20 tokens per
    parameter rule has no loss surface: it keeps the N closest (in ratio) to its N_opt."""
    law = resolve_law(law)
    if law == "rule20":
        return min(table, key=lambda c: abs(math.log(c.params / c.law_params)))
    return min(table, key=lambda c: law.loss(c.params, c.tokens))


@dataclass
class Plan:
    law: str  # the law that chose the size: its name, or a fitted law's file
    model_config: ModelConfig  # the recommended shape; train.py --preset auto builds CramBERT(model_config)
    params: int  # N of that shape
    tokens: float  # D: training tokens the budget buys at that shape's real FLOPs per token
    flops_per_token: float  # model.flops_per_token of the shape
    flops_per_second: float  # achieved training FLOP/s (measured or given)
    budget_flops: float  # budget seconds x flops_per_second
    law_params: float  # the law's N_opt at this plan's 6ND (reported; the plan minimises L(N, D), best_candidate)
    law_tokens: float  # the law's D_opt at this plan's 6ND
    memory_bytes: int  # estimated training memory of the shape
    memory_available: int  # memory the device offers
    explanation: str  # the arithmetic, printed by `scaling.py plan` and logged by train.py
    candidates: list[Candidate]  # every shape considered, smallest first

    @property
    def model_overrides(self) -> dict:  # what config.py's TrainConfig.model_overrides takes
        return size_overrides(self.model_config)


def measured_candidates(budget_seconds: float, tokens_per_second, law="chinchilla", seq_len: int = 128,
                        micro_batch_size: int = AUTO_MICRO_BATCH, base: ModelConfig | None = None,
                        memory_limit: float = math.inf) -> list[Candidate]:
    """Every shape with the tokens the budget buys it at its OWN speed, tokens_per_second(config) (measured:
    small shapes run at a fraction of big shapes' FLOP/s on a CPU, so one shape's FLOP/s given to all would
    under-buy the big ones). Measuring is the cost, so the walk from small to large stops once a shape does not
    fit in memory_limit bytes or the law's predicted loss has risen for two shapes in a row (past its minimum)."""
    surface, table, rises = resolve_law(law), [], 0
    for config in candidate_configs(seq_len, base=base):
        if training_memory_bytes(config, count_params(config), micro_batch_size, seq_len) > memory_limit:
            break
        speed = tokens_per_second(config)
        table.append(candidate(config, lambda cost: budget_seconds * speed, law, seq_len, micro_batch_size, speed))
        if surface != "rule20" and len(table) > 1:
            now, before = table[-1], table[-2]
            rises = rises + 1 if surface.loss(now.params, now.tokens) > surface.loss(before.params, before.tokens) else 0
            if rises == 2:
                break
    return table


def plan(budget_seconds: float, flops_per_second: float | None, law="auto", seq_len: int = 128,
         micro_batch_size: int = AUTO_MICRO_BATCH, memory_bytes: int | None = None,
         memory_fraction: float = 0.8, base: ModelConfig | None = None, tokens_per_second=None) -> Plan:
    """The shape the law would train on this budget: among shapes whose training fits in memory_fraction
    of memory_bytes, the one with the lowest predicted loss at the tokens the budget buys it (best_candidate).
    The budget buys flops_per_second x seconds of FLOPs at every shape, or, given tokens_per_second (a function
    of the shape), each shape its own tokens (measured_candidates). law "auto": our CPU sweep's fit ("ours")
    where the plan it makes lies inside the compute it was fitted on, Chinchilla's law elsewhere (a law fitted on
    1e13-1e14 FLOPs says little about a GPU day's 1e18)."""
    memory_bytes = memory_bytes or available_memory_bytes("cpu")
    if law == "auto":
        arguments = (budget_seconds, flops_per_second, seq_len, micro_batch_size, memory_bytes, memory_fraction, base,
                     tokens_per_second)
        ours = plan(*arguments[:2], "ours", *arguments[2:])
        compute = 6 * ours.params * ours.tokens
        if law_covers("ours", compute):
            ours.explanation = "law: auto chose ours (this plan lies inside the runs it was fitted on)\n" + ours.explanation
            return ours
        low, high = law_range("ours")
        chosen = plan(*arguments[:2], "chinchilla", *arguments[2:])
        chosen.explanation = (f"law: auto chose chinchilla (ours, fitted on runs of {low:.3g}-{high:.3g} FLOPs, "
                              f"would plan {compute:.3g}: outside them)\n" + chosen.explanation)
        return chosen
    if tokens_per_second is None:
        table = candidates(budget_seconds * flops_per_second, law, seq_len, micro_batch_size, base)
    else:
        table = measured_candidates(budget_seconds, tokens_per_second, law, seq_len, micro_batch_size, base,
                                    memory_fraction * memory_bytes)
    fitting = [c for c in table if c.memory_bytes <= memory_fraction * memory_bytes]
    if not fitting:
        raise ValueError(f"even the smallest shape needs {table[0].memory_bytes / 1e9:.2f} GB, more than "
                         f"{memory_fraction:.0%} of {memory_bytes / 1e9:.2f} GB; lower the micro-batch size")
    best = best_candidate(fitting, law)
    if tokens_per_second is not None:  # each shape bought its own FLOPs: report the chosen one's
        flops_per_second = best.tokens_per_second * best.flops_per_token
    budget_flops = budget_seconds * flops_per_second
    law_name = law if isinstance(law, str) else "fitted"
    cfg, i = best.config, table.index(best)
    speed = "each shape at its own measured tokens/s" if tokens_per_second is not None else \
        f"{flops_per_second:.3g} FLOP/s for every shape"
    lines = [
        f"budget: {budget_seconds / 3600:.3g} h, {speed}; the chosen shape's: {budget_flops:.3g} FLOPs",
        f"law ({law_name}): {describe_law(law)}",
        f"shapes: width w, depth w/64, heads of 64, FFN 4w, vocabulary {cfg.vocab_size}; D = budget x tokens/s",
        f"  {'layers x width':>14} {'N':>9} {'FLOPs/tok':>10} {'tokens/s':>9} {'D':>9} {'D/N':>7} {'law N_opt':>10} "
        f"{'law L':>7} {'memory':>9}",
    ]
    surface = resolve_law(law)
    for c in table[max(0, i - 3):i + 4]:
        predicted = "-" if surface == "rule20" else f"{surface.loss(c.params, c.tokens):.4f}"
        speed_text = f"{c.tokens_per_second:9.3g}" if c.tokens_per_second else f"{'-':>9}"
        lines.append(f"{'->' if c is best else '  '}{c.config.n_layer:>5} x {c.config.n_embd:<6} {c.params:9.3g} "
                     f"{c.flops_per_token:10.3g} {speed_text} {c.tokens:9.3g} {c.tokens / c.params:7.3g} "
                     f"{c.law_params:10.3g} "
                     f"{predicted:>7} {c.memory_bytes / 1e9:7.2f}GB"
                     + ("" if c.memory_bytes <= memory_fraction * memory_bytes else " (does not fit)"))
    lines += [
        f"chosen: {cfg.n_layer} layers x {cfg.n_embd} wide, heads={cfg.n_head}, FFN {cfg.intermediate_size}: "
        f"N = {best.params:.4g} parameters",
        f"  real cost {best.flops_per_token:.4g} FLOPs/token (6N would be {6 * best.params:.4g}: embedding lookups "
        f"are free and the sparse head sees {MASK_RATE:.0%} of tokens)",
        f"  D = {budget_flops:.4g} / {best.flops_per_token:.4g} = {best.tokens:.4g} tokens, "
        f"{best.tokens / best.params:.3g} tokens per parameter",
        f"  the law at C = 6ND = {6 * best.params * best.tokens:.4g} wants N_opt = {best.law_params:.4g}, "
        f"D_opt = {best.law_tokens:.4g} ({best.law_tokens / best.law_params:.3g} tokens per parameter)",
        f"  memory: ~{best.memory_bytes / 1e9:.2f} GB (16 B/parameter for weights, gradients and AdamW, plus "
        f"activations of {micro_batch_size} x {seq_len} tokens) of {memory_bytes / 1e9:.2f} GB",
    ]
    note = range_note(law, 6 * best.params * best.tokens)
    if note:
        lines.append(note)
    if best is table[0] and best.params > best.law_params:
        lines.append("  note: even the smallest shape is larger than the law asks (fewer tokens than optimal)")
    elif best is fitting[-1] and best.params < best.law_params:
        lines.append("  note: memory or the widest shape caps N below the law's N_opt (more tokens than optimal)")
    return Plan(law_name, cfg, best.params, best.tokens, best.flops_per_token, flops_per_second, budget_flops,
                best.law_params, best.law_tokens, best.memory_bytes, memory_bytes, "\n".join(lines), table)


def plan_for_machine(budget_seconds: float, device: str = "cpu", law="auto",
                     flops_per_second: float | None = None, seq_len: int = 128,
                     micro_batch_size: int = AUTO_MICRO_BATCH, bench_seconds: float = 3.0,
                     base: ModelConfig | None = None, precision: str = "auto") -> Plan:
    """plan() with this machine's numbers: each shape's own training tokens/s, measured (shape_tokens_per_second:
    eager, in the run's precision, the median step of ~bench_seconds), so that each buys its own tokens. One
    shape's FLOP/s given to all (as this planner once did) walks down on a CPU: small shapes run at a fraction
    of big shapes' FLOP/s, so measuring a small one shrinks the budget, which makes a smaller one optimal.
    flops_per_second: skip the measurement and give every shape that FLOP/s."""
    memory = available_memory_bytes(device)
    if flops_per_second:
        return plan(budget_seconds, flops_per_second, law, seq_len, micro_batch_size, memory, base=base)
    bench_batch = micro_batch_size if torch.device(device).type == "cuda" else 8  # keep the CPU benchmark short

    measured = {}  # shape -> tokens/s: law "auto" may plan twice over the same shapes

    def measure(config: ModelConfig) -> float:
        shape = (config.n_layer, config.n_embd, config.n_head, config.intermediate_size, config.vocab_size)
        if shape not in measured:
            measured[shape] = shape_tokens_per_second(config, device, bench_seconds, bench_batch, seq_len, precision)
        return measured[shape]

    result = plan(budget_seconds, None, law, seq_len, micro_batch_size, memory, base=base, tokens_per_second=measure)
    result.explanation = (f"measured each shape's training tokens/s ({bench_batch} x {seq_len} tokens a step, AdamW, "
                          f"{device}, {training_precision(torch.device(device), precision)}, eager; the median step of "
                          f"~{bench_seconds:g} s)\n" + result.explanation)
    return result


# ----------------------------------------------------------------------------------------------------
# Inference-aware sizing (Sardana & Frankle 2023, "Beyond Chinchilla-Optimal", Sec. 2)
#
# A model that will serve many tokens pays for them too: ~2N FLOPs a token of inference (a forward pass) against
# 6N a token of training. For a target loss, the law's iso-loss curve L(N, D) = loss gives every N its D, and the
# total 6 N D + 2 N D_inference is smallest at a smaller N trained on more tokens than Chinchilla's optimum.

@dataclass
class Sizing:
    params: float  # N
    tokens: float  # D: training tokens
    loss: float  # the law's L(N, D)
    training_flops: float  # 6 N D (the law's compute)
    inference_flops: float  # 2 N D_inference

    @property
    def total_flops(self) -> float:
        return self.training_flops + self.inference_flops


def tokens_for_loss(law: ScalingLaw, params: float, loss: float) -> float:
    """D with L(N, D) = loss: solving E + A/N^alpha + B/D^beta = loss for D; inf when N alone cannot reach it."""
    room = loss - law.E - law.A / params ** law.alpha
    return (law.B / room) ** (1 / law.beta) if room > 0 else math.inf


def inference_aware(law: ScalingLaw, loss: float, inference_tokens: float) -> Sizing:
    """The N (and its D on the iso-loss curve) minimising 6 N D + 2 N inference_tokens for the law's `loss`: a
    log-spaced search over N (the total is smooth and has one minimum in log N), refined around the best point."""
    if loss <= law.E:
        raise ValueError(f"target loss {loss:.4g} is at or below the law's irreducible E = {law.E:.4g}: unreachable")
    smallest = (law.A / (loss - law.E)) ** (1 / law.alpha)  # below this N even infinite data stays above `loss`

    def total(log_n: float) -> float:
        n = math.exp(log_n)
        return 6 * n * tokens_for_loss(law, n, loss) + 2 * n * inference_tokens

    low, high = math.log(smallest) + 1e-9, math.log(smallest) + 12 * math.log(10)
    for _ in range(4):  # four rounds of 400 points, each around the last round's best
        grid = [low + (high - low) * i / 399 for i in range(400)]
        best = min(range(400), key=lambda i: total(grid[i]))
        low, high = grid[max(0, best - 1)], grid[min(399, best + 1)]
    n = math.exp(grid[best])
    d = tokens_for_loss(law, n, loss)
    return Sizing(n, d, law.loss(n, d), 6 * n * d, 2 * n * inference_tokens)


def inference_table(law: ScalingLaw, compute: float, inference_tokens: float, target_loss: float | None = None) -> str:
    """Compute-optimal for `compute` beside the inference-aware choice for the same loss (or target_loss)."""
    n_opt, d_opt = law.compute_optimal(compute)
    loss = target_loss or law.loss(n_opt, d_opt)
    optimal = Sizing(n_opt, d_opt, law.loss(n_opt, d_opt), 6 * n_opt * d_opt, 2 * n_opt * inference_tokens)
    if target_loss:  # the compute-optimal model that reaches target_loss: on the iso-loss curve, inference 0
        optimal = inference_aware(law, loss, 0.0)
        optimal.inference_flops = 2 * optimal.params * inference_tokens
    aware = inference_aware(law, loss, inference_tokens)
    lines = [f"law: {describe_law(law)}; loss {loss:.4f}, inference {inference_tokens:.3g} tokens (2N FLOPs each)",
             f"{'':<18} {'N':>10} {'D':>10} {'D/N':>7} {'train FLOPs':>12} {'infer FLOPs':>12} {'total':>10}"]
    for name, row in (("compute-optimal", optimal), ("inference-aware", aware)):
        lines.append(f"{name:<18} {row.params:10.3g} {row.tokens:10.3g} {row.tokens / row.params:7.1f} "
                     f"{row.training_flops:12.3g} {row.inference_flops:12.3g} {row.total_flops:10.3g}")
    saved = max(0.0, 1 - aware.total_flops / optimal.total_flops)  # 0 up to the search's rounding
    lines.append(f"inference-aware saves {saved:.1%} of the total FLOPs")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------
# Fitting L(N, D) to our own runs (paper Sec. 3.3 and Appendix D.2)

def fit_law(params, tokens, losses, delta: float = 1e-3, starts: int = 16) -> ScalingLaw:
    """The paper's fit: minimise sum_i Huber_delta(log L_pred(N_i, D_i) - log L_i) with
    log L_pred = LSE(a - alpha log N, b - beta log D, e) and A = e^a, B = e^b, E = e^e, by L-BFGS from a
    grid of starting points, keeping the best. The Huber loss is quadratic below delta and linear above,
    so one bad run moves the fit far less than under least squares. The paper starts L-BFGS from every
    point of its 4500-point grid; we evaluate the objective on that whole grid (cheap, batched) and run
    L-BFGS from the `starts` best points, which finds the same minimum in seconds instead of minutes."""
    if not len(params) == len(tokens) == len(losses) or len(params) < 5:
        raise ValueError(f"need at least 5 (N, D, loss) points for 5 constants, got {len(params)}")
    log_n, log_d, log_l = (torch.tensor(x, dtype=torch.float64).log() for x in (params, tokens, losses))

    def objective(theta):  # theta: (..., 5) = (a, b, e, alpha, beta) -> (...) one value per row
        a, b, e, alpha, beta = (t.unsqueeze(-1) for t in theta.unbind(-1))
        terms = torch.broadcast_tensors(a - alpha * log_n, b - beta * log_d, e)
        predicted = torch.logsumexp(torch.stack(terms), dim=0)
        # Divided by delta so gradients are O(1) and L-BFGS's stopping tolerances mean the same at any delta.
        return F.huber_loss(predicted, log_l.expand_as(predicted), delta=delta, reduction="none").sum(-1) / delta

    grid = torch.tensor(list(itertools.product(range(0, 26, 5), range(0, 26, 5), (-1, -0.5, 0, 0.5, 1),
                                               (0, 0.5, 1, 1.5, 2), (0, 0.5, 1, 1.5, 2))), dtype=torch.float64)
    best_value, best_theta = math.inf, None
    for start in grid[objective(grid).argsort()[:starts]]:
        theta = start.clone().requires_grad_()
        optimizer = torch.optim.LBFGS([theta], max_iter=500, tolerance_grad=1e-9, tolerance_change=1e-12,
                                      history_size=20, line_search_fn="strong_wolfe")

        def closure():
            optimizer.zero_grad()
            value = objective(theta)
            value.backward()
            return value

        optimizer.step(closure)
        value = objective(theta).item()
        if value < best_value:
            best_value, best_theta = value, theta.detach()
    a, b, e, alpha, beta = best_theta.tolist()
    return ScalingLaw(E=math.exp(e), A=math.exp(a), B=math.exp(b), alpha=alpha, beta=beta)


def read_points(paths: list[str]) -> list[dict]:
    """(N, D, loss) points from train.py JSONL logs (one run each: its "summary" record, else the
    "config" record's params with the last "eval" record), or from .json / .csv files of {N, D, loss}."""
    points = []
    for path in paths:
        if path.endswith(".jsonl"):
            with open(path) as f:
                records = [json.loads(line) for line in f if line.strip()]
            # A resumed run appends to its log: the last summary and config records describe how it ended.
            summary = next((r for r in reversed(records) if r.get("kind") == "summary"), {})
            config = next((r for r in reversed(records) if r.get("kind") == "config"), {})
            evals = [r for r in records if r.get("kind") == "eval" and "val_loss" in r]
            params = summary.get("params", config.get("params"))
            tokens = summary.get("tokens", evals[-1].get("tokens") if evals else None)
            loss = summary.get("final_val_loss", evals[-1]["val_loss"] if evals else None)
            if summary.get("finished") is False:  # an interrupted run never reached the end of its schedule
                raise ValueError(f"{path}: the run did not finish (resume it with train.py --resume first)")
            if None in (params, tokens, loss):
                raise ValueError(f"{path}: needs params (summary or config record), tokens and a validation "
                                 f"loss (summary or eval records); is it a train.py log of a finished run?")
            points.append({"N": params, "D": tokens, "loss": loss, "source": path})
            continue
        if path.endswith(".json"):
            with open(path) as f:
                rows = json.load(f)
        elif path.endswith(".csv"):
            with open(path, newline="") as f:
                rows = list(csv.DictReader(f))
        else:
            raise ValueError(f"{path}: expected a .jsonl run log, or a .json / .csv file of N, D, loss")
        for row in rows if isinstance(rows, list) else rows.get("points", []):
            if not {"N", "D", "loss"} <= set(row):
                raise ValueError(f"{path}: every point needs N, D and loss, got {sorted(row)}")
            points.append({"N": float(row["N"]), "D": float(row["D"]), "loss": float(row["loss"]), "source": path})
    return points


def report_fit(law: ScalingLaw, n_points: int) -> str:
    a, b = law.exponents
    reference_a, reference_b = LAWS["chinchilla"].exponents
    return (f"fitted on {n_points} runs: {describe_law(law)}\n"
            f"optimal allocation: a = beta/(alpha+beta) = {a:.3f}, b = alpha/(alpha+beta) = {b:.3f} "
            f"(Chinchilla: a = {reference_a:.3f} from its Approach 3 constants, 0.46-0.50 over its three approaches)")


# ----------------------------------------------------------------------------------------------------

def fit_flags() -> argparse.ArgumentParser:
    """The fit's settings, shared with experiments/scaling_sweep.py."""
    fitting = argparse.ArgumentParser(add_help=False)
    fitting.add_argument("--delta", type=float, default=1e-3, help="Huber delta on log-loss (paper: 1e-3)")
    fitting.add_argument("--starts", type=int, default=16, help="L-BFGS runs from the best grid points")
    return fitting


def main():
    try:
        run_command()
    except (FileNotFoundError, ValueError, RuntimeError) as error:  # one clear message, no traceback
        raise SystemExit(f"error: {error}")


def run_command():
    parser = argparse.ArgumentParser(description="Chinchilla planning and scaling-law fits for cramlm")
    commands = parser.add_subparsers(dest="command", required=True)

    plan_parser = commands.add_parser("plan", help="recommend a model shape and token count for a time budget")
    budget = plan_parser.add_mutually_exclusive_group(required=True)
    budget.add_argument("--hours", type=float, help="training budget in hours (on this machine, measured)")
    budget.add_argument("--compute", type=float, help="a budget in FLOPs (C = 6ND) for the law alone, no shapes or "
                                                      "machine: its compute-optimal N and D (with --inference-tokens, "
                                                      "beside the inference-aware choice)")
    plan_parser.add_argument("--flops-per-second", type=float, help="achieved FLOP/s; measured when omitted")
    plan_parser.add_argument("--law", default="auto", help="auto (ours where the plan lies inside the runs it was "
                             "fitted on, else chinchilla), chinchilla, epoch, rule20, ours (our CPU sweep's fit, "
                             "experiments/scaling_law.json) or a fitted law's JSON")
    plan_parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cuda or cpu")
    plan_parser.add_argument("--seq-len", type=int, default=TrainConfig.seq_len, help="training sequence length")
    plan_parser.add_argument("--micro-batch-size", type=int, default=AUTO_MICRO_BATCH,
                             help="rows per forward pass (for the memory check)")
    plan_parser.add_argument("--bench-seconds", type=float, default=3.0, help="length of each shape's measurement")
    plan_parser.add_argument("--vocab-size", type=int, default=0,
                             help="the run's tokenizer size (train.py --vocab-size: 16384 for the CPU recipe's BPE); "
                                  "0: GPT-2's. The shapes' N counts this many embedding rows")
    plan_parser.add_argument("--inference-tokens", type=float, default=0.0,
                             help="tokens the model will serve: also size it to minimise training + inference FLOPs "
                                  "for the compute-optimal plan's predicted loss (Sardana & Frankle 2023)")
    plan_parser.add_argument("--target-loss", type=float, help="with --inference-tokens: this loss instead")

    fit_parser = commands.add_parser("fit", parents=[fit_flags()], help="fit L(N, D) to finished runs")
    fit_parser.add_argument("logs", nargs="+", help="train.py JSONL logs, or .json/.csv files of N, D, loss")
    fit_parser.add_argument("--out", help="write the fitted law here as JSON (usable as plan --law)")

    args = parser.parse_args()

    if args.command == "plan" and args.compute:
        if args.law == "auto":
            args.law = "ours" if law_covers("ours", args.compute) else "chinchilla"
            low, high = law_range("ours")
            print(f"law: auto chose {args.law} (ours was fitted on runs of {low:.3g}-{high:.3g} FLOPs)")
        if not isinstance(resolve_law(args.law), ScalingLaw):
            raise ValueError(f"--compute needs a law with a loss surface (chinchilla, epoch or a fitted law's JSON), "
                             f"not {args.law}")
        print(inference_table(resolve_law(args.law), args.compute, args.inference_tokens, args.target_loss))
        return
    if args.command == "plan":
        base = ModelConfig(vocab_size=embedding_rows(args.vocab_size)) if args.vocab_size else None
        result = plan_for_machine(args.hours * 3600, args.device, args.law, args.flops_per_second, args.seq_len,
                                  args.micro_batch_size, args.bench_seconds, base)
        print(result.explanation)
        if args.inference_tokens or args.target_loss:
            print(inference_table(resolve_law(result.law), 6 * result.params * result.tokens, args.inference_tokens,
                                  args.target_loss))
        return
    points = read_points(args.logs)
    law = fit_law([p["N"] for p in points], [p["D"] for p in points], [p["loss"] for p in points],
                  args.delta, args.starts)
    print(report_fit(law, len(points)))
    if args.out:
        computes = [6 * p["N"] * p["D"] for p in points]
        write_json(args.out, {**asdict(law), "compute_range": [min(computes), max(computes)], "points": len(points)})
        print(f"wrote {args.out}")


def requested_model_config(config: TrainConfig, device, rank: int, world_size: int, vocab_size: int,
                           init_checkpoint: dict | None = None) -> ModelConfig:
    """The model train.py's flags ask for: the --init-from checkpoint's (loaded by the caller), a preset, or, with
    --preset auto, the compute-optimal size for the wall-clock budget on this machine (plan_for_machine)."""
    if init_checkpoint is not None:
        model_config = model_config_from_dict(init_checkpoint["model_config"])
        if model_config.max_seq_len < config.seq_len:
            raise ValueError(f"{config.init_from} covers {model_config.max_seq_len} positions < --seq-len {config.seq_len}")
        return model_config
    overrides = {"max_seq_len": config.seq_len, "vocab_size": vocab_size, **config.model_overrides}
    if config.preset != "auto":
        return preset_config(config.preset, **overrides)
    if not config.budget_seconds:
        raise ValueError("--preset auto sizes the model for a wall-clock budget: give --hours/--minutes/--seconds")
    planned = [None]
    if rank == 0:  # one process measures and plans; the others take its answer
        plan = plan_for_machine(config.budget_seconds, str(device), seq_len=config.seq_len,
                                micro_batch_size=AUTO_MICRO_BATCH if config.micro_batch_size == "auto" else config.micro_batch_size,
                                base=ModelConfig(**overrides), precision=config.precision)
        print(plan.explanation)
        planned = [plan.model_config]
    if world_size > 1:
        dist.broadcast_object_list(planned, src=0)
    return ModelConfig(**{**asdict(planned[0]), **overrides})


if __name__ == "__main__":
    main()

