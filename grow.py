"""
Grow a trained small model into a wider and deeper one, then keep pretraining the big one.

    python grow.py --from runs/mini/ckpt.pt --to small --method ligo --data-dir data/cache/wiki00 --out grown.pt
    python train.py --init-from grown.pt --data-dir data/cache/wiki00 --hours 1   # ordinary pretraining goes on
    python grow.py bench --data-dir data/cache/wiki00 --out-dir runs/grow_bench  # loss vs FLOPs of every method

LiGO (Wang et al. 2023, "Learning to Grow Pretrained Models for Efficient Transformer Training", Sec. 3)
writes every weight of the big model as a linear function of the small model's weights, M = L_depth · R_width:
  - width (R_width): a matrix W (out x in) of the small model becomes B_out · W · B_inᵀ (the paper's
    Kronecker factorisation, (B_in ⊗ B_out) vec(W), never built), with (D_big x D_small) expansions tied per
    *dimension*: one pair for the residual stream, shared by the embeddings, every norm and every block's
    input and output, and one pair per small layer for its attention width (its heads) and for its FFN inner
    width (both halves of the gated FFN use the same one, so value unit i stays paired with gate unit i).
  - depth (L_depth): big layer l = Σ_j w[l, j] · (small layer j at the big width), with its own
    mixing matrix w (L_big x L_small) per module kind: q, k, v, o, fc_in, fc_out, norm1, norm2.
The baselines are this same operator with fixed, hand-chosen matrices:
  - net2net (Chen et al. 2016): B_out copies old unit (i mod D_small) into new unit i; B_in is the same copy
    divided by the number of copies, so a layer that reads duplicated inputs computes the same sums. New
    layers are identity blocks (Net2DeeperNet): copies whose residual writers o and fc_out are zero.
  - stack (StackBERT, Gong et al. 2019): the same width copy; big layer l is small layer (l mod L_small).
  - ligo: starts as stack, plus noise that breaks the symmetry between copies, learns B and w for a few
    steps on the MLM loss with the small weights frozen, then materialises plain weights.
  - scratch: a freshly initialised big model.
Net2net is function-preserving (tested) for the FFN inner width and the number of heads (same head dim) at
any size, and for the residual width at integer multiples: LayerNorm of a vector whose units are all copied
k times is the copy of its LayerNorm (same mean, same variance). The one part that is not an expansion is the
sinusoidal position table, a function of n_embd: we copy the learned pos_scale, which keeps the positions'
share of the embedding (token rows and sinusoids both grow by sqrt(k) in norm). Learned tables grow exactly.
"""
import argparse
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field, replace

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call
from torch.utils.flop_counter import FlopCounterMode
from tqdm import tqdm

from data.loader import MLMBatches, TokenFile, data_tokenizer
from model import CramBERT, ModelConfig, flops_per_token, preset_config
from train import (TrainConfig, autocast, load_checkpoint, model_checkpoint, model_from_checkpoint, resolve_device,
                   save_checkpoint, tokenizer_from_checkpoint, train)

METHODS = ("ligo", "stack", "net2net", "scratch")
SIZES = ("n_layer", "n_head", "n_embd", "intermediate_size")  # what growth changes; every other field is the recipe
DEPTH_KINDS = ("q", "k", "v", "o", "fc_in", "fc_out", "norm1", "norm2")  # one depth-mixing matrix each


def grown_config(small: ModelConfig, target: ModelConfig) -> ModelConfig:
    """The small model's recipe at the target's sizes; a clear error for growth this file cannot do."""
    big = replace(small, **{name: getattr(target, name) for name in SIZES})
    for name in SIZES:
        if getattr(big, name) < getattr(small, name):
            raise ValueError(f"cannot shrink: target {name}={getattr(big, name)} < source's {getattr(small, name)}")
    if big.n_embd // big.n_head != small.n_embd // small.n_head:
        raise ValueError(f"the head dim must stay {small.n_embd // small.n_head} (grow the number of heads instead): "
                         f"target n_embd={big.n_embd} / n_head={big.n_head}")
    return big


def ffn_hidden(config: ModelConfig) -> int:
    """Width that fc_out reads: half of intermediate_size for the gated FFN (value * GELU(gate))."""
    return config.intermediate_size // 2 if config.ffn == "glu" else config.intermediate_size


def duplication(big: int, small: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Net2Net's widening as two (big x small) matrices. `copy`: new unit i is old unit (i mod small), so the
    old units keep their place and the new ones copy them in turn (with equal head dims: whole heads).
    `split`: copy divided by the number of copies of each old unit, so splitᵀ · copy = I."""
    copy = F.one_hot(torch.arange(big) % small, small).float()
    return copy, copy / copy.sum(dim=0)


def depth_mixing(big_layers: int, small_layers: int, how: str) -> dict[str, torch.Tensor]:
    """Initial (L_big x L_small) mixing matrices with one-hot rows: every big layer copies one small layer.
    "stack": small layer (l mod L_small), the small stack repeated on top of itself (StackBERT).
    "identity": small layer floor(l * L_small / L_big), in order; the second copy of a layer gets zero o and
    fc_out, so with pre-LN it adds nothing to the residual stream: an identity block (Net2DeeperNet)."""
    layers = torch.arange(big_layers)
    source = layers % small_layers if how == "stack" else layers * small_layers // big_layers
    mixing = {kind: F.one_hot(source, small_layers).float() for kind in DEPTH_KINDS}
    if how == "identity":
        repeated = torch.cat([torch.tensor([False]), source[1:] == source[:-1]])
        for kind in ("o", "fc_out"):
            mixing[kind][repeated] = 0.0
    return mixing


def expand(out_expansion: torch.Tensor, tensor: torch.Tensor, in_expansion: torch.Tensor | None = None):
    """B_out · W · B_inᵀ for a matrix W (out x in); B_out · v for a vector (a bias or a norm's weight)."""
    grown = out_expansion @ tensor
    return grown if in_expansion is None else grown @ in_expansion.T


class GrowthOperator(nn.Module):
    """M = L_depth · R_width: the big model's state dict as a differentiable function of the frozen small one.
    Its parameters are the expansions B and the mixings w; `depth` and `noise` choose the baseline it starts as."""

    def __init__(self, small: CramBERT, big_config: ModelConfig, depth: str = "stack", noise: float = 0.0,
                 seed: int = 0, device="cpu"):
        super().__init__()
        self.small_config, self.big_config = small.config, big_config
        # Plain detached tensors: the small model is data to the operator, never trained by it.
        self.small = {name: tensor.detach().to(device) for name, tensor in small.state_dict().items()}
        generator = torch.Generator().manual_seed(seed)

        def expansion_pair(big: int, small_dim: int) -> list[nn.Parameter]:
            # noise / sqrt(D_small) per entry moves every grown weight by about `noise` times its own scale
            return [nn.Parameter((matrix + torch.randn(matrix.shape, generator=generator) * noise
                                  / math.sqrt(small_dim)).to(device)) for matrix in duplication(big, small_dim)]

        self.residual_out, self.residual_in = expansion_pair(big_config.n_embd, small.config.n_embd)
        # One pair per small layer: the width grows before the depth mixing. Attention width = heads x head dim.
        attn = [expansion_pair(big_config.n_embd, small.config.n_embd) for _ in range(small.config.n_layer)]
        ffn = [expansion_pair(ffn_hidden(big_config), ffn_hidden(small.config)) for _ in range(small.config.n_layer)]
        self.attn_out, self.attn_in = nn.ParameterList(p[0] for p in attn), nn.ParameterList(p[1] for p in attn)
        self.ffn_out, self.ffn_in = nn.ParameterList(p[0] for p in ffn), nn.ParameterList(p[1] for p in ffn)
        self.depth = nn.ParameterDict({kind: nn.Parameter(mixing.to(device)) for kind, mixing in
                                       depth_mixing(big_config.n_layer, small.config.n_layer, depth).items()})

    def widen_block(self, j: int) -> dict[str, dict[str, torch.Tensor]]:
        """Small block j at the big width as {kind: {"weight": ..., "bias": ...}}, q, k, v split apart."""
        small = {name.removeprefix(f"encoder.blocks.{j}."): tensor for name, tensor in self.small.items()
                 if name.startswith(f"encoder.blocks.{j}.")}
        res_out, res_in = self.residual_out, self.residual_in

        def linear(name, out_expansion, in_expansion):  # a bias lives on the output side only
            grown = {"weight": expand(out_expansion, small[name + ".weight"], in_expansion)}
            if name + ".bias" in small:
                grown["bias"] = expand(out_expansion, small[name + ".bias"])
            return grown

        # Stacked row blocks (q|k|v, value|gate) get the same expansion each: a block-diagonal B_out.
        halves = 2 if self.small_config.ffn == "glu" else 1
        qkv = linear("attn.qkv", torch.block_diag(*[self.attn_out[j]] * 3), res_in)
        pieces = {kind: {part: tensor.chunk(3)[i] for part, tensor in qkv.items()} for i, kind in enumerate("qkv")}
        pieces["o"] = linear("attn.proj", res_out, self.attn_in[j])
        pieces["fc_in"] = linear("ffn.fc_in", torch.block_diag(*[self.ffn_out[j]] * halves), res_in)
        pieces["fc_out"] = linear("ffn.fc_out", res_out, self.ffn_in[j])
        for norm in ("norm1", "norm2"):
            pieces[norm] = {part: expand(res_out, small[f"{norm}.{part}"]) for part in ("weight", "bias")}
        return pieces

    def materialise(self) -> dict[str, torch.Tensor]:
        """The big model's full state dict (keys exactly as CramBERT(big_config).state_dict())."""
        small, config = self.small, self.small_config
        res_out, res_in = self.residual_out, self.residual_in
        big = {}
        # Embeddings and the final norm: width only. A token's row is a residual-stream vector, written out.
        big["encoder.embedding.tok.weight"] = small["encoder.embedding.tok.weight"] @ res_out.T
        if config.pos_emb == "learned":
            big["encoder.embedding.pos.weight"] = small["encoder.embedding.pos.weight"] @ res_out.T
        else:  # a scalar: the sinusoid table itself is rebuilt at the new width (see the module docstring)
            big["encoder.embedding.pos_scale"] = small["encoder.embedding.pos_scale"].clone()
        for norm in ("encoder.embedding.norm", "encoder.final_norm"):  # post-LN has no final norm
            if norm + ".weight" in small:
                for part in ("weight", "bias"):
                    big[f"{norm}.{part}"] = expand(res_out, small[f"{norm}.{part}"])

        # Blocks: widen every small layer, then mix them over depth, kind by kind.
        widened = [self.widen_block(j) for j in range(config.n_layer)]
        mixed = [{kind: {} for kind in DEPTH_KINDS} for _ in range(self.big_config.n_layer)]
        for kind in DEPTH_KINDS:
            for part in widened[0][kind]:
                stacked = torch.stack([layer[kind][part] for layer in widened])  # (L_small, ...)
                per_big_layer = torch.tensordot(self.depth[kind], stacked, dims=1)  # (L_big, ...): Σ_j w[l, j] layer j
                for layer, tensor in zip(mixed, per_big_layer):
                    layer[kind][part] = tensor
        for l, layer in enumerate(mixed):
            prefix = f"encoder.blocks.{l}."
            for part in layer["q"]:
                big[prefix + "attn.qkv." + part] = torch.cat([layer[kind][part] for kind in "qkv"])
            for kind, module in (("o", "attn.proj"), ("fc_in", "ffn.fc_in"), ("fc_out", "ffn.fc_out"),
                                 ("norm1", "norm1"), ("norm2", "norm2")):
                for part, tensor in layer[kind].items():
                    big[f"{prefix}{module}.{part}"] = tensor

        # MLM head. The decoder reads the residual stream; tied, its matrix is the token embedding, which was
        # expanded on the *output* side, so the input-side division (B_in) moves into head_norm instead.
        big["head_dense.weight"] = expand(res_out, small["head_dense.weight"], res_in)
        if "head_dense.bias" in small:
            big["head_dense.bias"] = expand(res_out, small["head_dense.bias"])
        norm_expansion = res_in if config.tie_embeddings else res_out
        for part in ("weight", "bias"):
            big[f"head_norm.{part}"] = expand(norm_expansion, small[f"head_norm.{part}"])
        big["decoder.weight"] = (big["encoder.embedding.tok.weight"] if config.tie_embeddings
                                 else small["decoder.weight"] @ res_in.T)
        return big


def train_operator(operator: GrowthOperator, batches, steps: int, lr: float, device="cpu",
                   progress_bar: bool = True) -> list[float]:
    """LiGO: fit B and w to the MLM loss of the model they produce, for a few steps. functional_call
    runs the big model with the materialised tensors in place of its parameters, so the gradient flows
    through them into the operator; the small weights are constants. Returns the loss of every step."""
    device = torch.device(device)
    shell = CramBERT(operator.big_config).to(device)  # only its structure is used
    next_batch = batches if callable(batches) else (lambda step, iterator=iter(batches): next(iterator))
    # Adam moves every entry of a matrix by about lr, and a grown weight sums fan-in (= shape[1]) of them, so
    # each matrix's step is lr / fan-in (as muP scales hidden matrices). No decay: it would shrink the copies.
    optimizer = torch.optim.AdamW([{"params": [p], "lr": lr / p.shape[1]} for p in operator.parameters()],
                                  weight_decay=0.0)
    losses = []
    for step in tqdm(range(steps), desc="ligo operator", disable=not progress_bar):
        input_ids, labels = next_batch(step)
        weights = operator.materialise()  # in full precision, outside autocast
        with autocast(device):
            _, loss = functional_call(shell, weights, (input_ids.to(device),), {"labels": labels.to(device)})
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses


def grow_model(small: CramBERT, target: ModelConfig, method: str, batches=None, ligo_steps: int = 100,
               ligo_lr: float = 0.03, device="cpu", noise: float = 0.01, seed: int = 0,
               progress_bar: bool = True) -> CramBERT:
    """A plain CramBERT with the small model's recipe at the target's sizes, grown by `method` (see METHODS).
    batches: batches(step) -> (input_ids, labels), or an iterator of them; only ligo trains on them."""
    if method not in METHODS:
        raise ValueError(f"unknown growth method {method!r}; choose one of {', '.join(METHODS)}")
    big_config = grown_config(small.config, target)
    if method == "scratch":
        torch.manual_seed(seed)
        return CramBERT(big_config).to(device)
    if method == "ligo" and batches is None:
        raise ValueError("ligo trains its growth operator on MLM batches: pass batches")
    operator = GrowthOperator(small, big_config, depth="identity" if method == "net2net" else "stack",
                              noise=noise, seed=seed, device=device)
    if method == "ligo":
        train_operator(operator, batches, ligo_steps, ligo_lr, device, progress_bar)
    model = CramBERT(big_config).to(device)
    with torch.no_grad():
        model.load_state_dict(operator.materialise())
    return model


def growth_flops(small: ModelConfig, target: ModelConfig, method: str, ligo_steps: int, tokens_per_step: int,
                 seq_len: int) -> float:
    """Training FLOPs the growth itself costs: none for the fixed operators. A LiGO step runs the big model
    forward and backward on its batch (model.flops_per_token) and materialises the weights forward and
    backward (3x the forward matmuls, counted by torch's FlopCounterMode on shapes-only "meta" tensors)."""
    if method != "ligo":
        return 0.0
    with torch.device("meta"):
        operator = GrowthOperator(CramBERT(small), grown_config(small, target), device="meta")
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        operator.materialise()
    per_step = tokens_per_step * flops_per_token(operator.big_config, seq_len) + 3 * counter.get_total_flops()
    return ligo_steps * per_step


def mlm_batches(data_dir: str, seq_len: int, mask_rate: float, rows: int, seed: int):
    """batches(step) -> (input_ids, labels): consecutive slices of one shuffled pass over train.bin."""
    data = MLMBatches(TokenFile(os.path.join(data_dir, "train.bin"), data_tokenizer(data_dir)), seq_len, mask_rate, seed=seed)
    return lambda step: data.batch_at(0, step * rows, rows)


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
    ligo_steps: int = 5  # operator steps (the paper's 100 would outspend this whole budget)
    ligo_rows: int = 8  # rows per operator step
    ligo_lr: float = 0.03  # operator step size (train_operator divides it by each matrix's fan-in)
    noise: float = 0.01  # symmetry-breaking noise of the width copies (relative to the weights)
    seq_len: int = 64  # tokens per row
    batch_tokens: int = 512  # tokens per optimizer step at full batch (train.py ramps up to it)
    micro_batch_size: int = 8  # rows per forward pass
    lr: float = 3e-3  # peak learning rate of every run (one-cycle over the run's own budget)
    peak_at: float = 0.1  # budget fraction of the peak: short runs cannot afford cramming's 0.75 warmup
    eval_rows: int = 256  # rows of val.bin in the fixed held-out set (fewer: savings drown in noise)
    eval_interval: float = 0.125  # budget fraction between evaluations
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


def eval_curve(log_path: str, flops_offset: float, seconds_offset: float) -> list[dict]:
    with open(log_path) as f:
        records = [json.loads(line) for line in f]
    return [{"flops": r["flops"] + flops_offset, "seconds": r["elapsed"] + seconds_offset, "val_loss": r["val_loss"]}
            for r in records if r["kind"] == "eval"]


def bench(config: BenchConfig) -> dict:
    """Train the big model from scratch, the small one on small_fraction of that budget, grow it with each
    method and train on to the same total. The growth curves count the small model's and the operator's FLOPs
    (and seconds). Saved compute = 1 - (FLOPs to reach scratch's final loss) / (scratch's FLOPs)."""
    def run(name: str, flops: float, **settings) -> dict:
        summary = train(TrainConfig(
            data_dir=config.data_dir, out_dir=os.path.join(config.out_dir, name), budget_seconds=0, max_flops=flops,
            seq_len=config.seq_len, batch_tokens=config.batch_tokens, micro_batch_size=config.micro_batch_size,
            lr=config.lr, peak_at=config.peak_at, eval_rows=config.eval_rows, eval_interval=config.eval_interval,
            log_interval=5, checkpoint_minutes=1e9, progress_bar=False, **settings))
        if summary["interrupted"]:  # train.py caught Ctrl-C / SIGTERM: stop here, not at the next run
            raise KeyboardInterrupt
        return summary

    if not set(config.methods) <= {"stack", "net2net", "ligo"}:
        raise ValueError(f"bench compares growth methods stack, net2net and ligo with scratch, not {config.methods}")
    if os.path.exists(config.out_dir) and os.listdir(config.out_dir):
        raise ValueError(f"{config.out_dir} is not empty: train.py appends to logs, so pick a fresh --out-dir")
    big_target = preset_config(config.big, **config.big_overrides)
    print(f"scratch: {config.big} {config.big_overrides} for {config.big_flops:.3g} FLOPs")
    scratch = run("scratch", config.big_flops, preset=config.big, model_overrides=config.big_overrides,
                  seed=config.seed)
    curves = {"scratch": eval_curve(scratch["log"], 0.0, 0.0)}
    print(f"small: {config.small} {config.small_overrides} for {config.small_fraction * config.big_flops:.3g} FLOPs")
    small_run = run("small", config.small_fraction * config.big_flops, preset=config.small,
                    model_overrides=config.small_overrides, seed=config.seed)
    curves["small"] = eval_curve(small_run["log"], 0.0, 0.0)
    small = model_from_checkpoint(load_checkpoint(small_run["checkpoint"]))
    for method in config.methods:
        start = time.perf_counter()
        batches = mlm_batches(config.data_dir, config.seq_len, small.config.mlm_fraction, config.ligo_rows,
                              seed=config.seed + 2)
        grown = grow_model(small, big_target, method, batches, config.ligo_steps, config.ligo_lr,
                           noise=config.noise, seed=config.seed, progress_bar=False)
        seconds = small_run["elapsed_seconds"] + time.perf_counter() - start
        spent = small_run["flops"] + growth_flops(small.config, big_target, method, config.ligo_steps,
                                                  config.ligo_rows * config.seq_len, config.seq_len)
        path = os.path.join(config.out_dir, method, "grown.pt")
        save_checkpoint(path, model_checkpoint(grown, data_tokenizer(config.data_dir), growth={"method": method}))
        if spent >= config.big_flops:
            raise ValueError(f"{method}: the small model and the operator already spend {spent:.3g} FLOPs "
                             f">= big_flops; lower --small-fraction or --ligo-steps")
        print(f"{method}: grown after {spent:.3g} FLOPs; training on for {config.big_flops - spent:.3g}")
        # Another seed, so another row order and masking: with the small run's seed the grown model would
        # relearn the very examples the small one saw, which costs held-out loss instead of lowering it.
        summary = run(method, config.big_flops - spent, init_from=path, seed=config.seed + 1)
        curves[method] = eval_curve(summary["log"], spent, seconds)

    target = curves["scratch"][-1]["val_loss"]
    total = {"flops": curves["scratch"][-1]["flops"], "seconds": curves["scratch"][-1]["seconds"]}
    results = {"config": asdict(config), "scratch_final_loss": target, "curves": curves, "methods": {}}
    print(f"\nscratch final held-out loss {target:.4f} after {total['flops']:.3g} FLOPs, {total['seconds']:.0f} s")
    print(f"{'method':>8} | {'grown loss':>10} | {'final loss':>10} | {'FLOPs to reach scratch':>22} | "
          f"{'FLOPs saved':>11} | {'time saved':>10}")

    def show(value, fmt, width):
        return f"{'not reached' if value is None else format(value, fmt):>{width}}"
    for method in config.methods:
        row = {"final_loss": curves[method][-1]["val_loss"], "grown_loss": curves[method][0]["val_loss"]}
        for axis in ("flops", "seconds"):
            reached = flops_to_reach([(p[axis], p["val_loss"]) for p in curves[method]], target)
            row[f"{axis}_to_reach"] = reached
            row[f"{axis}_saved"] = None if reached is None else 1 - reached / total[axis]
        results["methods"][method] = row
        print(f"{method:>8} | {row['grown_loss']:10.4f} | {row['final_loss']:10.4f} | "
              f"{show(row['flops_to_reach'], '.3g', 22)} | {show(row['flops_saved'], '.1%', 11)} | "
              f"{show(row['seconds_saved'], '.1%', 10)}")
    path = os.path.join(config.out_dir, "results.json")
    with open(path + ".tmp", "w") as f:  # then renamed: a crash never leaves half a file
        json.dump(results, f, indent=1)
    os.replace(path + ".tmp", path)
    plot(curves, os.path.join(config.out_dir, "curves.png"))
    return results


def plot(curves: dict, path: str):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (the curves are in results.json)")
        return
    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name, curve in curves.items():
        for ax, axis in zip(axes, ("flops", "seconds")):
            ax.plot([p[axis] for p in curve], [p["val_loss"] for p in curve], marker=".", label=name)
            ax.set_xlabel("training FLOPs" if axis == "flops" else "training seconds")
    axes[0].set_ylabel("held-out MLM loss")
    axes[0].legend()
    figure.tight_layout()
    figure.savefig(path + ".tmp.png")
    os.replace(path + ".tmp.png", path)
    print(f"plot: {path}")


# ----------------------------------------------------------------------------------------------------
# Command line

def grow_command(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--from", dest="source", required=True, help="checkpoint of the trained small model")
    parser.add_argument("--to", default="base", help="target preset (its sizes; the recipe comes from --from)")
    for name in SIZES:
        parser.add_argument("--" + name.replace("_", "-"), type=int, help=f"override the target's {name}")
    parser.add_argument("--method", choices=METHODS, default="ligo", help="how to grow")
    parser.add_argument("--out", required=True, help="where to write the grown checkpoint")
    parser.add_argument("--data-dir", default="data/cache/default", help="token files for LiGO's operator training")
    parser.add_argument("--ligo-steps", type=int, default=100, help="operator training steps")
    parser.add_argument("--ligo-lr", type=float, default=0.03, help="operator step size (AdamW lr x fan-in)")
    parser.add_argument("--batch-size", type=int, default=32, help="rows per operator step")
    parser.add_argument("--seq-len", type=int, default=0, help="tokens per row (default: the source's max_seq_len)")
    parser.add_argument("--noise", type=float, default=0.01, help="symmetry-breaking noise on the width copies")
    parser.add_argument("--seed", type=int, default=0, help="seed of the noise, the data order and the masking")
    parser.add_argument("--device", default="auto", help="auto, cuda, mps or cpu")
    args = parser.parse_args(argv)
    source = load_checkpoint(args.source)
    small = model_from_checkpoint(source)
    target = preset_config(args.to, **{name: getattr(args, name) for name in SIZES if getattr(args, name)})
    batches = None
    if args.method == "ligo":
        batches = mlm_batches(args.data_dir, args.seq_len or small.config.max_seq_len, small.config.mlm_fraction,
                              args.batch_size, args.seed)
    grown = grow_model(small, target, args.method, batches, args.ligo_steps, args.ligo_lr,
                       resolve_device(args.device), args.noise, args.seed)
    save_checkpoint(args.out, model_checkpoint(grown.cpu(), tokenizer_from_checkpoint(source),
                                               growth={**vars(args), "from_config": asdict(small.config)}))
    print(f"{args.method}: {small.num_params() / 1e6:.1f}M -> {grown.num_params() / 1e6:.1f}M parameters, "
          f"written to {args.out}; continue with: python train.py --init-from {args.out} ...")


def bench_command(argv):
    defaults = BenchConfig()
    parser = argparse.ArgumentParser(prog="grow.py bench", description=bench.__doc__)
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
    parser.add_argument("--ligo-steps", type=int, default=defaults.ligo_steps, help="operator steps")
    parser.add_argument("--ligo-rows", type=int, default=defaults.ligo_rows, help="rows per operator step")
    parser.add_argument("--ligo-lr", type=float, default=defaults.ligo_lr, help="operator step size")
    parser.add_argument("--noise", type=float, default=defaults.noise, help="symmetry-breaking noise")
    parser.add_argument("--seq-len", type=int, default=defaults.seq_len, help="tokens per row")
    parser.add_argument("--batch-tokens", type=int, default=defaults.batch_tokens, help="tokens per step at full batch")
    parser.add_argument("--micro-batch-size", type=int, default=defaults.micro_batch_size, help="rows per forward pass")
    parser.add_argument("--lr", type=float, default=defaults.lr, help="peak learning rate of every run")
    parser.add_argument("--peak-at", type=float, default=defaults.peak_at, help="budget fraction of the lr peak")
    parser.add_argument("--eval-rows", type=int, default=defaults.eval_rows, help="held-out rows")
    parser.add_argument("--eval-interval", type=float, default=defaults.eval_interval, help="budget between evals")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="seed of every run")
    bench(BenchConfig(**vars(parser.parse_args(argv))))  # every flag is a BenchConfig field


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    try:
        bench_command(argv[1:]) if argv[:1] == ["bench"] else grow_command(argv)
    except (FileNotFoundError, ValueError) as error:  # bad input: one clear message, no traceback
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    main()
