"""
Grow a trained small model into a wider and deeper one, then keep pretraining the big one.

    python grow.py --from runs/mini/ckpt.pt --to small --method ligo --data-dir data/cache/wiki00 --out grown.pt
    python train.py --init-from grown.pt --data-dir data/cache/wiki00 --hours 1   # ordinary pretraining goes on
    python -m experiments.grow_bench --data-dir data/cache/wiki00 --out-dir runs/grow_bench  # loss vs FLOPs of every method

LiGO (Wang et al. 2023, "Learning to Grow Pretrained Models for Efficient Transformer Training", Sec. 3)
writes every weight of the big model as a linear function of the small model's weights, M = L_depth · R_width:
  - width (R_width): a matrix W (out x in) of the small model becomes B_out · W · B_inᵀ (the paper's
    Kronecker factorisation, (B_in ⊗ B_out) vec(W), never built), with (D_big x D_small) expansions tied per
    *dimension*: one pair for the residual stream, shared by the embeddings, every norm and every block's
    input and output, and per small layer: an output expansion each for Q, K and V (the paper learns them
    separately; `shared_qkv` ties the three into one, this file's earlier choice), the input expansion of the
    attention output o (paired with V's), and one pair for the FFN inner width (both halves of the gated FFN
    use the same one, so value unit i stays paired with gate unit i).
  - depth (L_depth): big layer l = Σ_j w[l, j] · (small layer j at the big width), with its own
    mixing matrix w (L_big x L_small) per module kind: q, k, v, o, fc_in, fc_out, norm1, norm2.
The baselines are this same operator with fixed, hand-chosen matrices:
  - net2net (Chen et al. 2016): B_out copies old unit (i mod D_small) into new unit i; B_in splits each old
    unit's outgoing weight among its copies (random shares summing to 1, see `duplication`), so a layer that
    reads duplicated inputs computes the same sums. New layers are identity blocks (Net2DeeperNet): copies
    whose residual writers o and fc_out are zero.
  - stack (StackBERT, Gong et al. 2019): the same width copy; big layer l is small layer (l mod L_small).
  - ligo: starts as stack, plus noise on the expansions (only ligo gets it: the baselines stay exact),
    learns B and w for a few steps on the MLM loss with the small weights frozen, then materialises plain weights.
  - scratch: a freshly initialised big model.
Net2net is function-preserving (tested) for the FFN inner width and the number of heads (same head dim) at
any size, and for the residual width at integer multiples: LayerNorm of a vector whose units are all copied
k times is the copy of its LayerNorm (same mean, same variance). The one part that is not an expansion is the
sinusoidal position table, a function of n_embd: we copy the learned pos_scale, which keeps the positions'
share of the embedding (token rows and sinusoids both grow by sqrt(k) in norm). Learned tables grow exactly.
"""
import argparse
import math
import sys
from dataclasses import asdict, replace

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call
from torch.utils.flop_counter import FlopCounterMode
from tqdm import tqdm

from data.loader import data_tokenizer, training_batches
from model import (MASK_RATE, SHAPE_FIELDS, CramBERT, ModelConfig, count_kept, flops_per_token, make_optimizer,
                   preset_config)
from policy import charged_flops_per_token
from run.checkpoint import (check_tokenizer, load_checkpoint, model_checkpoint, model_from_checkpoint, save_checkpoint,
                            tokenizer_from_checkpoint)
from run.config import max_mask_rate
from run.device import autocast, gradient_scaler, resolve_device, training_precision
from run.machine import fit_to_machine, wrap

METHODS = ("ligo", "stack", "net2net", "scratch")
DEPTH_KINDS = ("q", "k", "v", "o", "fc_in", "fc_out", "norm1", "norm2")  # one depth-mixing matrix each


def grown_config(small: ModelConfig, target: ModelConfig) -> ModelConfig:
    """The small model's recipe at the target's sizes; a clear error for growth this file cannot do."""
    big = replace(small, **{name: getattr(target, name) for name in SHAPE_FIELDS})
    for name in SHAPE_FIELDS:
        if getattr(big, name) < getattr(small, name):
            raise ValueError(f"cannot shrink: target {name}={getattr(big, name)} < source's {getattr(small, name)}")
    if big.n_embd // big.n_head != small.n_embd // small.n_head:
        raise ValueError(f"the head dim must stay {small.n_embd // small.n_head} (grow the number of heads instead): "
                         f"target n_embd={big.n_embd} / n_head={big.n_head}")
    return big


def duplication(big: int, small: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Net2Net's widening as two (big x small) matrices. `copy`: new unit i is old unit (i mod small), so the
    old units keep their place and the new ones copy them in turn (with equal head dims: whole heads).
    `split`: each old unit's copies share its outgoing weight in shares that sum to 1, so splitᵀ · copy = I.
    Chen et al. 2016 share equally; with a generator the shares are random (0.5 to 1.5 before normalising):
    still exact, but the copies then get different gradients. With equal shares and no dropout, copies
    get identical gradients and stay copies for ever (measured: 0.0 apart after 30 AdamW steps with rotary or
    learned positions), so the extra width would never be used."""
    copy = F.one_hot(torch.arange(big) % small, small).float()
    shares = copy if generator is None else copy * (0.5 + torch.rand(big, 1, generator=generator))
    return copy, shares / shares.sum(dim=0)


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
                 seed: int = 0, device="cpu", shared_qkv: bool = False):
        super().__init__()
        self.small_config, self.big_config = small.config, big_config
        # Plain detached tensors: the small model is data to the operator, never trained by it.
        self.small = {name: tensor.detach().to(device) for name, tensor in small.state_dict().items()}
        generator = torch.Generator().manual_seed(seed)

        def expansion_pair(big: int, small_dim: int) -> list[nn.Parameter]:
            # noise / sqrt(D_small) per entry moves every grown weight by about `noise` times its own scale
            copy, split = duplication(big, small_dim, generator)  # uneven shares: exact, yet the copies can diverge
            return [nn.Parameter((matrix + torch.randn(matrix.shape, generator=generator) * noise
                                  / math.sqrt(small_dim)).to(device)) for matrix in (copy, split)]

        self.residual_out, self.residual_in = expansion_pair(big_config.n_embd, small.config.n_embd)
        # Per small layer: the width grows before the depth mixing. Attention width = heads x head dim. V's copy
        # pairs with o's split (o reads V's units); Q and K get copies of their own unless shared_qkv ties all
        # three to V's (one Parameter under three names: the optimizer sees it once).
        layers = range(small.config.n_layer)
        attn = [expansion_pair(big_config.n_embd, small.config.n_embd) for _ in layers]
        ffn = [expansion_pair(big_config.ffn_hidden, small.config.ffn_hidden) for _ in layers]
        self.v_out, self.attn_in = nn.ParameterList(p[0] for p in attn), nn.ParameterList(p[1] for p in attn)
        if shared_qkv:
            self.q_out = self.k_out = self.v_out
        else:
            self.q_out = nn.ParameterList(expansion_pair(big_config.n_embd, small.config.n_embd)[0] for _ in layers)
            self.k_out = nn.ParameterList(expansion_pair(big_config.n_embd, small.config.n_embd)[0] for _ in layers)
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

        # Stacked row blocks get a block-diagonal B_out: q|k|v their own expansions, value|gate the same one.
        halves = 2 if self.small_config.ffn == "glu" else 1
        qkv = linear("attn.qkv", torch.block_diag(self.q_out[j], self.k_out[j], self.v_out[j]), res_in)
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
        elif config.pos_emb == "sinusoidal":  # a scalar: the sinusoid table itself is rebuilt at the new width
            big["encoder.embedding.pos_scale"] = small["encoder.embedding.pos_scale"].clone()
        # rotary positions have no weights: they rotate each head's queries and keys, and heads keep their size
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
                   progress_bar: bool = True, mask_rate: float = MASK_RATE) -> list[float]:
    """LiGO: fit B and w to the MLM loss of the model they produce, for a few steps. functional_call
    runs the big model with the materialised tensors in place of its parameters, so the gradient flows
    through them into the operator; the small weights are constants. Returns the loss of every step.
    mask_rate: the most the batches mask (the sparse head's row count, model.count_kept)."""
    device = torch.device(device)
    shell = CramBERT(operator.big_config).to(device)  # only its structure is used
    next_batch = batches if callable(batches) else (lambda step, iterator=iter(batches): next(iterator))
    # Adam moves every entry of a matrix by about lr, and a grown weight sums fan-in (= shape[1]) of them, so
    # each matrix's step is lr / fan-in (as muP scales hidden matrices). No decay: it would shrink the copies.
    optimizer = torch.optim.AdamW([{"params": [p], "lr": lr / p.shape[1]} for p in operator.parameters()],
                                  weight_decay=0.0)
    scaler = gradient_scaler(device, training_precision(device))  # fp16 GPUs need loss scaling; else a pass-through
    losses = []
    for step in tqdm(range(steps), desc="ligo operator", disable=not progress_bar):
        input_ids, labels = next_batch(step)
        weights = operator.materialise()  # in full precision, outside autocast
        with autocast(device):
            _, loss = functional_call(shell, weights, (input_ids.to(device),),
                                      {"labels": labels.to(device), "n_kept": count_kept(*input_ids.shape, mask_rate)})
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses


def grow_model(small: CramBERT, target: ModelConfig, method: str, batches=None, ligo_steps: int = 100,
               ligo_lr: float = 0.03, device="cpu", noise: float = 0.01, seed: int = 0,
               progress_bar: bool = True, mask_rate: float = MASK_RATE, shared_qkv: bool = False) -> CramBERT:
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
    # Noise only for LiGO. StackBERT and Net2Net are the exact, function-preserving transforms (Chen et al. 2016
    # offer Net2WiderNet's noise as an option to break symmetry, at the price of preserving the function only
    # approximately). LiGO needs it: with exact copies, the operator entries that produce two copies of a unit get
    # identical gradients (the big model treats the copies alike), so training B could never pull them apart and
    # the extra width would stay a copy. Wang et al. 2023 (Sec. 3) learn B and w from a fixed start; the noise is
    # this file's choice to break that tie, small enough (~1% of each weight) to keep the start.
    # Exact baselines keep their copies tied in later training too unless something differs between them: with
    # no dropout, the sinusoidal position table (rebuilt at the new width, not copied) is what breaks the tie.
    operator = GrowthOperator(small, big_config, depth="identity" if method == "net2net" else "stack",
                              noise=noise if method == "ligo" else 0.0, seed=seed, device=device, shared_qkv=shared_qkv)
    if method == "ligo":
        train_operator(operator, batches, ligo_steps, ligo_lr, device, progress_bar, mask_rate)
    model = CramBERT(big_config).to(device)
    with torch.no_grad():
        model.load_state_dict(operator.materialise())
    return model


def growth_target(config, small: ModelConfig) -> ModelConfig:
    """The model train.py's --grow-to asks the small one to grow into (an error now, not mid-run, if it cannot)."""
    return grown_config(small, preset_config(config.grow_to))


def check_growth_flags(config):
    """--grow-to must be reachable from the --preset model: refused before the run touches anything, not at
    --grow-at of the budget (an --init-from or auto model is checked once it is known, launch.build_model)."""
    if not (config.grow_at and config.grow_to) or config.init_from or config.preset == "auto":
        return
    try:
        growth_target(config, preset_config(config.preset, **{"max_seq_len": config.seq_len, **config.model_overrides}))
    except ValueError as error:
        raise ValueError(f"--grow-to {config.grow_to} from --preset {config.preset}: {error}") from None


def grow_run(run, bar):
    """train.py's --grow-at: the run's small model swapped for the grown one, with a fresh optimizer and wrapper
    (the schedule carries on). LiGO trains its operator on the next training rows (and the run skips them), the
    same rows on every process, so all processes grow the same model; those steps are charged to the budget."""
    config, state, small, rows = run.config, run.state, run.raw_model, run.config.micro_batch_size

    def batches(step):
        input_ids, labels = run.train_data.batch_after(step * rows, rows)
        return input_ids.to(run.device), labels.to(run.device)

    run.raw_model = grow_model(small, preset_config(config.grow_to), config.grow_method, batches, config.ligo_steps,
                               device=run.device, seed=config.seed, progress_bar=False, mask_rate=max_mask_rate(config))
    if config.grow_method == "ligo":
        run.train_data.advance(config.ligo_steps * rows)
    if run.policy:
        run.policy.watch(run.raw_model)  # the hook moves to the grown model before it is compiled
    run.optimizer = make_optimizer(run.raw_model, config)
    if run.micro_batch_request == "auto":  # the small model's micro-batch may not fit the grown one: fit it again
        config, how = fit_to_machine(replace(config, micro_batch_size="auto"), run.raw_model, run.optimizer, run.device,
                                     run.world_size)
        run.config = config
    run.model = wrap(run.raw_model, config, run.world_size, run.device)
    state.flops += growth_flops(small.config, run.raw_model.config, config.grow_method, config.ligo_steps,
                                rows * config.seq_len, config.seq_len, max_mask_rate(config))
    run.flops_per_token = charged_flops_per_token(run.raw_model, config, run.policy.config if run.policy else None)
    state.grown = True
    run.log({"kind": "grow", "step": state.step, "elapsed": state.elapsed, "method": config.grow_method,
             "from_params": small.num_params(), "to_params": run.raw_model.num_params(),
             "model_config": asdict(run.raw_model.config), "micro_batch_size": config.micro_batch_size})
    bar.write(f"step {state.step:6d} | grew {small.num_params() / 1e6:.1f}M -> {run.raw_model.num_params() / 1e6:.1f}M "
              f"parameters with {config.grow_method}")


def growth_flops(small: ModelConfig, target: ModelConfig, method: str, ligo_steps: int, tokens_per_step: int,
                 seq_len: int, mask_rate: float = MASK_RATE) -> float:
    """Training FLOPs the growth itself costs: none for the fixed operators. A LiGO step runs the big model
    forward and backward on its batch (model.flops_per_token) and materialises the weights forward and
    backward (3x the forward matmuls, counted by torch's FlopCounterMode on shapes-only "meta" tensors)."""
    if method != "ligo":
        return 0.0
    with torch.device("meta"):
        operator = GrowthOperator(CramBERT(small), grown_config(small, target), device="meta")
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        operator.materialise()
    per_step = (tokens_per_step * flops_per_token(operator.big_config, seq_len, mask_rate)
                + 3 * counter.get_total_flops())
    return ligo_steps * per_step


def trained_mask_rate(checkpoint: dict) -> float:
    """The most a checkpoint's training run masked: train.py's mask rates (older checkpoints stored it as the
    model config's field mlm_fraction), else cramming's 0.25."""
    train = checkpoint.get("train_config")
    if train:
        return max(train["mask_rate"], train["eval_mask_rate"])
    return checkpoint["model_config"].get("mlm_fraction", MASK_RATE)


def mlm_batches(data_dir: str, seq_len: int, mask_rate: float, rows: int, seed: int):
    """batches(step) -> (input_ids, labels): consecutive slices of a shuffled pass over the training tokens."""
    data = training_batches(data_dir, data_tokenizer(data_dir), seq_len, mask_rate, seed=seed)
    return lambda step: data.batch_after(step * rows, rows)


# ----------------------------------------------------------------------------------------------------
# Command line

def grow_command(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--from", dest="source", required=True, help="checkpoint of the trained small model")
    parser.add_argument("--to", default="base", help="target preset (its sizes; the recipe comes from --from)")
    for name in SHAPE_FIELDS:
        parser.add_argument("--" + name.replace("_", "-"), type=int, help=f"override the target's {name}")
    parser.add_argument("--method", choices=METHODS, default="ligo", help="how to grow")
    parser.add_argument("--out", required=True, help="where to write the grown checkpoint")
    parser.add_argument("--data-dir", default="data/cache/default", help="token files for LiGO's operator training")
    parser.add_argument("--ligo-steps", type=int, default=100, help="operator training steps")
    parser.add_argument("--ligo-lr", type=float, default=0.03, help="operator step size (AdamW lr x fan-in)")
    parser.add_argument("--batch-size", type=int, default=32, help="rows per operator step")
    parser.add_argument("--seq-len", type=int, default=0, help="tokens per row (default: the source's max_seq_len)")
    parser.add_argument("--mask-rate", type=float, default=0.0,
                        help="share of tokens masked in the operator's batches (default: the source run's)")
    parser.add_argument("--noise", type=float, default=0.01,
                        help="LiGO's symmetry-breaking noise on the width copies (stack and net2net stay exact)")
    parser.add_argument("--shared-qkv", action="store_true",
                        help="one width expansion for Q, K and V per layer (default: one each, as in the paper)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the noise, the data order and the masking")
    parser.add_argument("--device", default="auto", help="auto, cuda, mps or cpu")
    args = parser.parse_args(argv)
    source = load_checkpoint(args.source)
    small, tokenizer = model_from_checkpoint(source), tokenizer_from_checkpoint(source)
    target = preset_config(args.to, **{name: getattr(args, name) for name in SHAPE_FIELDS if getattr(args, name)})
    mask_rate = args.mask_rate or trained_mask_rate(source)
    batches = None
    if args.method == "ligo":  # the operator learns from the data: it must be in the model's own ids
        check_tokenizer(source, data_tokenizer(args.data_dir), args.source, args.data_dir)
        batches = mlm_batches(args.data_dir, args.seq_len or small.config.max_seq_len, mask_rate, args.batch_size,
                              args.seed)
    grown = grow_model(small, target, args.method, batches, args.ligo_steps, args.ligo_lr,
                       resolve_device(args.device), args.noise, args.seed, mask_rate=mask_rate, shared_qkv=args.shared_qkv)
    save_checkpoint(args.out, model_checkpoint(grown.cpu(), tokenizer,
                                               growth={**vars(args), "from_config": asdict(small.config)}))
    stopped_at = (source.get("train_config") or {}).get("schedule_to", 1.0)  # where the small run's schedule ended
    carry_on = f" --schedule-from {stopped_at:g}" if stopped_at < 1 else ""  # no second warmup (train.schedule_progress)
    print(f"{args.method}: {small.num_params() / 1e6:.1f}M -> {grown.num_params() / 1e6:.1f}M parameters, "
          f"written to {args.out}; continue with: python train.py --init-from {args.out}{carry_on} ...")


def main(argv=None):
    try:
        grow_command(argv)
    except (FileNotFoundError, ValueError) as error:  # bad input: one clear message, no traceback
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    main()
