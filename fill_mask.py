"""
Ask a checkpoint to fill in the blanks: the top-k tokens at each [MASK] of a sentence.

    python fill_mask.py --ckpt runs/laptop/ckpt.pt "Paris is the [MASK] of France." "I [MASK] you."

The checkpoint carries its tokenizer, so this works for GPT-2 ids and for our own BPE alike. train.py
prints the same fill-ins for a few fixed probe sentences at every evaluation.
"""
import argparse
import sys

from model import fill_masks
from run.checkpoint import load_checkpoint, model_from_checkpoint, tokenizer_from_checkpoint


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", required=True, help="a checkpoint written by train.py (or grow.py)")
    parser.add_argument("--top", type=int, default=5, help="how many candidates per blank")
    parser.add_argument("sentences", nargs="+", help='text with one or more "[MASK]"')
    args = parser.parse_args(argv)
    try:
        checkpoint = load_checkpoint(args.ckpt)
        model, tokenizer = model_from_checkpoint(checkpoint), tokenizer_from_checkpoint(checkpoint)
    except (FileNotFoundError, ValueError) as error:
        sys.exit(f"error: {error}")
    if not 1 <= args.top <= tokenizer.num_ordinary:
        sys.exit(f"error: --top {args.top}: must be in [1, {tokenizer.num_ordinary}] (the text ids of {tokenizer.name!r})")
    room = model.config.max_seq_len - 2  # [CLS] and [SEP] take two positions
    for sentence in args.sentences:
        if "[MASK]" not in sentence:
            sys.exit(f'error: {sentence!r} has no "[MASK]" to fill')
        length = len(tokenizer.encode_masked(sentence))
        if length > room:  # cut to fit, a [MASK] past the cut would be dropped without a word
            sys.exit(f"error: {sentence[:40]!r}... is {length} tokens; this model reads "
                     f"at most {room} (its max_seq_len {model.config.max_seq_len}, less [CLS] and [SEP]): shorten it")
        fills = fill_masks(model, tokenizer, sentence, "cpu", args.top)
        print(sentence)
        for number, candidates in enumerate(fills, 1):
            print(f"  [MASK] {number}: " + "  ".join(repr(token) for token in candidates))
    return fills


if __name__ == "__main__":
    main()
