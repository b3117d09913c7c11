"""
A BERT-style encoder with the "crammed BERT" recipe (Geiping & Goldstein 2022, "Cramming: Training a
Language Model on a Single GPU in One Day", Sections 4.2 and Table 9).

The recipe, all on by default and each a config switch so the ablation study (experiments/ablate.py) can turn it off:
  - pre-LayerNorm blocks and a final LayerNorm (stable at high learning rates, Sec. 4.2 "Layer structure"),
  - no biases in linear layers (fewer parameters, same quality, faster: Sec. 4.2 "Attention block"),
  - gated-GELU feed-forward (Sec. 4.2 "Feedforward block"),
  - sparse MLM head: vocabulary logits only at the masked positions (Sec. 4.2 "Head block"),
  - scaled sinusoidal position embeddings (Sec. 4.2 "Embedding"),
  - tied input/output embeddings and no dropout during pretraining (Sec. 4.3).
Attention goes through F.scaled_dot_product_attention (fused kernels) on GPUs and through the written-out
`explicit_attention` on CPUs, where it is faster (see `attention`); each is tested against the other.
"""
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from data.tokenizer import Tokenizer


@dataclass
class ModelConfig:
    vocab_size: int = 50304  # GPT-2's 50257 ids + [CLS] [SEP] [MASK] [PAD], padded to a multiple of 64
    max_seq_len: int = 128  # longest sequence the position embedding covers (cramming trains at 128)
    n_layer: int = 16  # number of transformer blocks
    n_head: int = 12  # attention heads; n_embd must divide by it
    n_embd: int = 768  # width of the residual stream
    intermediate_size: int = 3072  # width of the first FFN linear; a gated FFN splits it into value and gate halves
    # --- recipe switches (crammed default first, original-BERT alternative second; see experiments/ablate.py) ---
    norm_position: str = "pre"  # "pre": x + f(norm(x)) and a final norm; "post": norm(x + f(x)) as in BERT
    bias: bool = False  # biases in every linear layer (BERT: True)
    ffn: str = "glu"  # "glu": gated GELU; "gelu": plain GELU MLP
    mlm_head: str = "sparse"  # "sparse": logits at labelled positions only; "dense": logits everywhere
    pos_emb: str = "sinusoidal"  # "sinusoidal": scaled sinusoidal (cramming); "learned": a table (BERT); "rope": rotary
    dropout: float = 0.0  # dropout probability; 0 in pretraining (cramming), GLUE fine-tuning sets 0.1
    tie_embeddings: bool = True  # the MLM decoder reuses the token embedding matrix

    def __post_init__(self):
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}")
        choices = {"norm_position": ("pre", "post"), "ffn": ("glu", "gelu"),
                   "mlm_head": ("sparse", "dense"), "pos_emb": ("sinusoidal", "learned", "rope")}
        for field_name, allowed in choices.items():
            if getattr(self, field_name) not in allowed:
                raise ValueError(f"{field_name}={getattr(self, field_name)!r}; expected one of {allowed}")
        if self.ffn == "glu" and self.intermediate_size % 2:
            raise ValueError("a gated FFN splits intermediate_size in two halves, so it must be even")

    @property
    def ffn_hidden(self) -> int:
        """Width fc_out reads: a gated FFN multiplies its value and gate halves, so half of intermediate_size."""
        return self.intermediate_size // 2 if self.ffn == "glu" else self.intermediate_size


# A model's shape: the fields growth changes, a plan chooses and the presets below size; every other ModelConfig
# field is a recipe switch (positions, norm placement, FFN, head, ...).
SHAPE_FIELDS = ("n_layer", "n_head", "n_embd", "intermediate_size")

# Named sizes. `crammed` is the paper's final model; `laptop` is the CPU recipe's (config.py RECIPES,
# measured in BENCHMARKS.md); `tiny` exists so the tests run in seconds on a CPU.
PRESETS = {
    "tiny": dict(n_layer=2, n_head=2, n_embd=64, intermediate_size=256),
    # Rotary positions: on a CPU-hour budget they are what lets the model use context at all (BENCHMARKS.md).
    "laptop": dict(n_layer=4, n_head=2, n_embd=128, intermediate_size=512, pos_emb="rope"),
    "mini": dict(n_layer=4, n_head=4, n_embd=256, intermediate_size=1024),
    "small": dict(n_layer=6, n_head=8, n_embd=512, intermediate_size=2048),
    "base": dict(n_layer=12, n_head=12, n_embd=768, intermediate_size=3072),
    "crammed": dict(n_layer=16, n_head=12, n_embd=768, intermediate_size=3072),
}


MASK_RATE = 0.25  # cramming's share of masked tokens: the sparse head's default share of rows (count_kept, FLOPs)
LEGACY_FIELDS = ("mlm_fraction",)  # once stored in ModelConfig (a data setting); old checkpoints still carry it


def model_config_from_dict(stored: dict) -> ModelConfig:
    """A ModelConfig from asdict() output, e.g. a checkpoint's, dropping fields older versions stored."""
    return ModelConfig(**{k: v for k, v in stored.items() if k not in LEGACY_FIELDS})


def preset_config(name: str, **overrides) -> ModelConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return ModelConfig(**{**PRESETS[name], **overrides})


# ----------------------------------------------------------------------------------------------------
# Building blocks

def explicit_attention(q, k, v, key_mask=None, dropout_p: float = 0.0):
    """Textbook softmax(q kᵀ / sqrt(d)) v, written out. The softmax runs in fp32 whatever autocast chose for the
    matmuls; under bf16 the scores themselves come out of a bf16 matmul, rounded, where the fused kernels keep
    them in fp32 (the bf16 gradients of both differ from fp32's by the same ~2%: BENCHMARKS.md).
    q, k, v: (B, H, T, D); key_mask: (B, 1, 1, T) bool, True where the key is a real token, or None."""
    scores = (q @ k.transpose(-2, -1)).float() / math.sqrt(q.size(-1))  # (B, H, T, T)
    if key_mask is not None:
        scores = scores.masked_fill(~key_mask, float("-inf"))
    weights = F.softmax(scores, dim=-1)
    if dropout_p > 0:
        weights = F.dropout(weights, dropout_p)
    return weights.to(v.dtype) @ v  # (B, H, T, D)


def attention(q, k, v, key_mask=None, dropout_p: float = 0.0):
    """On a GPU, PyTorch's fused kernels (FlashAttention and kin: the T x T scores never reach memory). On a CPU,
    the written-out form: at the CPU recipe's shapes (T = 128, 64-wide heads) the fused CPU kernel's backward
    alone took a quarter of a compiled training step, while torch.compile fuses the written-out softmax into
    its neighbours: the CPU recipe's training runs 1.42x the tokens/s end to end, compiled in bf16 (BENCHMARKS.md)."""
    if q.device.type == "cpu":
        return explicit_attention(q, k, v, key_mask, dropout_p)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask, dropout_p=dropout_p)


def rotary_angles(max_seq_len: int, head_dim: int) -> torch.Tensor:
    """Rotary position embedding (Su et al. 2021, RoFormer): the angle of each (position, frequency)."""
    inv_freq = 1.0 / (10000 ** (torch.arange(0, head_dim, 2).float() / head_dim))
    return torch.outer(torch.arange(max_seq_len).float(), inv_freq)  # (T, D/2)


def rotate(x, angles):
    """Rotate each pair (x_i, x_{i+D/2}) of q or k by its position's angle: then q·k depends on the two
    positions only through their distance, so "look one token to the left" is one pattern to learn.
    x: (B, H, T, D), angles: (T, D/2)."""
    x1, x2 = x.chunk(2, dim=-1)
    cos, sin = angles.cos(), angles.sin()
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class SelfAttention(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.n_head = config.n_head
        self.dropout = config.dropout
        self.qkv = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.rotary = config.pos_emb == "rope"
        if self.rotary:
            self.register_buffer("angles", rotary_angles(config.max_seq_len, config.n_embd // config.n_head),
                                 persistent=False)

    def forward(self, x, attention_mask=None):  # x: (B, T, C), attention_mask: (B, T) or None
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))  # (B, H, T, D)
        if self.rotary:
            q, k = rotate(q, self.angles[:T]), rotate(k, self.angles[:T])
        # A boolean mask broadcast over heads and queries: True where the key is a real token.
        mask = None if attention_mask is None else attention_mask.bool()[:, None, None, :]
        y = attention(q, k, v, mask, dropout_p=self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return F.dropout(self.proj(y), self.dropout, self.training)


class FeedForward(nn.Module):
    """GLU variant (Shazeer 2020): fc_in produces [value, gate]; out = fc_out(value * GELU(gate)).
    As in cramming, the gated version halves the width fc_out sees, so it has fewer parameters than
    the plain MLP of the same intermediate_size."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.gated = config.ffn == "glu"
        self.fc_in = nn.Linear(config.n_embd, config.intermediate_size, bias=config.bias)
        self.fc_out = nn.Linear(config.ffn_hidden, config.n_embd, bias=config.bias)
        self.dropout = config.dropout

    def forward(self, x):  # (B, T, C) -> (B, T, C)
        h = self.fc_in(x)
        if self.gated:
            value, gate = h.chunk(2, dim=-1)
            h = value * F.gelu(gate)
        else:
            h = F.gelu(h)
        return F.dropout(self.fc_out(h), self.dropout, self.training)


class Block(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.pre_norm = config.norm_position == "pre"
        self.norm1 = nn.LayerNorm(config.n_embd)
        self.attn = SelfAttention(config)
        self.norm2 = nn.LayerNorm(config.n_embd)
        self.ffn = FeedForward(config)

    def forward(self, x, attention_mask=None):
        if self.pre_norm:  # the residual stream is never normalised: gradients flow straight through
            x = x + self.attn(self.norm1(x), attention_mask)
            return x + self.ffn(self.norm2(x))
        x = self.norm1(x + self.attn(x, attention_mask))  # original BERT (post-LN)
        return self.norm2(x + self.ffn(x))


class Embedding(nn.Module):
    """Token embedding + position embedding, then a LayerNorm (cramming keeps BERT's embedding norm)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.tok = nn.Embedding(config.vocab_size, config.n_embd)
        self.learned_pos = config.pos_emb == "learned"
        self.absolute_pos = config.pos_emb != "rope"  # rotary positions act inside attention instead
        if self.learned_pos:
            self.pos = nn.Embedding(config.max_seq_len, config.n_embd)
        elif self.absolute_pos:
            # Sinusoids (Vaswani et al. 2017) times one learned scalar, initialised to 1/sqrt(C) so the
            # positions do not drown the token signal; no table to learn and nothing to outgrow.
            position = torch.arange(config.max_seq_len).unsqueeze(1)
            inv_freq = torch.exp(torch.arange(0, config.n_embd, 2) * (-math.log(10000.0) / config.n_embd))
            table = torch.zeros(config.max_seq_len, config.n_embd)
            table[:, 0::2] = torch.sin(position * inv_freq)
            table[:, 1::2] = torch.cos(position * inv_freq)
            self.register_buffer("sinusoids", table, persistent=False)
            self.pos_scale = nn.Parameter(torch.tensor(config.n_embd ** -0.5))
        self.norm = nn.LayerNorm(config.n_embd)
        self.dropout = config.dropout

    def forward(self, input_ids):  # (B, T) -> (B, T, C)
        T = input_ids.size(1)
        x = self.tok(input_ids)
        if self.absolute_pos:
            x = x + (self.pos.weight[:T] if self.learned_pos else self.sinusoids[:T] * self.pos_scale)
        return F.dropout(self.norm(x), self.dropout, self.training)


class Encoder(nn.Module):
    """Embeddings and the stack of blocks: everything the MLM head and the GLUE head (finetune.py) share."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.embedding = Embedding(config)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        # Pre-LN leaves the residual stream unnormalised, so one norm closes the stack; post-LN already ends on one.
        self.final_norm = nn.LayerNorm(config.n_embd) if config.norm_position == "pre" else nn.Identity()

    def forward(self, input_ids, attention_mask=None):  # (B, T) -> (B, T, C)
        x = self.embedding(input_ids)
        for block in self.blocks:
            x = block(x, attention_mask)
        return self.final_norm(x)


def init_weights(module: nn.Module):
    """BERT's initialisation: normal(0, 0.02) for matrices, zeros for biases, (1, 0) for LayerNorms."""
    for sub in module.modules():
        if isinstance(sub, (nn.Linear, nn.Embedding)):
            nn.init.normal_(sub.weight, mean=0.0, std=0.02)
        if isinstance(sub, nn.Linear) and sub.bias is not None:
            nn.init.zeros_(sub.bias)
        if isinstance(sub, nn.LayerNorm):
            nn.init.ones_(sub.weight)
            nn.init.zeros_(sub.bias)


# ----------------------------------------------------------------------------------------------------
# Masked language model

class CramBERT(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        # BERT's prediction head: a transform (dense, GELU, norm), then the decoder to the vocabulary.
        self.head_dense = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.head_norm = nn.LayerNorm(config.n_embd)
        self.decoder = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        init_weights(self)
        if config.tie_embeddings:  # one matrix both reads and writes tokens (Press & Wolf 2017)
            self.decoder.weight = self.encoder.embedding.tok.weight

    def forward(self, input_ids, attention_mask=None, labels=None, n_kept: int | None = None):
        """input_ids, attention_mask, labels: (B, T); labels hold the original id at masked positions and
        -100 elsewhere. Returns (logits, loss): logits are (B, T, V) without labels or with the dense head,
        and (n_kept, V) at the positions sparse_positions(labels, n_kept) with the sparse head; loss (the mean
        cross-entropy over masked tokens) is None without labels. n_kept: see sparse_positions."""
        hidden = self.encoder(input_ids, attention_mask)  # (B, T, C)
        if labels is None or self.config.mlm_head == "dense":
            logits = self.predict(hidden)  # (B, T, V)
            loss = None if labels is None else F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(),
                                                                ignore_index=-100)
            return logits, loss
        positions = sparse_positions(labels, n_kept)  # (n_kept,) flat indices into B * T
        logits = self.predict(hidden.flatten(0, 1)[positions])  # (n_kept, V)
        return logits, F.cross_entropy(logits.float(), labels.flatten()[positions], ignore_index=-100)

    def predict(self, hidden):  # (..., C) -> (..., V)
        return self.decoder(self.head_norm(F.gelu(self.head_dense(hidden))))

    def num_params(self, non_embedding: bool = False) -> int:
        """Parameters counted once (a tied matrix once). non_embedding drops the token/position tables,
        Kaplan et al.'s convention; Chinchilla's N (scaling.py) counts every parameter."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            embedding = self.encoder.embedding
            n -= embedding.tok.weight.numel()
            if embedding.learned_pos:
                n -= embedding.pos.weight.numel()
        return n

    def flops_per_token(self, seq_len: int | None = None, mask_rate: float = MASK_RATE) -> float:
        return flops_per_token(self.config, seq_len or self.config.max_seq_len, mask_rate)


def count_kept(batch_size: int, seq_len: int, mask_rate: float) -> int:
    """How many positions the sparse head keeps for batches masked at (at most) mask_rate: a count fixed by
    the shapes, so torch.compile sees static shapes (data/loader.py never masks more than this)."""
    return min(batch_size * seq_len, math.ceil(mask_rate * batch_size * seq_len))


def sparse_positions(labels: torch.Tensor, n_kept: int | None = None) -> torch.Tensor:
    """The flat positions (into B * T) where the sparse head computes logits: a stable sort on "is labelled"
    puts the labelled positions last and we keep the last n_kept. With n_kept from count_kept the count is
    static; extra unlabelled rows carry -100 and are ignored. n_kept=None keeps exactly the labelled
    positions (a count read from the batch: a device sync, and shapes that change from batch to batch)."""
    labelled = labels.flatten() != -100
    if n_kept is None:
        n_kept = int(labelled.sum())
    return torch.argsort(labelled.int(), stable=True)[labelled.numel() - n_kept:]


def scored_share(config: ModelConfig, mask_rate: float) -> float:
    """The share of positions the vocabulary head computes logits at: the mask rate with the sparse head (it
    scores only the masked tokens: count_kept), every position with the dense one."""
    return mask_rate if config.mlm_head == "sparse" else 1.0


def flops_per_token(config: ModelConfig, seq_len: int, mask_rate: float = MASK_RATE) -> float:
    """Training FLOPs (forward + backward = 3x forward, 2 FLOPs per multiply-add) per input token, counting
    every matmul that really runs: the blocks' linears, attention's two T x T products, and the MLM
    head only at the positions it is evaluated on (a fraction mask_rate with the sparse head, which
    is the training run's masking: count_kept)."""
    C, L, V = config.n_embd, config.n_layer, config.vocab_size
    per_layer = 3 * C * C + C * C + C * config.intermediate_size + config.ffn_hidden * C  # qkv, proj, fc_in, fc_out
    attention = 2 * seq_len * C  # q kᵀ and (weights) v: T*C multiply-adds each, per token per layer
    head = C * C + C * V  # head_dense and decoder
    forward = 2 * (L * (per_layer + attention) + scored_share(config, mask_rate) * head)
    return 3 * forward


# ----------------------------------------------------------------------------------------------------
# Asking the model: what fills the blank?

@torch.no_grad()
def fill_masks(model: CramBERT, tokenizer: Tokenizer, text: str, device, k: int = 5) -> list[list[str]]:
    """The k most likely tokens at each [MASK] of `text`, e.g. "The capital of France is [MASK]." """
    ids = [tokenizer.cls_id] + tokenizer.encode_masked(text)[:model.config.max_seq_len - 2] + [tokenizer.sep_id]
    input_ids = torch.tensor([ids], device=device)
    was_training = model.training
    model.eval()
    logits, _ = model(input_ids)  # (1, T, V)
    model.train(was_training)
    logits[..., tokenizer.num_ordinary:] = float("-inf")  # only text can fill a blank
    positions = (input_ids[0] == tokenizer.mask_id).nonzero().squeeze(1)
    return [[tokenizer.decode([i]) for i in logits[0, p].topk(k).indices.tolist()] for p in positions]


# ----------------------------------------------------------------------------------------------------
# The optimizer (nanoGPT keeps configure_optimizers beside the model too)

def make_optimizer(model: torch.nn.Module, config) -> torch.optim.AdamW:
    """AdamW with BERT's weight-decay split: matrices (embedding included) decay; norms, biases and the
    position scale (all 1-D) do not, since shrinking them towards 0 only fights the normalisation.
    config: anything with lr, weight_decay, betas and eps (config.py's TrainConfig)."""
    parameters = {id(p): p for p in model.parameters()}.values()  # a tied matrix once
    groups = [{"params": [p for p in parameters if p.dim() >= 2], "weight_decay": config.weight_decay},
              {"params": [p for p in parameters if p.dim() < 2], "weight_decay": 0.0}]
    # fused: one kernel for the whole update (CUDA since torch 2.0, CPU since 2.4) instead of a handful of
    # element-wise passes over every parameter; on the CPU recipe's 2.8 M parameters that is most of the step's
    # non-model time. MPS keeps the default.
    fused = next(model.parameters()).device.type in ("cpu", "cuda")
    return torch.optim.AdamW(groups, lr=config.lr, betas=config.betas, eps=config.eps, fused=fused)
