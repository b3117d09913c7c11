"""
Fine-tuning an encoder on one labelled task, the way glue_eval.py runs it: the config, the learning-rate
schedule and ELECTRA's layer-wise decay, the training loop (LP-FT's head-first variant included), prediction,
and the linear probe on the frozen encoder (its maths in transfer.py).
"""
import math
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from data.glue import GlueTask
from data.tokenizer import Tokenizer
from evaluation.transfer import fit_probe
from model import CramBERT, Encoder, ModelConfig, init_weights
from run.device import autocast, gradient_scaler, training_precision

SMALL_TASK_ROWS = 10_000  # a task fine-tuned on fewer rows than this is "small" and gets --epochs-small passes


# ----------------------------------------------------------------------------------------------------
# GLUE: classification / regression on the [CLS] token, reusing the pretrained encoder

class CramBERTForSequenceClassification(nn.Module):
    """BERT's sequence head on the encoder. pooling="cls" reads the first ([CLS]) position as BERT does;
    pooling="mean" averages every non-padding position. MLM pretraining never asks anything of [CLS] (it is
    never masked and no loss reads it: there is no next-sentence task), so a briefly pretrained encoder's
    [CLS] output is whatever attention happens to mix there, while each token's output is what the MLM
    trained (Reimers & Gurevych 2019 found mean pooling the better sentence vector for BERT's outputs)."""

    def __init__(self, config: ModelConfig, num_labels: int, pooling: str = "cls"):
        super().__init__()
        if pooling not in ("cls", "mean"):
            raise ValueError(f"pooling {pooling!r}: must be 'cls' or 'mean'")
        self.config, self.num_labels, self.pooling = config, num_labels, pooling
        self.encoder = Encoder(config)
        self.pooler = nn.Linear(config.n_embd, config.n_embd)  # BERT's pooler: dense + tanh on [CLS]
        self.classifier = nn.Linear(config.n_embd, num_labels)  # num_labels == 1 means regression (STS-B)
        init_weights(self)

    @classmethod
    def from_pretrained(cls, mlm_model: CramBERT, num_labels: int, dropout: float = 0.1, pooling: str = "cls"):
        """A classifier whose encoder starts from a pretrained CramBERT's encoder weights."""
        model = cls(replace(mlm_model.config, dropout=dropout), num_labels, pooling)
        model.encoder.load_state_dict(mlm_model.encoder.state_dict())
        return model

    def pool(self, input_ids, attention_mask=None):
        """(summary, pooled), both (B, C): the sentence vector read from the encoder's output (which has passed
        the final norm), and the pooler's tanh of it, which the classifier reads. glue_eval.py's linear probe
        and drift report read them too."""
        hidden = self.encoder(input_ids, attention_mask)  # (B, T, C)
        if self.pooling == "cls":
            summary = hidden[:, 0]  # (B, C)
        else:
            keep = (torch.ones_like(input_ids) if attention_mask is None else attention_mask).unsqueeze(-1).to(hidden.dtype)
            summary = (hidden * keep).sum(1) / keep.sum(1)  # (B, C): mean over the real tokens
        return summary, torch.tanh(self.pooler(summary))

    def forward(self, input_ids, attention_mask=None, labels=None):
        """Returns (logits (B, num_labels), loss); labels are class ids (B,) or float scores (B,)."""
        _, pooled = self.pool(input_ids, attention_mask)
        logits = self.classifier(F.dropout(pooled, self.config.dropout, self.training))  # (B, num_labels)
        if labels is None:
            return logits, None
        if self.num_labels == 1:
            return logits, F.mse_loss(logits.squeeze(-1).float(), labels.float())
        return logits, F.cross_entropy(logits.float(), labels)


@dataclass
class FinetuneConfig:
    learning_rate: float = 4e-5  # peak AdamW learning rate (cramming's single GLUE setting)
    beta1: float = 0.9  # AdamW first-moment decay
    beta2: float = 0.98  # AdamW second-moment decay (cramming uses 0.98 in pretraining and fine-tuning)
    eps: float = 1e-6  # AdamW epsilon
    weight_decay: float = 0.0  # no weight decay in fine-tuning
    batch_size: int = 16  # examples per optimizer step
    epochs: int = 5  # passes over the training set
    warmup_fraction: float = 0.1  # first 10% of steps ramp the lr up linearly from 0
    schedule: str = "linear"  # decay after warmup: "linear" or "cosine", both to 0
    max_len: int = 128  # tokens per example including [CLS]/[SEP]; the longer sentence is truncated first
    dropout: float = 0.1  # dropout during fine-tuning (pretraining runs without)
    pooling: str = "cls"  # sentence vector: the [CLS] position (BERT) or the mean of all tokens (model.py says why)
    eval_batch_size: int = 64  # examples per forward pass when scoring the dev set
    max_train_examples: int | None = None  # deviation from GLUE: subsample train for quick CPU runs
    max_eval_examples: int | None = None  # deviation from GLUE: subsample dev for quick CPU runs
    precision: str = "auto"  # autocast precision (common.training_precision): bf16/fp16 on a GPU, bf16 on a CPU that computes it natively
    layer_decay: float = 1.0  # layer-wise lr decay (ELECTRA: 0.8); 1 = one lr everywhere (parameter_groups)
    epochs_small: int | None = None  # passes for a task with < SMALL_TASK_ROWS training rows; None = epochs
    method: str = "finetune"  # "finetune"; "probe": frozen features + a linear model; "lp-ft": head first, then all
    lp_learning_rate: float = 1e-3  # lp-ft: peak lr of the head-only phase (encoder frozen), before the full one


def learning_rate(step: int, total_steps: int, config: FinetuneConfig) -> float:
    """Linear warmup over the first warmup_fraction of steps, then linear or cosine decay to 0."""
    warmup_steps = max(1, math.ceil(config.warmup_fraction * total_steps))
    if step < warmup_steps:
        return config.learning_rate * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    if config.schedule == "cosine":
        return config.learning_rate * 0.5 * (1 + math.cos(math.pi * progress))
    return config.learning_rate * (1 - progress)


def epochs_for(config: FinetuneConfig, train_rows: int) -> int:
    """Small training sets get more passes (config.epochs_small), so that they still take enough steps."""
    return config.epochs_small if config.epochs_small and train_rows < SMALL_TASK_ROWS else config.epochs


def layer_depth(name: str, n_layer: int) -> int:
    """A classifier parameter's depth in ELECTRA's layer-wise decay (Clark et al. 2020, appendix A; the code's
    `_get_layer_lrs` in google-research/electra, model/optimization.py): the embeddings 0, block i i + 1, the task
    head (pooler, classifier) n_layer + 2. ELECTRA's post-LN encoder ends on its last block and leaves depth
    n_layer + 1 unused; our final LayerNorm sits between the last block and the head, so it gets that depth."""
    if name.startswith("encoder.embedding."):
        return 0
    if name.startswith("encoder.blocks."):
        return int(name.split(".")[2]) + 1
    if name.startswith("encoder."):
        return n_layer + 1
    return n_layer + 2


def parameter_groups(model: CramBERTForSequenceClassification, config: FinetuneConfig) -> list[dict]:
    """AdamW groups by depth, each with the factor ELECTRA puts on its lr, layer_decay ** (n_layer + 2 - depth):
    the head trains at the full lr, the top block at decay², the embeddings at decay^(n_layer + 2), so that
    fine-tuning moves the general lower layers least. With layer_decay 1 every factor is 1."""
    n_layer, by_depth = model.config.n_layer, {}
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:  # a frozen encoder (lp-ft's first phase) is left out
            by_depth.setdefault(layer_depth(name, n_layer), []).append(parameter)
    return [{"params": parameters, "lr_scale": config.layer_decay ** (n_layer + 2 - depth)}
            for depth, parameters in sorted(by_depth.items())]


def encode(tokenizer: Tokenizer, texts_a: list, texts_b: list, max_len: int) -> list[list[int]]:
    return [tokenizer.encode_pair(a, b, max_len=max_len) for a, b in zip(texts_a, texts_b)]


def collate(sequences: list[list[int]], device, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad to the longest sequence of this batch (not to max_len): short tasks like SST-2 then cost a
    fraction of the compute. The attention mask keeps the [PAD] positions out of attention."""
    width = max(len(ids) for ids in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    for row, ids in enumerate(sequences):
        input_ids[row, :len(ids)] = torch.tensor(ids)
    return input_ids.to(device), (input_ids != pad_id).long().to(device)  # (B, T), (B, T)


def build_classifier(mlm_model: CramBERT, num_labels: int, dropout: float, pretrained: bool = True,
                     pooling: str = "cls"):
    """A classifier on the checkpoint's encoder; pretrained=False keeps the fresh init_weights encoder of the
    same architecture instead: the no-pretraining baseline, which cramming puts at about 45 GLUE."""
    if pretrained:
        return CramBERTForSequenceClassification.from_pretrained(mlm_model, num_labels, dropout, pooling)
    return CramBERTForSequenceClassification(replace(mlm_model.config, dropout=dropout), num_labels, pooling)


def finetune_task(mlm_model: CramBERT, task: GlueTask, train_examples: tuple, config: FinetuneConfig,
                  seed: int = 0, device="cpu", pretrained: bool = True, tokenizer: Tokenizer | None = None,
                  progress: bool = True, monitor=None) -> CramBERTForSequenceClassification:
    """Fine-tune a fresh classifier on (texts_a, texts_b, labels); the seed fixes the head's init (and a
    random-init encoder's), dropout and the shuffling. monitor: see train_classifier (the full phase only).
    config.method "lp-ft" (Kumar et al. 2022) first trains the head alone on the frozen encoder, the same number
    of epochs at lp_learning_rate, so that the full fine-tuning starts from a head that already fits: a random
    head's early gradients would otherwise reach the pretrained features as noise. Returns the model in eval mode."""
    tokenizer = tokenizer or Tokenizer.gpt2()
    texts_a, texts_b, labels = train_examples
    sequences = encode(tokenizer, texts_a, texts_b, config.max_len)
    torch.manual_seed(seed)  # the classifier head (and a random-init encoder) draw from the global RNG
    model = build_classifier(mlm_model, task.num_labels, config.dropout, pretrained, config.pooling).to(device)
    if config.method == "lp-ft":
        model.encoder.requires_grad_(False)
        head_config = replace(config, learning_rate=config.lp_learning_rate, layer_decay=1.0)
        train_classifier(model, task, sequences, labels, head_config, seed, device, tokenizer.pad_id, progress)
        model.encoder.requires_grad_(True)
    train_classifier(model, task, sequences, labels, config, seed, device, tokenizer.pad_id, progress, monitor)
    return model.eval()


def train_classifier(model: CramBERTForSequenceClassification, task: GlueTask, sequences: list, labels: list,
                     config: FinetuneConfig, seed: int, device, pad_id: int, progress: bool = True, monitor=None):
    """AdamW on every parameter (per-depth lr factors: parameter_groups), warmup then decay, config.epochs passes
    in `seed`'s shuffled order. monitor(step, total_steps, model), if given, is called before the first step and
    after each one (transfer.DriftMonitor)."""
    device = torch.device(device)
    precision = training_precision(device, config.precision)
    targets = torch.tensor(labels, dtype=torch.float32 if task.labels is None else torch.long)
    # fused=True: one kernel for the whole update, ~1.7x faster steps on CPU for small models
    optimizer = torch.optim.AdamW(parameter_groups(model, config), lr=config.learning_rate, eps=config.eps,
                                  betas=(config.beta1, config.beta2), weight_decay=config.weight_decay, fused=True)
    total_steps = config.epochs * math.ceil(len(sequences) / config.batch_size)
    shuffle = torch.Generator().manual_seed(seed)
    scaler = gradient_scaler(device, precision)  # fp16 GPUs: loss scaling
    model.train()
    bar = tqdm(total=total_steps, desc=f"{task.name} seed {seed}", disable=not progress, leave=False)
    step = 0
    if monitor:
        monitor(step, total_steps, model)
    for _ in range(config.epochs):
        order = torch.randperm(len(sequences), generator=shuffle).tolist()
        for start in range(0, len(order), config.batch_size):
            batch = order[start:start + config.batch_size]
            input_ids, attention_mask = collate([sequences[i] for i in batch], device, pad_id)
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(step, total_steps, config) * group["lr_scale"]
            with autocast(device, precision):
                _, loss = model(input_ids, attention_mask, labels=targets[batch].to(device))
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            step += 1
            bar.update()
            if step % 10 == 0:  # .item() waits for the GPU, so only now and then
                bar.set_postfix(loss=f"{loss.item():.3f}")
            if monitor:
                monitor(step, total_steps, model)
    bar.close()


@torch.no_grad()
def sentence_vectors(model: CramBERTForSequenceClassification, sequences: list, config: FinetuneConfig, device,
                     pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(summary, pooled) of every sequence (model.pool), in float32 on the CPU, with the model in eval mode."""
    model.eval()
    summaries, pooled = [], []
    for start in range(0, len(sequences), config.eval_batch_size):
        input_ids, attention_mask = collate(sequences[start:start + config.eval_batch_size], device, pad_id)
        with autocast(torch.device(device), config.precision):
            summary, pooled_batch = model.pool(input_ids, attention_mask)  # (B, C), (B, C)
        summaries.append(summary.float().cpu())
        pooled.append(pooled_batch.float().cpu())
    return torch.cat(summaries), torch.cat(pooled)


@torch.no_grad()
def predict(model: CramBERTForSequenceClassification, texts_a: list, texts_b: list, config: FinetuneConfig,
            device="cpu", tokenizer: Tokenizer | None = None) -> np.ndarray:
    """Class ids (argmax) for classification, scores for regression."""
    tokenizer = tokenizer or Tokenizer.gpt2()
    sequences = encode(tokenizer, texts_a, texts_b, config.max_len)
    model.eval()
    outputs = []
    for start in range(0, len(sequences), config.eval_batch_size):
        input_ids, attention_mask = collate(sequences[start:start + config.eval_batch_size], device, tokenizer.pad_id)
        with autocast(torch.device(device), config.precision):
            logits, _ = model(input_ids, attention_mask)  # (B, num_labels)
        outputs.append(decide(logits.float().cpu()))
    return torch.cat(outputs).numpy()


def decide(outputs: torch.Tensor) -> torch.Tensor:
    """(N, K) outputs -> the answer: the score for regression (K = 1), the class id otherwise."""
    return outputs[:, 0] if outputs.size(1) == 1 else outputs.argmax(dim=-1)


def probe_task(mlm_model: CramBERT, task: GlueTask, train_examples: tuple, config: FinetuneConfig, seed: int = 0,
               device="cpu", pretrained: bool = True, tokenizer: Tokenizer | None = None) -> tuple:
    """The linear probe (transfer.fit_probe) on the frozen encoder's summary vectors (config.pooling, after the
    final norm; not the fresh pooler). Returns (answer(texts_a, texts_b) -> predictions, the chosen L2 strength)."""
    tokenizer = tokenizer or Tokenizer.gpt2()
    torch.manual_seed(seed)  # a random-init encoder's weights
    model = build_classifier(mlm_model, task.num_labels, 0.0, pretrained, config.pooling).to(device)

    def summaries(texts_a, texts_b):
        sequences = encode(tokenizer, texts_a, texts_b, config.max_len)
        return sentence_vectors(model, sequences, config, device, tokenizer.pad_id)[0]
    texts_a, texts_b, labels = train_examples
    weight, bias, l2 = fit_probe(summaries(texts_a, texts_b), torch.tensor(labels), task.num_labels, seed)
    return (lambda a, b: decide(summaries(a, b) @ weight.T + bias).numpy()), l2
