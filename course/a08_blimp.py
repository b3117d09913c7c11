"""Assignment 8: BLiMP by pseudo-log-likelihood (course/08-blimp.md)."""
import torch

from blimp import blimp_accuracy, copy_log_probs, masked_copies, masked_positions, sentence_scores
from course.kit import Assignment, byte_tokenizer, shared_data
from course.pretrain import pretrain
from data.blimp import blimp_subset
from model import CramBERT, preset_config
from run.checkpoint import load_checkpoint, model_from_checkpoint, tokenizer_from_checkpoint

ASSIGNMENT = Assignment(
    number=8, slug="blimp", title="BLiMP by pseudo-log-likelihood",
    functions=("blimp.py:masked_positions", "blimp.py:masked_copies", "blimp.py:copy_log_probs"),
    metric="blimp_accuracy",
    paper="Salazar et al. 2020, Sec. 2 (PLL); Kauf & Ivanova 2023 (PLL-word-l2r); Warstadt et al. 2020 (BLiMP)")


def check_masked_positions_by_hand():
    """plain PLL hides one token; word PLL also hides the later pieces of its word"""
    starts = [True, False, False, True, False]
    assert masked_positions(starts, "plain") == [[0], [1], [2], [3], [4]], "plain: each token alone"
    assert masked_positions(starts, "word") == [[0, 1, 2], [1, 2], [2], [3, 4], [4]], \
        "word: the token and the rest of its word"


def check_masked_copies_by_hand():
    """one [CLS] ids [SEP] row per token, the scored positions masked; positions count [CLS] as 0"""
    tokenizer = byte_tokenizer()
    ids = list(b" ab c")  # byte tokens: " ", "a", "b", " ", "c"; words start at the spaces
    rows, positions = masked_copies(tokenizer, ids, "word")
    assert positions == [1, 2, 3, 4, 5], f"scored positions {positions} != [1, 2, 3, 4, 5]"
    M, C, S = tokenizer.mask_id, tokenizer.cls_id, tokenizer.sep_id
    expected_first = [C, M, M, M, 32, 99, S]  # " ab" is one word: its three pieces hidden together
    assert rows[0] == expected_first, f"first row {rows[0]} != {expected_first}"
    assert rows[3] == [C, 32, 97, 98, M, M, S], f"fourth row {rows[3]}"
    assert len(rows) == 5, "one row per token"


def naive_pll(model: CramBERT, tokenizer, ids: list[int], pll: str) -> float:
    """The textbook pseudo-log-likelihood: one full forward pass per masked copy, no batching, no padding."""
    total = 0.0
    rows, positions = masked_copies(tokenizer, ids, pll)
    for row, position, truth in zip(rows, positions, ids):
        with torch.no_grad():
            logits, _ = model(torch.tensor([row]))
        total += logits[0, position, :tokenizer.num_ordinary].float().log_softmax(-1)[truth].item()
    return total


def check_scores_equal_the_textbook_pll():
    """batched, padded scores equal one forward pass per copy (a reference computation) on a tiny model"""
    torch.manual_seed(0)
    tokenizer = byte_tokenizer()
    model = CramBERT(preset_config("tiny", vocab_size=tokenizer.vocab_size, max_seq_len=64)).eval()
    sentences = ["The cat sat.", "Dogs bark.", "Hi"]
    for pll in ("word", "plain"):
        batched = sentence_scores(model, tokenizer, sentences, "cpu", "fp32", pll, batch_rows=16)
        for sentence, score in zip(sentences, batched):
            expected = naive_pll(model, tokenizer, tokenizer.encode(" " + sentence), pll)
            assert abs(score - expected) < 1e-3, f"{pll} PLL of {sentence!r}: {score:.4f} != {expected:.4f}"


def generated(seed: int) -> dict:
    generator = torch.Generator().manual_seed(seed)
    tokenizer = byte_tokenizer()
    starts = (torch.rand(15, generator=generator) < 0.4).tolist()
    starts[0] = True
    ids = torch.randint(32, 127, (9,), generator=generator).tolist()
    rows, positions = masked_copies(tokenizer, ids, "word")
    torch.manual_seed(seed)
    model = CramBERT(preset_config("tiny", vocab_size=tokenizer.vocab_size, max_seq_len=32)).eval()
    with torch.no_grad():
        log_probs = copy_log_probs(model, tokenizer, rows, positions, ids, torch.device("cpu"), "fp32")
    return {"word": masked_positions(starts, "word"), "plain": masked_positions(starts, "plain"), "rows": rows,
            "positions": positions, "log_probs": log_probs}


def experiment(seed: int) -> dict:
    """The tiny encoder after 1,500 steps (course/pretrain.py) scored on 20 BLiMP pairs of each of the 67
    paradigms (1,340 pairs): the share whose grammatical sentence gets the higher PLL."""
    run = pretrain(seed, reuse=True)  # the training code is not this assignment's
    checkpoint = load_checkpoint(run["checkpoint"])
    model, tokenizer = model_from_checkpoint(checkpoint), tokenizer_from_checkpoint(checkpoint)
    pairs = blimp_subset(str(shared_data() / "blimp"), 20)
    return {"blimp_accuracy": blimp_accuracy(model, tokenizer, pairs, "cpu", "fp32"), "pairs": len(pairs),
            "unigram_ratio": run["unigram_ratio"]}
