"""Assignment 2: BERT's masking and the sparse MLM head (course/02-masking.md)."""
import torch
import torch.nn.functional as F

from course.kit import Assignment, byte_tokenizer
from course.pretrain import pretrain
from data.loader import mask_tokens
from model import CramBERT, count_kept, preset_config, sparse_positions

ASSIGNMENT = Assignment(
    number=2, slug="masking", title="BERT's masking and the sparse MLM head",
    functions=("data/loader.py:mask_tokens", "model.py:sparse_positions"),
    metric="unigram_ratio",
    paper="Devlin et al. 2019, Sec. 3.1 (masking); Geiping & Goldstein 2022, Sec. 4.2 (sparse prediction)")


def random_ids(tokenizer, rows: int, length: int, generator: torch.Generator) -> torch.Tensor:
    """Rows of ordinary ids that start with [CLS], end with [SEP] and have some [PAD] at the end."""
    ids = torch.randint(0, tokenizer.num_ordinary, (rows, length), generator=generator)
    ids[:, 0] = tokenizer.cls_id
    ids[:, -1] = tokenizer.sep_id
    ids[::2, -4:] = tokenizer.pad_id
    return ids


def check_labels_and_counts():
    """labels hold the original id where picked, -100 elsewhere; each row picks round(rate x its ordinary tokens),
    at most int(rate x T)"""
    tokenizer, generator = byte_tokenizer(), torch.Generator().manual_seed(0)
    ids = random_ids(tokenizer, 8, 64, generator)
    masked, labels = mask_tokens(ids, 0.25, generator, tokenizer)
    assert masked.shape == ids.shape and labels.shape == ids.shape, "shapes must equal the input's"
    picked = labels != -100
    assert torch.equal(labels[picked], ids[picked]), "a label must be the original id"
    ordinary = (ids < tokenizer.num_ordinary).sum(dim=1)
    expected = (ordinary * 0.25).round().long().clamp(max=int(0.25 * 64))
    assert torch.equal(picked.sum(dim=1), expected), f"picked per row {picked.sum(1).tolist()} != {expected.tolist()}"
    assert torch.equal(masked[~picked], ids[~picked]), "positions not picked must stay as they were"


def check_special_tokens_never_picked():
    """[CLS], [SEP] and [PAD] are never picked, even at a mask rate of 1"""
    tokenizer, generator = byte_tokenizer(), torch.Generator().manual_seed(1)
    ids = random_ids(tokenizer, 4, 32, generator)
    _, labels = mask_tokens(ids, 1.0, generator, tokenizer)
    special = torch.isin(ids, torch.tensor(tokenizer.special_ids))
    assert (labels[special] == -100).all(), "a special token was picked"
    assert (labels[~special] != -100).all(), "at rate 1 every ordinary token is picked"


def check_80_10_10():
    """of the picked tokens ~80% become [MASK], ~10% a random token, ~10% stay (plus the random draws that hit the
    original id), within 2 points"""
    tokenizer, generator = byte_tokenizer(), torch.Generator().manual_seed(2)
    ids = random_ids(tokenizer, 512, 128, generator)
    masked, labels = mask_tokens(ids, 0.15, generator, tokenizer)
    picked = labels != -100
    as_mask = (masked[picked] == tokenizer.mask_id).float().mean().item()
    kept = (masked[picked] == ids[picked]).float().mean().item()
    assert abs(as_mask - 0.8) < 0.02, f"{as_mask:.3f} of picked tokens became [MASK], expected ~0.80"
    assert abs(kept - (0.1 + 0.1 / tokenizer.num_ordinary)) < 0.02, f"{kept:.3f} stayed, expected ~0.10"
    assert (masked < tokenizer.num_ordinary)[picked & (masked != tokenizer.mask_id)].all(), \
        "a random replacement must be an ordinary token"


def check_same_generator_same_masks():
    """the generator alone decides the masks: the same seed gives the same batch"""
    tokenizer = byte_tokenizer()
    ids = random_ids(tokenizer, 4, 32, torch.Generator().manual_seed(3))
    first = mask_tokens(ids, 0.2, torch.Generator().manual_seed(7), tokenizer)
    second = mask_tokens(ids, 0.2, torch.Generator().manual_seed(7), tokenizer)
    assert all(torch.equal(a, b) for a, b in zip(first, second)), "same generator seed, different masks"


def check_sparse_positions_are_the_labelled_ones():
    """sparse_positions keeps every labelled position (and only those when n_kept is None)"""
    labels = torch.full((3, 10), -100)
    labels[0, 2], labels[1, 5], labels[1, 6], labels[2, 9] = 11, 12, 13, 14
    exact = sparse_positions(labels)
    assert sorted(exact.tolist()) == [2, 15, 16, 29], f"positions {sorted(exact.tolist())} != [2, 15, 16, 29]"
    padded = sparse_positions(labels, 6)
    assert len(padded) == 6 and set(exact.tolist()) <= set(padded.tolist()), "n_kept=6 must keep the 4 labelled"


def check_sparse_head_equals_dense_head():
    """the sparse head's loss equals the dense head's (a reference computation) on a tiny model"""
    torch.manual_seed(0)
    tokenizer, generator = byte_tokenizer(), torch.Generator().manual_seed(4)
    model = CramBERT(preset_config("tiny", vocab_size=tokenizer.vocab_size, mlm_head="sparse")).eval()
    ids, labels = mask_tokens(random_ids(tokenizer, 4, 32, generator), 0.25, generator, tokenizer)
    with torch.no_grad():
        _, sparse_loss = model(ids, labels=labels, n_kept=count_kept(4, 32, 0.25))
        dense_logits = model.predict(model.encoder(ids))  # (B, T, V): every position
        dense_loss = F.cross_entropy(dense_logits.flatten(0, 1), labels.flatten(), ignore_index=-100)
    assert torch.allclose(sparse_loss, dense_loss, atol=1e-5), f"sparse {sparse_loss:.6f} != dense {dense_loss:.6f}"


def generated(seed: int) -> dict:
    """What any correct masking gives whatever order it draws its random numbers in: which rows pick how many,
    that specials are never picked and unpicked tokens never change; and the sparse positions exactly."""
    tokenizer, generator = byte_tokenizer(), torch.Generator().manual_seed(seed)
    ids = random_ids(tokenizer, 6, 48, generator)
    rate = 0.15 + 0.1 * (seed % 3)
    masked, labels = mask_tokens(ids, rate, torch.Generator().manual_seed(seed), tokenizer)
    picked = labels != -100
    special = torch.isin(ids, torch.tensor(tokenizer.special_ids))
    own_labels = torch.where(torch.rand(6, 48, generator=generator) < 0.3, ids, torch.full_like(ids, -100))
    return {"picked_per_row": picked.sum(dim=1), "special_picked": (picked & special).any(),
            "unpicked_changed": (masked != ids)[~picked].any(),
            "labels_are_ids": torch.equal(labels[picked], ids[picked]),
            "positions": sparse_positions(own_labels, count_kept(6, 48, 0.35)), "exact": sparse_positions(own_labels)}


def experiment(seed: int) -> dict:
    """The tiny encoder pretrained on Wikipedia for 1,500 steps (course/pretrain.py): its held-out loss over the
    unigram line's."""
    return pretrain(seed)
