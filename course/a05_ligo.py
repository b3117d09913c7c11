"""Assignment 5: LiGO's width and depth operator (course/05-ligo.md)."""
import os
from dataclasses import replace

import torch

from course.kit import Assignment
from course.pretrain import VOCAB_SIZE, pretrain, wiki_data_dir
from data.loader import TokenFile, data_tokenizer, validation_batches
from grow import depth_mixing, duplication, expand, grow_model, mlm_batches
from model import CramBERT, preset_config
from run.checkpoint import load_checkpoint, model_from_checkpoint
from train import evaluate

ASSIGNMENT = Assignment(
    number=5, slug="ligo", title="LiGO: growing width and depth",
    functions=("grow.py:duplication", "grow.py:depth_mixing", "grow.py:expand"),
    metric="ligo_minus_small",
    paper="Wang et al. 2023 (LiGO), Sec. 3.1-3.2; Chen et al. 2016 (Net2Net), Sec. 2.2")


def check_duplication():
    """copy: new unit i copies old unit i mod small; split: shares that sum to 1, so splitᵀ · copy = I"""
    copy, split = duplication(5, 2)
    assert copy.shape == (5, 2) and split.shape == (5, 2), f"shapes {tuple(copy.shape)}, {tuple(split.shape)}"
    assert copy.argmax(dim=1).tolist() == [0, 1, 0, 1, 0] and torch.equal(copy.sum(1), torch.ones(5)), \
        "copy must be one-hot with unit i copying unit i mod 2"
    assert torch.allclose(split.T @ copy, torch.eye(2)), "splitᵀ · copy must be the identity"
    assert torch.allclose(split[:, 0], torch.tensor([1 / 3, 0, 1 / 3, 0, 1 / 3])), "equal shares without a generator"
    copy, split = duplication(7, 3, torch.Generator().manual_seed(0))
    assert torch.allclose(split.T @ copy, torch.eye(3), atol=1e-6), "random shares must still give the identity"


def check_depth_mixing():
    """stack repeats the small stack on top of itself; identity repeats each layer in order, the repeat's o and
    fc_out rows zeroed"""
    stack = depth_mixing(4, 2, "stack")
    assert stack["q"].argmax(1).tolist() == [0, 1, 0, 1], "stack: big layer l copies small layer l mod 2"
    identity = depth_mixing(4, 2, "identity")
    assert identity["q"].argmax(1).tolist() == [0, 0, 1, 1], "identity: big layer l copies small layer l*2//4"
    assert identity["o"].sum(1).tolist() == [1, 0, 1, 0] and identity["fc_out"].sum(1).tolist() == [1, 0, 1, 0], \
        "identity: a repeated layer's o and fc_out rows must be zero (it then adds nothing to the residual)"


def check_expand():
    """expand gives B_out · W · B_inᵀ for a matrix and B_out · v for a vector"""
    generator = torch.Generator().manual_seed(1)
    out_e, weight, in_e, vector = (torch.randn(shape, generator=generator) for shape in ((6, 3), (3, 2), (5, 2), (3,)))
    assert torch.allclose(expand(out_e, weight, in_e), out_e @ weight @ in_e.T, atol=1e-6), "matrix case"
    assert torch.allclose(expand(out_e, vector), out_e @ vector, atol=1e-6), "vector case"


def check_net2net_preserves_the_function():
    """grown 2x wider and 2x deeper with exact copies and identity blocks, the model computes the same function"""
    torch.manual_seed(0)
    small = CramBERT(preset_config("tiny", vocab_size=320, max_seq_len=16, pos_emb="learned")).eval()
    with torch.no_grad():  # away from the initialisation's zeros and ones, so every weight matters
        for parameter in small.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    target = replace(small.config, n_layer=4, n_head=4, n_embd=128, intermediate_size=512)
    grown = grow_model(small, target, "net2net", noise=0.0, progress_bar=False).eval()
    ids = torch.randint(0, 316, (2, 16))
    with torch.no_grad():
        difference = (grown(ids)[0] - small(ids)[0]).abs().max().item()
    assert difference < 1e-4, f"the grown model's logits differ from the small one's by {difference:.2e}"


def generated(seed: int) -> dict:
    generator = torch.Generator().manual_seed(seed)
    small = int(torch.randint(2, 6, (1,), generator=generator))
    big = int(torch.randint(6, 12, (1,), generator=generator))
    copy, split = duplication(big, small, torch.Generator().manual_seed(seed))
    mixing = {how: depth_mixing(big, small, how) for how in ("stack", "identity")}
    weight = torch.randn(small, small + 1, generator=generator)
    in_e = torch.randn(big + 1, small + 1, generator=generator)
    return {"copy": copy, "split": split, "mixing": mixing, "expanded": expand(copy, weight, in_e)}


def held_out_loss(model: CramBERT, batches) -> float:
    return evaluate(model, batches, torch.device("cpu"), 0, 1, mask_rate=0.25, precision="fp32")


def experiment(seed: int) -> dict:
    """Pretrain the tiny encoder 1,500 steps (course/pretrain.py), grow it to 2x width and depth by StackBERT-style
    copying and by LiGO (the operator trained 30 steps), and compare held-out losses right after growth."""
    small_run = pretrain(seed, reuse=True)  # the training code is not this assignment's
    small = model_from_checkpoint(load_checkpoint(small_run["checkpoint"])).eval()
    data_dir = str(wiki_data_dir())
    val = validation_batches(TokenFile(os.path.join(data_dir, "val.bin"), data_tokenizer(data_dir)), 64, 0.25, 32, 256)
    target = replace(small.config, n_layer=4, n_head=4, n_embd=128, intermediate_size=512)
    torch.manual_seed(seed)
    stacked = grow_model(small, target, "stack", progress_bar=False)
    ligo = grow_model(small, target, "ligo", batches=mlm_batches(data_dir, 64, 0.25, 32, seed), ligo_steps=30,
                      seed=seed, progress_bar=False)
    losses = {name: held_out_loss(model, val) for name, model in (("small", small), ("stack", stacked), ("ligo", ligo))}
    return {"ligo_minus_small": losses["ligo"] - losses["small"],
            "stack_minus_small": losses["stack"] - losses["small"],
            **{f"{name}_loss": loss for name, loss in losses.items()}, "vocab_size": VOCAB_SIZE}
