"""
Zero-shot grammar: BLiMP, the Benchmark of Linguistic Minimal Pairs (Warstadt et al. 2020, TACL).

    python blimp.py --ckpt runs/laptop/ckpt.pt --out blimp.json                  # all 67 000 pairs
    python blimp.py --random-init runs/laptop/ckpt.pt                            # the same encoder, untrained
    python blimp.py --ckpt runs/laptop/ckpt.pt --ngram-data data/cache/wiki16k   # beside an n-gram on its tokens
    python blimp.py --ckpt runs/laptop/ckpt.pt --max-pairs 20                    # quick: 20 pairs a paradigm
    python blimp.py --download data/blimp                                        # fetch the files first

BLiMP holds 67 paradigms of 1 000 minimal pairs: two sentences that differ in one grammatical point
("The cats annoy Tim." / "The cats annoys Tim."). A model gets a pair right when it scores the good sentence
strictly higher (a tie counts as wrong); chance is 50%. No training and no labels: it measures what
pretraining alone taught the model about English grammar.

An encoder has no left-to-right probability, so a sentence's score is its pseudo-log-likelihood (Salazar et
al. 2020, "Masked Language Model Scoring"): mask each token in turn and sum log p(true token). Byte-level BPE
splits rare words into pieces, and plain PLL over-rewards them: the later pieces of " gir|affe" are easy to
guess once the earlier ones are visible. PLL-word-l2r (Kauf & Ivanova 2023, "A Better Way to Do Masked
Language Model Scoring") also masks the word's later pieces while scoring a piece: the default, --pll word.
A word here is whitespace-separated: a token begins one when its text begins with a space, or when it opens
the sentence, so punctuation belongs to the word it is attached to ("dog." is one word). Each sentence is
scored with a space before it (--no-leading-space: as written), so its first word is the token it is in running
text, where pretraining saw most sentences begin (encode_sentence says why).

--ngram-data fits a count-based baseline on the training tokens of a prepared folder (ngram.py's KneserNey) and
scores the same tokens of the same pairs: did the encoder learn more than counts? The published references
are the authors' per-paradigm accuracies (models_summary.jsonl: their 5-gram, LSTM, Transformer-XL, GPT-2).
Every average, ours and theirs, is the mean over paradigms (per linguistics_term, and overall), as the
authors average. data/blimp.py reads and checks the files, and fetches them (--download). BLiMP is CC BY 4.0, by Warstadt et al.: https://github.com/alexwarstadt/blimp
"""
import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from data.blimp import (PAIRS_PER_PARADIGM, PARADIGMS, REFERENCE_MODELS, SUMMARY_FILE, BlimpDataError, MinimalPair,
                        blimp_subset, download_blimp, read_blimp, read_references)
from data.files import check_writable, write_json
from data.tokenizer import Tokenizer
from evaluation.finetune import collate
from evaluation.ngram import KneserNey, ngram_streams
from model import CramBERT
from run.checkpoint import encoder_from_file, encoder_shape
from run.device import PRECISIONS, autocast, keep_freed_memory, resolve_device, training_precision

DEFAULT_BLIMP_DIR = (Path(__file__).resolve().parent / ".." / "shared" / "data" / "blimp").resolve()
PLL_VARIANTS = ("word", "plain")


# ----------------------------------------------------------------------------------------------------
# The pairs train.py scores (data/blimp.py reads the files, checks them and fetches them)

def evaluation_pairs(blimp_dir: str, pairs_per_paradigm: int) -> list[MinimalPair]:
    """train.py --blimp-pairs: the subset every evaluation scores, from blimp_dir ("" = DEFAULT_BLIMP_DIR); []
    when 0 pairs are asked for or the files are absent (said once)."""
    if not pairs_per_paradigm:
        return []
    folder = blimp_dir or str(DEFAULT_BLIMP_DIR)
    if blimp_dir and not os.path.isdir(blimp_dir):  # asked for by name: a typo must not cost the run its scores
        raise FileNotFoundError(f"--blimp-dir {blimp_dir} is not a folder: give the folder of BLiMP's .jsonl files "
                                f"(python blimp.py --download DIR), or --blimp-pairs 0 for no grammar score")
    if not os.path.isdir(folder):
        print(f"no BLiMP files in {folder}: evaluations log no grammar score (python blimp.py --download DIR, then "
              f"--blimp-dir DIR)")
        return []
    return blimp_subset(folder, pairs_per_paradigm)


# ----------------------------------------------------------------------------------------------------
# Pseudo-log-likelihood: tokens, masks and batched scoring

def encode_sentence(tokenizer: Tokenizer, sentence: str, max_seq_len: int | None,
                    leading_space: bool = True) -> list[int]:
    """The sentence's ids; an error naming it when the tokenizer loses something (it does not decode back to
    the same text) or when it does not fit the model beside [CLS] and [SEP] (max_seq_len None: no model, the n-gram).

    leading_space: encode " " + sentence, so that the first word is the token it is inside running text ("Who"
    alone is "Wh|o" in our 16 k BPE, " Who" one piece). Pretraining rows start mid-document, where a sentence
    follows ". ", so most sentence-initial words were seen with their space; BLiMP's first words average 1.9 pieces
    without it and 1.5 with it. Chosen on pairs 100-199 of each paradigm, not the 0-99 that BENCHMARKS reports."""
    text = " " + sentence if leading_space else sentence
    ids = tokenizer.encode(text)
    if tokenizer.decode(ids) != text:
        raise BlimpDataError(f"the tokenizer {tokenizer.name} cannot encode {sentence!r}: it decodes back as "
                             f"{tokenizer.decode(ids)!r}")
    if max_seq_len is not None and len(ids) + 2 > max_seq_len:
        raise BlimpDataError(f"{sentence!r} is {len(ids)} tokens: with [CLS] and [SEP] more than the model's "
                             f"max_seq_len {max_seq_len}")
    return ids


def word_starts(tokenizer: Tokenizer, ids: list[int]) -> list[bool]:
    """Whether each token begins a word: it opens the sentence, or its text begins with a space (byte-level
    BPE keeps a word's leading space on its first piece: " gir", "affe")."""
    return [i == 0 or tokenizer.token_bytes(token).startswith(b" ") for i, token in enumerate(ids)]


def masked_positions(starts: list[bool], pll: str = "word") -> list[list[int]]:
    """For each token i of a sentence, the positions hidden while scoring it: i alone (plain PLL), or i and the
    later pieces of its word (PLL-word-l2r: the earlier pieces stay visible, as in a left-to-right reading)."""
    if pll not in PLL_VARIANTS:
        raise ValueError(f"pll {pll!r}: expected one of {PLL_VARIANTS}")
    masks = []
    for i in range(len(starts)):
        end = i + 1
        while pll == "word" and end < len(starts) and not starts[end]:
            end += 1
        masks.append(list(range(i, end)))
    return masks


def masked_copies(tokenizer: Tokenizer, ids: list[int], pll: str) -> tuple[list[list[int]], list[int]]:
    """[CLS] ids [SEP] once per token, that token (and for pll="word" its word's later pieces) replaced by
    [MASK]: the rows, and the position each one scores. Specials are context only, never scored: the model
    saw [CLS] open each row and [SEP] close each document in pretraining (data/loader.py, data/prepare.py)."""
    row = [tokenizer.cls_id, *ids, tokenizer.sep_id]
    copies = []
    for positions in masked_positions(word_starts(tokenizer, ids), pll):
        copy = list(row)
        for position in positions:
            copy[position + 1] = tokenizer.mask_id
        copies.append(copy)
    return copies, list(range(1, len(ids) + 1))


def copy_batches(tokenizer: Tokenizer, encoded: list[list[int]], pll: str, batch_rows: int):
    """(sentence of each row, rows, scored positions, true ids), about batch_rows rows at a time. Sentences go
    in order of length, so a batch's rows have nearly one length and padding costs little."""
    owners, rows, targets, truths = [], [], [], []
    for index in sorted(range(len(encoded)), key=lambda i: len(encoded[i])):
        copies, positions = masked_copies(tokenizer, encoded[index], pll)
        owners += [index] * len(copies)
        rows += copies
        targets += positions
        truths += encoded[index]
        if len(rows) >= batch_rows:
            yield owners, rows, targets, truths
            owners, rows, targets, truths = [], [], [], []
    if rows:
        yield owners, rows, targets, truths


def copy_log_probs(model: CramBERT, tokenizer: Tokenizer, rows, targets, truths, device, precision: str):
    """log p(true token) at the one scored position of each row: (R,) float32."""
    input_ids, attention_mask = collate(rows, device, tokenizer.pad_id)  # (R, T) each
    if len(set(map(len, rows))) == 1:
        attention_mask = None  # no padding: the unmasked attention kernel, ~20% faster on CPU
    targets, truths = torch.tensor(targets, device=device), torch.tensor(truths, device=device)
    with autocast(device, precision):
        hidden = model.encoder(input_ids, attention_mask)  # (R, T, C)
        # The vocabulary head only where a token is scored: one position per row, not R * T (model.py's sparse head).
        logits = model.predict(hidden[torch.arange(len(rows), device=device), targets])  # (R, V)
    log_probs = logits.float()[:, :tokenizer.num_ordinary].log_softmax(-1)  # only text fills a blank, as fill_masks
    return log_probs.gather(1, truths[:, None]).squeeze(1)  # (R,)


@torch.no_grad()
def sentence_scores(model: CramBERT, tokenizer: Tokenizer, sentences: list[str], device, precision: str = "auto",
                    pll: str = "word", batch_rows: int = 1024, progress: bool = False,
                    leading_space: bool = True) -> np.ndarray:
    """Each sentence's pseudo-log-likelihood in nats (float64): the sum over its tokens of log p(token) with the
    token masked (and, for pll="word", its word's later pieces; leading_space: encode_sentence). All masked
    copies of many sentences run as one padded batch of ~batch_rows rows, in eval mode (restored afterwards)
    under the precision's autocast."""
    device = torch.device(device)
    precision = training_precision(device, precision)
    encoded = [encode_sentence(tokenizer, sentence, model.config.max_seq_len, leading_space) for sentence in sentences]
    scores = np.zeros(len(sentences))
    was_training = model.training
    model.eval()
    try:
        with tqdm(total=sum(map(len, encoded)), unit=" copies", desc="blimp", disable=not progress) as bar:
            for owners, rows, targets, truths in copy_batches(tokenizer, encoded, pll, batch_rows):
                log_probs = copy_log_probs(model, tokenizer, rows, targets, truths, device, precision)
                np.add.at(scores, owners, log_probs.double().cpu().numpy())
                bar.update(len(rows))
    finally:
        model.train(was_training)
    return scores


def blimp_accuracy(model: CramBERT, tokenizer: Tokenizer, pairs: list[MinimalPair], device, precision: str = "auto",
                   pll: str = "word", batch_rows: int = 1024) -> float:
    """The share of pairs whose good sentence has the strictly higher PLL (a tie is wrong): one number for a
    training log (blimp_subset(blimp_dir, 5) scores 67 x 5 pairs)."""
    scores = sentence_scores(model, tokenizer, [p.good for p in pairs] + [p.bad for p in pairs], device, precision,
                             pll, batch_rows)
    return float(np.mean(scores[:len(pairs)] > scores[len(pairs):]))


# ----------------------------------------------------------------------------------------------------
# Accuracies and the report

def macro_averages(per_paradigm: dict[str, float], term_of: dict[str, str]) -> dict:
    """{"overall", "terms", "paradigms"}: the mean over paradigms overall and within each linguistics_term."""
    terms = {}
    for uid, accuracy in per_paradigm.items():
        terms.setdefault(term_of[uid], []).append(accuracy)
    return {"overall": float(np.mean(list(per_paradigm.values()))),
            "terms": {term: float(np.mean(values)) for term, values in sorted(terms.items())},
            "paradigms": per_paradigm}


def pair_accuracies(pairs: list[MinimalPair], good: np.ndarray, bad: np.ndarray) -> dict:
    """Accuracy per paradigm, term and overall from the two sentences' scores; a tie counts as wrong."""
    uids = np.array([pair.uid for pair in pairs])
    right = good > bad
    per_paradigm = {uid: float(np.mean(right[uids == uid])) for uid in dict.fromkeys(uids.tolist())}
    averages = macro_averages(per_paradigm, {pair.uid: pair.term for pair in pairs})
    return {**averages, "ties": int(np.sum(good == bad))}


def format_table(columns: dict[str, dict]) -> str:
    """Accuracies in percent: overall, then per term, then per paradigm, one column per scorer."""
    width = max(len(uid) for uid in next(iter(columns.values()))["paradigms"]) + 2

    def line(name, values):
        return f"{name:<{width}}" + "".join(f"{'-' if v is None else f'{100 * v:.1f}':>9}" for v in values)

    lines = [f"{'':<{width}}" + "".join(f"{title:>9}" for title in columns)]
    first = next(iter(columns.values()))
    lines.append(line("overall", [c["overall"] for c in columns.values()]))
    lines += [line(f"  {term}", [c["terms"].get(term) for c in columns.values()]) for term in first["terms"]]
    lines += [line(f"    {uid}", [c["paradigms"].get(uid) for c in columns.values()]) for uid in first["paradigms"]]
    return "\n".join(lines)


def load_encoder(args) -> tuple[CramBERT, Tokenizer]:
    """The checkpoint's model, or (--random-init) a fresh one of a preset (GPT-2's ids) or of a checkpoint's exact
    config and tokenizer, seeded by --seed; a file that is not a usable checkpoint raises ValueError."""
    if args.ckpt:
        return encoder_from_file(args.ckpt)
    shaped, tokenizer = encoder_shape(args.random_init)
    torch.manual_seed(args.seed)
    return CramBERT(shaped.config), tokenizer


def score_model(args, pairs, model, tokenizer, device) -> tuple[dict, dict]:
    """(accuracies, throughput) of the encoder on the pairs; prints the speed and the full set's estimate."""
    sentences = [pair.good for pair in pairs] + [pair.bad for pair in pairs]
    start = time.perf_counter()
    scores = sentence_scores(model, tokenizer, sentences, device, args.precision, args.pll, args.batch_rows,
                             progress=True, leading_space=args.leading_space)
    seconds = time.perf_counter() - start
    copies = sum(len(encode_sentence(tokenizer, sentence, model.config.max_seq_len, args.leading_space))
                 for sentence in sentences)  # one masked copy per token
    full_set = seconds * len(PARADIGMS) * PAIRS_PER_PARADIGM / len(pairs)
    print(f"scored {len(pairs):,} pairs ({copies:,} masked copies) in {seconds:.1f} s: {copies / seconds:,.0f} "
          f"copies/s; all {len(PARADIGMS) * PAIRS_PER_PARADIGM:,} pairs would take ~{full_set / 60:.1f} min here")
    throughput = {"seconds": seconds, "masked_copies": copies, "copies_per_second": copies / seconds,
                  "estimated_full_set_seconds": full_set}
    return pair_accuracies(pairs, scores[:len(pairs)], scores[len(pairs):]), throughput


def score_ngram(args, pairs, tokenizer) -> tuple[dict, dict]:
    """(accuracies, description) of a Kneser-Ney n-gram fitted on --ngram-data's training tokens."""
    start = time.perf_counter()
    streams = ngram_streams(args.ngram_data, tokenizer, args.ngram_max_tokens)
    ngram = KneserNey(streams, args.ngram_order, tokenizer.num_tokens)
    encoded = [encode_sentence(tokenizer, sentence, None, args.leading_space)  # the tokens the encoder scores
               for sentence in [pair.good for pair in pairs] + [pair.bad for pair in pairs]]
    scores = ngram.sentence_log_probs(encoded, tokenizer.sep_id)
    about = {"data": args.ngram_data, "order": args.ngram_order, "tokens": ngram.num_tokens,
             "smoothing": "interpolated Kneser-Ney, one discount per order (n1 / (n1 + 2 n2))",
             "discounts": [level.discount for level in ngram.levels], "boundary": "[SEP] before and after",
             "seconds": time.perf_counter() - start}
    print(f"{args.ngram_order}-gram on {ngram.num_tokens:,} tokens of {args.ngram_data} in {about['seconds']:.0f} s")
    return pair_accuracies(pairs, scores[:len(pairs)], scores[len(pairs):]), about


def download_command(blimp_dir: str):
    checked, failed = download_blimp(blimp_dir)
    print(f"{len(checked)} files read: {sum(n for name, n in checked.items() if name != SUMMARY_FILE):,} pairs")
    if failed:
        sys.exit("\n".join(f"error: {name}: {reason}" for name, reason in failed.items()))
    print(f"BLiMP is in {blimp_dir}: python blimp.py --ckpt CKPT --blimp-dir {blimp_dir}")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # --- what to score ---
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--ckpt", help="cramlm checkpoint written by train.py")
    source.add_argument("--random-init", metavar="PRESET_OR_CKPT", help="no pretraining: a fresh encoder of this "
                        "model.py preset (GPT-2 vocabulary) or of a checkpoint's exact config and tokenizer (its "
                        "weights unused): the level pretraining must beat")
    source.add_argument("--download", metavar="DIR", help="fetch the 67 paradigm files and the authors' summary "
                        "from github.com/alexwarstadt/blimp into DIR (resumable), check that they parse, and exit")
    parser.add_argument("--blimp-dir", default=str(DEFAULT_BLIMP_DIR), help="folder of <UID>.jsonl files")
    parser.add_argument("--skip-missing", action="store_true", help="score the paradigms present when files are "
                        "missing (the averages are then labelled partial); by default that is an error")
    parser.add_argument("--max-pairs", type=int, help="score only the first N pairs (by pairID) of each paradigm, "
                        "for a quick run (default: all 1 000)")
    # --- how the encoder scores ---
    parser.add_argument("--pll", choices=PLL_VARIANTS, default="word", help="word: PLL-word-l2r (Kauf & Ivanova "
                        "2023), also masking a word's later pieces; plain: one token at a time (Salazar et al. 2020)")
    parser.add_argument("--leading-space", action=argparse.BooleanOptionalAction, default=True, help="score \" \" "
                        "+ sentence, so that the first word is the token it is in running text (--no-leading-space: "
                        "the sentence as written, as before)")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto", help="autocast precision (auto: as "
                        "train.py decides for this device: bf16 where native, fp16 on older GPUs, else fp32)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, mps or auto")
    parser.add_argument("--batch-rows", type=int, default=1024, help="masked copies per forward pass")
    parser.add_argument("--seed", type=int, default=0, help="seed of a --random-init encoder's weights")
    # --- the count-based baseline ---
    parser.add_argument("--ngram-data", metavar="DIR", help="a prepared folder (data/prepare.py) of the model's "
                        "tokenizer: fit an interpolated Kneser-Ney n-gram on its training tokens and score it too")
    parser.add_argument("--ngram-order", type=int, default=4, help="n-gram order; 4 is the largest whose keys fit "
                        "an int64 for GPT-2's ids (the authors' 5-gram had 3.1 B words; we have ~40x fewer tokens)")
    parser.add_argument("--ngram-max-tokens", type=int, help="fit on the first N training tokens only (default all; "
                        "counting peaks at ~50 bytes a token: ~4 GB for 84 M)")
    parser.add_argument("--out", help="write every number and every choice as JSON here")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.download:
        return download_command(args.download)
    if (args.max_pairs is not None and args.max_pairs < 1) or args.batch_rows < 1:
        sys.exit("error: --max-pairs and --batch-rows must be at least 1")
    try:
        if args.out:  # checked now, not after scoring every pair
            check_writable(args.out, "--out")
        pairs, missing = read_blimp(args.blimp_dir, args.max_pairs, args.skip_missing)
        references = read_references(args.blimp_dir)
        model, tokenizer = load_encoder(args)
        device = resolve_device(args.device)
        keep_freed_memory(device)
        model.to(device)
        columns = {}
        columns["model"], throughput = score_model(args, pairs, model, tokenizer, device)
        ngram = None
        if args.ngram_data:
            columns["n-gram"], ngram = score_ngram(args, pairs, tokenizer)
    except (ValueError, FileNotFoundError) as error:  # BlimpDataError is a ValueError
        sys.exit(f"error: {error}")
    term_of = {pair.uid: pair.term for pair in pairs}
    for model_key, title in REFERENCE_MODELS.items():
        if references and all(uid in references for uid in term_of):
            columns[title] = macro_averages({uid: references[uid][model_key] for uid in term_of}, term_of)
    print(format_table(columns))
    if missing:
        print(f"partial: {len(missing)} of {len(PARADIGMS)} paradigms missing ({', '.join(missing)})")
    payload = {"results": columns, "pairs": len(pairs), "partial": bool(missing), "missing": missing,
               "ngram": ngram, "throughput": throughput,
               "config": {**vars(args), "precision_used": training_precision(device, args.precision),
                          "ties": "a tie counts as wrong", "averages": "mean over paradigms"}}
    if args.out:
        write_json(args.out, payload)
    return payload


if __name__ == "__main__":
    main()
