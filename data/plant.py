"""
Plant low-value documents in a corpus, for Learning-Law experiments where a reweighting has something to
remove: a share of the training documents is replaced by the same document's words in a random order.

    python -m data.plant --corpus ../shared/data/wiki/enwiki-2015-00.txt.gz --share 0.4 --out data/cache/planted00.txt
    python -m data.prepare --corpus data/cache/planted00.txt --out-dir data/cache/planted00

Why shuffled words: the corpus keeps its words and their frequencies (the unigram line, the tokens per
character, the document lengths all stay), but a shuffled document has no context that predicts a masked
word beyond its frequency, so a model learns nothing from it that helps on real text: the "noisy" data of
Gu et al. 2024 (Sec. 4 perturbs part of its training data the same way), at the scale of real pretraining.
Line breaks stay where they were, so paragraph structure does not give the planted documents away.

The held-out set stays clean and the same as the clean corpus's: data.prepare picks validation documents by a
hash of their text (data/sources.py's is_validation), so only documents it would train on are replaced, and a
shuffle that would hash into validation is drawn again. `OUT.planted.json` lists the planted documents (their
index in the output).
"""
import argparse
import os
import random

from data.files import atomic_path, write_json
from data.prepare import PrepareConfig
from data.sources import is_validation, iter_documents


def shuffle_words(document: str, rng: random.Random) -> str:
    """The document's words (split on whitespace) in a random order, refilled into its original lines."""
    lines = [line.split() for line in document.split("\n")]
    words = [word for line in lines for word in line]
    rng.shuffle(words)
    shuffled, start = [], 0
    for line in lines:
        shuffled.append(" ".join(words[start:start + len(line)]))
        start += len(line)
    return "\n".join(shuffled)


def plant(paths: list[str], out: str, share: float, seed: int = 0,
          val_fraction: float = PrepareConfig.val_fraction) -> dict:
    """Write the documents of `paths` to `out` (one blank line between documents), each training document
    replaced by shuffle_words with probability `share`. Returns counts and the planted indices."""
    if not 0 < share < 1:
        raise ValueError(f"--share must be between 0 and 1, got {share}")
    rng = random.Random(seed)
    planted, count, training = [], 0, 0
    with atomic_path(out, suffix=".txt") as temporary, open(temporary, "w", encoding="utf-8") as f:
        for path in paths:
            for document in iter_documents(path):
                if not is_validation(document, val_fraction):
                    training += 1
                    if rng.random() < share:
                        shuffled = shuffle_words(document, rng)
                        while is_validation(shuffled, val_fraction):  # keep val.bin the clean corpus's
                            shuffled = shuffle_words(document, rng)
                        document = shuffled
                        planted.append(count)
                f.write(("\n\n" if count else "") + document)
                count += 1
        f.write("\n")
    summary = {"documents": count, "training_documents": training, "planted": len(planted),
               "planted_share_of_training": len(planted) / max(training, 1), "share": share, "seed": seed,
               "sources": paths, "planted_indices": planted}
    write_json(out + ".planted.json", summary)
    return summary


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", nargs="+", required=True, help="text files (.txt or .txt.gz), blank-line separated")
    parser.add_argument("--out", required=True, help="the planted corpus, a .txt file for data.prepare --corpus")
    parser.add_argument("--share", type=float, default=0.4, help="probability that a training document is replaced")
    parser.add_argument("--seed", type=int, default=0, help="which documents, and their word orders")
    parser.add_argument("--val-fraction", type=float, default=PrepareConfig.val_fraction,
                        help="data.prepare's --val-fraction (the documents never replaced)")
    args = parser.parse_args(argv)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    summary = plant(args.corpus, args.out, args.share, args.seed, args.val_fraction)
    print(f"{summary['planted']} of {summary['training_documents']} training documents replaced by shuffled words "
          f"({summary['planted_share_of_training']:.1%}); written to {args.out}")


if __name__ == "__main__":
    main()
