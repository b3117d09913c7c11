"""
The short pretraining run several assignments' experiments share: the `tiny` encoder with rotary positions (as the
CPU recipe's `laptop` model has them) trained for a fixed number of optimizer steps (not seconds, so the result is
the same on a slow laptop and a fast one) on a slice of Wikipedia tokenised with a 2,048-token BPE of our own,
measured by its held-out loss as a share of the unigram line
(1.0 = no better than predicting every masked token by its frequency; data/loader.py, reference_metrics).
"""
import gzip
import json
import random
from dataclasses import asdict, replace
from pathlib import Path

from course.kit import ROOT, shared_data
from data.prepare import PrepareConfig, prepare
from data.loader import read_meta
from run.config import TrainConfig
from run.corpus import prepared_tokenizer_settings
from train import train

WORK = ROOT / "runs" / "course"  # runs/ is ignored by git and left out of student copies
WIKI_LINES = 30_000  # lines of shard 00: ~9.6 M characters, 3.1 M training tokens: one pass of the runs below
VOCAB_SIZE = 2048
STEPS = 1500  # ~40 s on one core of the 2-core CPU: 3.1 M tokens, enough to end well below the unigram line


def wiki_data_dir() -> Path:
    """The prepared slice of Wikipedia (prepared once, ~30 s, then reused by every experiment)."""
    out = WORK / f"wiki-{WIKI_LINES}-bpe{VOCAB_SIZE}"
    if (out / "meta.json").is_file():
        return out
    out.mkdir(parents=True, exist_ok=True)
    corpus = WORK / f"wiki-{WIKI_LINES}.txt"
    with gzip.open(shared_data() / "wiki" / "enwiki-2015-00.txt.gz", "rt", encoding="utf-8") as f, \
            open(corpus, "w", encoding="utf-8") as text:
        for _, line in zip(range(WIKI_LINES), f):
            text.write(line)
    prepare(PrepareConfig(corpus=str(corpus), out_dir=str(out), vocab_size=VOCAB_SIZE, val_fraction=0.05,
                          max_tokens_per_char=0, progress=False))  # a 2 k BPE compresses less than that filter wants
    return out


def synthetic_data_dir() -> Path:
    """A prepared folder of short sentences from a small grammar (no real data needed): for checks that train a
    few steps. Prepared once (~2 s) with a 300-token BPE of our own."""
    out = WORK / "synthetic-bpe300"
    if (out / "meta.json").is_file():
        return out
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    subjects, verbs, objects = ["the cat", "a dog", "my friend", "the bird"], ["sees", "likes", "chases"], \
        ["the ball", "a tree", "the house"]
    documents = ["\n".join(f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(objects)}."
                           for _ in range(rng.randint(3, 8))) for _ in range(1500)]
    (WORK / "synthetic.txt").write_text("\n\n".join(documents) + "\n")
    prepare(PrepareConfig(corpus=str(WORK / "synthetic.txt"), out_dir=str(out), vocab_size=300, val_fraction=0.1,
                          progress=False))
    return out


def tiny_config(seed: int, steps: int, name: str, **overrides) -> TrainConfig:
    data_dir = wiki_data_dir()
    settings = TrainConfig(**prepared_tokenizer_settings(read_meta(str(data_dir))), data_dir=str(data_dir),
                           out_dir=str(WORK / f"{name}-seed{seed}"), preset="tiny", seq_len=64, micro_batch_size=32, batch_tokens=2048, budget_seconds=0, max_steps=steps,
                           lr=4e-3, peak_at=0.1, eval_rows=256, eval_interval=1.0, log_interval=50, progress_bar=False,
                           blimp_pairs=0, compile=False, device="cpu", seed=seed, overwrite=True, batch_ramp=False,
                           max_tokens_per_char=0, model_overrides={"pos_emb": "rope"})
    return replace(settings, **overrides)


def pretrain(seed: int, steps: int = STEPS, name: str = "tiny", reuse: bool = False, **overrides) -> dict:
    """Train the tiny encoder for `steps` optimizer steps; returns its last evaluation (val_loss, unigram_ratio,
    bits_per_byte) and where its checkpoint is. reuse: take a finished run of the same settings from an earlier
    call instead of training again (only for experiments whose assignment does not change the training code)."""
    config = tiny_config(seed, steps, name, **overrides)
    log = Path(config.out_dir) / "log.jsonl"
    records = []
    if reuse and log.is_file():
        with open(log) as f:
            records = [json.loads(line) for line in f]
        same = any(r.get("kind") == "config" and r.get("config") == json.loads(json.dumps(asdict(config)))
                   for r in records)
        records = records if same and records[-1].get("kind") == "summary" and records[-1]["finished"] else []
    if not records:
        train(config)
        with open(log) as f:
            records = [json.loads(line) for line in f]
    evaluations = [record for record in records if "val_loss" in record and "unigram_ratio" in record]
    summary = records[-1]
    return {**evaluations[-1], "checkpoint": summary["checkpoint"], "tokens": summary["tokens"]}
