"""Assignment 3: attention with rotary positions (course/03-attention.md)."""
import torch
import torch.nn.functional as F

from course.kit import Assignment
from course.pretrain import pretrain
from model import explicit_attention, rotary_angles, rotate

ASSIGNMENT = Assignment(
    number=3, slug="attention", title="Attention with rotary positions",
    functions=("model.py:explicit_attention", "model.py:rotary_angles", "model.py:rotate"),
    metric="unigram_ratio",
    paper="Vaswani et al. 2017, Sec. 3.2.1 (Eq. 1); Su et al. 2021 (RoFormer), Sec. 3.4.2")


def qkv(batch: int, heads: int, length: int, dim: int, generator: torch.Generator):
    return (torch.randn(batch, heads, length, dim, generator=generator) for _ in range(3))


def check_attention_equals_pytorch():
    """explicit_attention equals F.scaled_dot_product_attention, with and without a key mask"""
    q, k, v = qkv(2, 3, 10, 8, torch.Generator().manual_seed(0))
    mask = torch.ones(2, 10, dtype=torch.bool)
    mask[1, 6:] = False  # the second row's last four keys are padding
    key_mask = mask[:, None, None, :]
    for m in (None, key_mask):
        got, expected = explicit_attention(q, k, v, m), F.scaled_dot_product_attention(q, k, v, attn_mask=m)
        assert got.shape == expected.shape, f"shape {tuple(got.shape)} != {tuple(expected.shape)}"
        assert torch.allclose(got, expected, atol=1e-5), \
            f"largest difference from PyTorch {(got - expected).abs().max():.2e} (mask: {m is not None})"


def check_padding_is_ignored():
    """a masked key's value has no influence on any output"""
    q, k, v = qkv(1, 2, 6, 4, torch.Generator().manual_seed(1))
    mask = torch.tensor([[True, True, True, True, False, False]])[:, None, None, :]
    changed = v.clone()
    changed[..., 4:, :] += 100.0
    assert torch.allclose(explicit_attention(q, k, v, mask), explicit_attention(q, k, changed, mask), atol=1e-5), \
        "changing a padded key's value changed the output"


def check_rotary_angles():
    """angle (t, i) = t / 10000^(2i/D), shape (T, D/2)"""
    angles = rotary_angles(16, 8)
    assert angles.shape == (16, 4), f"shape {tuple(angles.shape)} != (16, 4)"
    expected = torch.arange(16.0)[:, None] / 10000 ** (torch.arange(0, 8, 2).float() / 8)
    assert torch.allclose(angles, expected, rtol=1e-5), "angles differ from t / 10000^(2i/D)"


def check_rotation_keeps_length():
    """rotating q or k keeps every vector's length (a rotation), and position 0 is not rotated"""
    x = torch.randn(2, 2, 16, 8, generator=torch.Generator().manual_seed(2))
    rotated = rotate(x, rotary_angles(16, 8))
    assert torch.allclose(rotated.norm(dim=-1), x.norm(dim=-1), atol=1e-5), "lengths changed"
    assert torch.allclose(rotated[:, :, 0], x[:, :, 0], atol=1e-6), "position 0 must stay as it is"


def check_scores_depend_on_distance_only():
    """q·k after rotation depends on the positions only through their distance (RoFormer Eq. 16)"""
    generator = torch.Generator().manual_seed(3)
    q, k = torch.randn(8, generator=generator), torch.randn(8, generator=generator)
    angles = rotary_angles(32, 8)
    at = lambda x, t: rotate(x.expand(1, 1, 32, 8), angles)[0, 0, t]  # noqa: E731
    for m, n in [(3, 1), (20, 18), (9, 7)]:  # all at distance 2
        assert torch.allclose(at(q, m) @ at(k, n), at(q, 3) @ at(k, 1), atol=1e-4), \
            f"score at positions ({m}, {n}) differs from (3, 1): not a function of the distance"


def generated(seed: int) -> dict:
    generator = torch.Generator().manual_seed(seed)
    q, k, v = qkv(2, 2, 12, 16, generator)
    mask = torch.rand(2, 12, generator=generator) > 0.3
    mask[:, 0] = True
    angles = rotary_angles(12, 16)
    return {"attention": explicit_attention(q, k, v, mask[:, None, None, :]), "angles": angles,
            "rotated": rotate(q, angles)}


def experiment(seed: int) -> dict:
    """The tiny encoder with rotary positions pretrained on Wikipedia for 1,500 steps (course/pretrain.py): its
    held-out loss over the unigram line's."""
    return pretrain(seed)
