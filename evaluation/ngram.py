"""
A count-based language model over token files: interpolated Kneser-Ney n-grams, counted with numpy.

blimp.py fits one on a prepared folder's training tokens (the model's own tokenisation) and scores BLiMP's
sentences with it by the chain rule: the baseline that says whether an encoder learned more than counts.
"""
import math
from dataclasses import dataclass

import numpy as np

from data.loader import train_token_files
from data.tokenizer import Tokenizer


def window_keys(stream: np.ndarray, order: int, radix: int) -> np.ndarray:
    """Every `order` consecutive ids of stream as one int64, t0 * radix^(order-1) + ... + t_last: n-grams sort
    by their context first, and a prefix or suffix is one integer division or modulo away."""
    stream = np.asarray(stream, dtype=np.int64)
    keys = np.zeros(max(len(stream) - order + 1, 0), dtype=np.int64)
    for j in range(order):
        keys = keys * radix + stream[j:len(stream) - order + 1 + j]
    return keys


def lookup(sorted_keys: np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(found, index) of each query in a sorted array; index is meaningless where not found."""
    index = np.minimum(np.searchsorted(sorted_keys, queries), len(sorted_keys) - 1)
    return sorted_keys[index] == queries, index


@dataclass
class NgramLevel:
    """The counts of one order k: every k-gram seen, and per context (its first k-1 ids) their sum and number."""
    keys: np.ndarray  # sorted k-gram keys (window_keys)
    counts: np.ndarray  # c_k of each: raw counts at the top order, continuation counts below
    context_keys: np.ndarray  # sorted distinct contexts (keys // radix)
    context_totals: np.ndarray  # c_k(h): the sum of counts after each context
    context_types: np.ndarray  # N(h •): how many distinct ids follow each context
    discount: float  # D_k = n1 / (n1 + 2 n2), Ney et al. 1994's estimate from the k-grams counted once and twice


def ngram_level(keys: np.ndarray, counts: np.ndarray, radix: int) -> NgramLevel:
    contexts = keys // radix  # sorted too: keys sort by context first
    context_keys, starts = np.unique(contexts, return_index=True)
    n1, n2 = int(np.sum(counts == 1)), int(np.sum(counts == 2))
    discount = n1 / (n1 + 2 * n2) if n1 else 0.5  # nothing seen once (a tiny corpus): D = 0 would leave no mass
    return NgramLevel(keys, counts, context_keys, np.add.reduceat(counts, starts),
                      np.diff(np.append(starts, len(keys))), discount)


class KneserNey:
    """Interpolated Kneser-Ney (Kneser & Ney 1995; Chen & Goodman 1999, "An Empirical Study of Smoothing
    Techniques for Language Modeling", interpolated KN with one discount per order):

        P_k(w | h) = max(c_k(h w) - D_k, 0) / c_k(h)  +  D_k N(h •) / c_k(h) * P_{k-1}(w | h without its first id)

    c_k is the raw count at the top order and, below it, the continuation count: how many distinct ids precede
    h w. A word frequent after a single context ("Francisco" after "San") is then an unlikely continuation
    of new contexts. P_0 is uniform over the ids; an unseen context passes P_{k-1} through unchanged.
    Kneser-Ney because the authors' own 5-gram baseline is a KenLM model (modified Kneser-Ney, Heafield 2011).
    Counting is numpy on int64 keys: one np.unique over the top order's n-grams, then each lower order from
    the suffixes of the distinct n-grams above it. Measured peak ~50 bytes a training token (~4 GB for 84 M);
    4 M tokens took ~2 s on this 2-core machine under load."""

    def __init__(self, streams: list[np.ndarray], order: int, num_ids: int):
        if order < 1 or num_ids ** order >= 2 ** 63:
            raise ValueError(f"an order-{order} n-gram of {num_ids} ids does not fit one int64 key (order 1 to "
                             f"{int(63 * math.log(2) / math.log(num_ids))} does)")
        self.order, self.num_ids = order, num_ids
        self.num_tokens = sum(len(stream) for stream in streams)
        keys = np.concatenate([window_keys(stream, order, num_ids) for stream in streams])
        if not len(keys):
            raise ValueError(f"{self.num_tokens} training tokens are too few for an order-{order} n-gram")
        keys, counts = np.unique(keys, return_counts=True)
        self.levels = []  # order 1 first
        for k in range(order, 0, -1):
            self.levels.insert(0, ngram_level(keys, counts, num_ids))
            if k > 1:  # continuation counts of the (k-1)-grams: distinct k-grams ending in each
                keys, counts = np.unique(keys % num_ids ** (k - 1), return_counts=True)

    def log_probs(self, contexts: np.ndarray, context_lengths: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """ln P(target | context) for M positions. contexts: (M, order-1) ids, right-aligned (the last column
        is the previous id); context_lengths: (M,) how many of them are real (fewer at a sentence's start)."""
        probabilities = np.full(len(targets), 1.0 / self.num_ids)
        for k, level in enumerate(self.levels, start=1):
            context_keys = np.zeros(len(targets), dtype=np.int64)
            for column in range(self.order - k, self.order - 1):  # the last k-1 ids of each context
                context_keys = context_keys * self.num_ids + contexts[:, column]
            seen_context, at = lookup(level.context_keys, context_keys)
            seen, where = lookup(level.keys, context_keys * self.num_ids + targets)
            counts = np.where(seen, level.counts[where], 0)
            interpolated = (np.maximum(counts - level.discount, 0) + level.discount * level.context_types[at]
                            * probabilities) / level.context_totals[at]
            probabilities = np.where(seen_context & (context_lengths >= k - 1), interpolated, probabilities)
        return np.log(probabilities)

    def sentence_log_probs(self, sentences: list[list[int]], boundary: int) -> np.ndarray:
        """ln P of each sentence by the chain rule, from a boundary id through a closing one (KenLM's <s> ...
        </s>). The training stream's only boundary is the [SEP] that ends each document, so [SEP] plays both."""
        width = self.order - 1
        contexts, lengths, targets, owners = [], [], [], []
        for index, ids in enumerate(sentences):
            sequence = [boundary, *ids, boundary]
            for i in range(1, len(sequence)):
                context = sequence[max(0, i - width):i]
                contexts.append([0] * (width - len(context)) + context)
                lengths.append(len(context))
                targets.append(sequence[i])
                owners.append(index)
        log_probs = self.log_probs(np.array(contexts, dtype=np.int64).reshape(len(targets), width),
                                   np.array(lengths), np.array(targets, dtype=np.int64))
        scores = np.zeros(len(sentences))
        np.add.at(scores, owners, log_probs)
        return scores


def ngram_streams(data_dir: str, tokenizer: Tokenizer, max_tokens: int | None = None) -> list[np.ndarray]:
    """The training token streams of a prepared folder (train.bin, or its parts in order), the first max_tokens
    of them; TokenFile refuses a folder of another tokenizer, so the counts are of the model's own tokens."""
    files = train_token_files(data_dir, tokenizer)
    if not files:
        raise FileNotFoundError(f"{data_dir} holds no training token files (train.bin or train-00000.bin): "
                                f"prepare it with data/prepare.py")
    streams, left = [], max_tokens if max_tokens is not None else sum(file.num_tokens for file in files)
    for file in files:
        if left > 0:
            streams.append(file.tokens[:left])
            left -= len(streams[-1])
    return streams
