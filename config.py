"""
The settings of a training run: TrainConfig (one field per flag), the two recipes that fill the flags a
command line leaves out, the checks every setting passes before any data is prepared or the clock starts,
and the command line built from them.
"""
import argparse
import os
from dataclasses import asdict, dataclass, field

from common import resolve_device
from data.prepare import default_corpus
from grow import grown_config
from model import ModelConfig, preset_config

MIN_SEQ_LEN, MAX_SEQ_LEN = 8, 2048  # --seq-len range: the position table is built for seq_len rows, and
# attention memory grows with seq_len² (at 2048, scores alone take micro_batch × heads × 16 MiB in fp32)


@dataclass
class TrainConfig:
    # --- data ---
    data_dir: str = "data/cache/default"  # prepared train.bin / val.bin (made from `corpus` if missing)
    corpus: str = field(default_factory=default_corpus)  # text to prepare into data_dir on first use
    seq_len: int = 128  # tokens per row, [CLS] included
    mask_rate: float = 0.25  # share of tokens to predict (cramming: 0.25; BERT: 0.15)
    eval_mask_rate: float = 0.25  # validation masking: fixed, so runs with other mask rates stay comparable
    max_tokens_per_char: float = 0.3  # cramming's data filter used when preparing data_dir (0 = off)
    tokenizer: str = "gpt2"  # preparing data_dir: "gpt2" or a .bpe file (ignored when vocab_size > 0)
    vocab_size: int = 0  # preparing data_dir: train our own BPE of this many ids first (data/bpe.py)
    # --- model ---
    preset: str = "crammed"  # a model.PRESETS name, or "auto": the Chinchilla-optimal size for the budget (scaling.py)
    model_overrides: dict = field(default_factory=dict)  # ModelConfig fields to change (sizes, recipe switches)
    init_from: str = ""  # start from this checkpoint's weights and config (e.g. grow.py's output)
    # --- budget: the run ends when the first of these is spent; 0 means "no limit of this kind" ---
    budget_seconds: float = 24 * 3600.0  # training wall-clock seconds (evaluation excluded)
    max_steps: int = 0  # optimizer steps
    max_flops: float = 0.0  # training FLOPs, as counted by model.flops_per_token
    stop_after_steps: int = 0  # checkpoint and exit after this many steps without ending the schedule (pause)
    # --- optimisation ---
    lr: float = 1e-3  # peak learning rate
    schedule: str = "one-cycle"  # "one-cycle": triangle over the budget; "bert": warmup + linear decay by steps; "constant"
    peak_at: float = 0.75  # one-cycle: fraction of the budget at which the learning rate peaks
    warmup_steps: int = 10_000  # bert schedule: linear warmup steps
    schedule_steps: int = 0  # bert schedule: steps at which it reaches 0 (default: max_steps)
    batch_tokens: int = 524_288  # tokens per optimizer step at full batch (4096 rows of 128)
    micro_batch_size: int = 128  # rows per forward/backward on one device; the rest is accumulation
    batch_ramp: bool = True  # grow the batch linearly from one micro-batch to full by `ramp_until`
    ramp_until: float = 0.6  # fraction of the budget at which the batch reaches batch_tokens
    weight_decay: float = 0.01
    betas: tuple = (0.9, 0.98)
    eps: float = 1e-12
    grad_clip: float = 0.5  # max global gradient norm
    # --- evaluation, logging, checkpoints ---
    out_dir: str = "runs/default"  # checkpoint ckpt.pt and log.jsonl
    eval_interval: float = 0.05  # evaluate every this fraction of the budget (and at start and end)
    eval_rows: int = 1024  # rows of val.bin in the fixed validation set
    log_interval: int = 10  # optimizer steps between log lines
    checkpoint_minutes: float = 30.0  # wall-clock minutes between checkpoints
    resume: bool = False  # continue from out_dir/ckpt.pt
    overwrite: bool = False  # start afresh in an out_dir holding another run's checkpoint (deletes it and its log)
    # --- system ---
    device: str = "auto"  # "auto" picks cuda, then mps, then cpu
    compile: bool = False  # torch.compile the model
    seed: int = 0
    progress_bar: bool = True
    # --- data policy (policy.py) and growth (grow.py) ---
    policy: str = "uniform"  # "learning-law": weight each batch's examples by their contribution (Gu et al. 2024)
    grow_at: float = 0.0  # grow the model at this fraction of the budget (0 = never)
    grow_to: str = ""  # preset to grow into
    grow_method: str = "ligo"  # ligo, stack, net2net or scratch (see grow.py)
    ligo_steps: int = 100  # steps that train LiGO's growth operator (their time counts against the budget)


# Two recipes, one per kind of machine (README: "Which recipe for which machine"). A recipe fills every
# flag the command line leaves out; `--recipe auto` takes "gpu" when CUDA is present and "cpu" otherwise.
RECIPES = {
    # Cramming's (the TrainConfig defaults): the 16-layer crammed BERT, GPT-2 ids, batches ramped to 512 k tokens.
    "gpu": {},
    # Found by measurement on a 2-core CPU (BENCHMARKS.md, "An hour of CPU"): a small model on our own
    # 16 k BPE, many small constant-size batches, and a learning rate that peaks early.
    "cpu": dict(preset="laptop", data_dir="data/cache/default-bpe16k", vocab_size=16384, seq_len=128, lr=2e-3,
                peak_at=0.1, batch_tokens=4096, micro_batch_size=32, batch_ramp=False, eval_rows=256),
}
RECIPE_FIELDS = sorted(set().union(*RECIPES.values()))


# ----------------------------------------------------------------------------------------------------
# Checking the settings before any data is prepared or the clock starts

def validate_config(config: TrainConfig, world_size: int = 1) -> list[str]:
    """Every setting checked up front. Raises one ValueError with one line per problem, each naming the
    flag and the fix; returns notes to print (how --batch-tokens is rounded)."""
    errors, notes = [], []

    def check(ok: bool, message: str):
        if not ok:
            errors.append(message)

    # budgets: written `not (x > 0)` so that NaN fails too
    check(not config.budget_seconds < 0, f"--hours/--minutes/--seconds gives {config.budget_seconds:g} s: the budget must be > 0")
    check(config.max_steps >= 0, f"--max-steps {config.max_steps}: must be >= 1 (0 = no step budget)")
    check(not config.max_flops < 0, f"--max-flops {config.max_flops:g}: must be > 0 (0 = no FLOP budget)")
    check(errors or config.budget_seconds > 0 or config.max_steps > 0 or config.max_flops > 0,
          "no budget: give --hours/--minutes/--seconds, --max-steps or --max-flops")
    check(config.stop_after_steps >= 0, f"--stop-after-steps {config.stop_after_steps}: must be >= 0")
    # data
    seq_len_ok = MIN_SEQ_LEN <= config.seq_len <= MAX_SEQ_LEN
    check(seq_len_ok, f"--seq-len {config.seq_len} is outside [{MIN_SEQ_LEN}, {MAX_SEQ_LEN}]: the position table is built "
                      f"for --seq-len positions and attention memory grows with its square; cramming uses 128")
    for flag, rate in (("--mask-rate", config.mask_rate), ("--eval-mask-rate", config.eval_mask_rate)):
        if not 0 < rate < 1:
            errors.append(f"{flag} {rate:g} is outside (0, 1): the share of tokens to predict, e.g. 0.25 (cramming) or 0.15 (BERT)")
        elif seq_len_ok and int(rate * config.seq_len) < 1:
            errors.append(f"{flag} {rate:g} masks no token of a {config.seq_len}-token row: use at least {1 / config.seq_len:.3g} "
                          f"or a longer --seq-len")
    check(config.max_tokens_per_char >= 0, f"--max-tokens-per-char {config.max_tokens_per_char:g}: must be >= 0 (0 = off)")
    # model
    model_config = None
    if config.preset != "auto":
        try:
            model_config = preset_config(config.preset, **{"max_seq_len": max(1, config.seq_len), **config.model_overrides})
        except (ValueError, TypeError, ZeroDivisionError) as error:
            errors.append(f"--preset {config.preset} with the size/recipe flags: {error}")
    # optimisation
    check(config.lr > 0, f"--lr {config.lr:g}: the peak learning rate must be > 0")
    check(config.micro_batch_size >= 1, f"--micro-batch-size {config.micro_batch_size}: must be >= 1 row")
    if config.micro_batch_size >= 1 and seq_len_ok:
        micro = config.micro_batch_size * config.seq_len * world_size  # tokens in one micro-step on all processes
        detail = (f"one micro-batch (--micro-batch-size {config.micro_batch_size} × --seq-len {config.seq_len}"
                  f"{f' × {world_size} processes' if world_size > 1 else ''} = {micro} tokens)")
        if config.batch_tokens < micro:
            errors.append(f"--batch-tokens {config.batch_tokens} is less than {detail}: raise it to at least {micro} "
                          f"or lower --micro-batch-size")
        elif config.batch_tokens % micro:
            notes.append(f"note: --batch-tokens {config.batch_tokens} is not a whole number of micro-batches: rounded to "
                         f"{round(config.batch_tokens / micro) * micro} ({detail})")
    for flag, value in (("--peak-at", config.peak_at), ("--ramp-until", config.ramp_until),
                        ("--eval-interval", config.eval_interval)):
        check(0 < value <= 1, f"{flag} {value:g} is a fraction of the budget: use a value in (0, 1]")
    check(config.warmup_steps >= 0 and config.schedule_steps >= 0, "--warmup-steps and --schedule-steps must be >= 0")
    check(config.schedule != "bert" or config.schedule_steps or config.max_steps,
          "--schedule bert decays over steps: give --schedule-steps (or --max-steps)")
    check(config.weight_decay >= 0, f"--weight-decay {config.weight_decay:g}: must be >= 0")
    check(config.grad_clip > 0, f"--grad-clip {config.grad_clip:g}: must be > 0")
    # evaluation, checkpoints, growth
    check(config.eval_rows >= 1, f"--eval-rows {config.eval_rows}: must be >= 1")
    check(config.log_interval >= 1, f"--log-interval {config.log_interval}: must be >= 1 step")
    check(config.checkpoint_minutes > 0, f"--checkpoint-minutes {config.checkpoint_minutes:g}: must be > 0")
    check(not (config.resume and config.overwrite), "--resume and --overwrite contradict each other: pick one")
    check(0 <= config.grow_at < 1, f"--grow-at {config.grow_at:g} is a fraction of the budget: use a value in [0, 1) (0 = never)")
    check(not config.grow_at or config.grow_to, "--grow-at needs --grow-to PRESET")
    check(config.ligo_steps >= 0, f"--ligo-steps {config.ligo_steps}: must be >= 0")
    if config.grow_at and config.grow_to and model_config is not None and not config.init_from:
        try:  # fail now, not at --grow-at of the budget (an --init-from or auto model is checked once it is known)
            growth_target(config, model_config)
        except ValueError as error:
            errors.append(f"--grow-to {config.grow_to} from --preset {config.preset}: {error}")
    if errors:
        raise ValueError("\nerror: ".join(errors))  # main() prefixes the first line with "error: "
    return notes


RESUME_DATA_SETTINGS = {"data_dir": "--data-dir", "seq_len": "--seq-len", "mask_rate": "--mask-rate",
                        "eval_mask_rate": "--eval-mask-rate", "seed": "--seed", "max_tokens_per_char": "--max-tokens-per-char"}


def check_resume(config: TrainConfig, checkpoint: dict, path: str):
    """A resumed run must read the same data the same way; name every setting that differs."""
    saved, current = checkpoint["train_config"], asdict(config)
    differ = []
    for name, flag in RESUME_DATA_SETTINGS.items():
        value = saved.get(name, current[name])
        same = value == current[name] or (name == "data_dir" and os.path.realpath(value) == os.path.realpath(current[name]))
        if not same:
            differ.append(f"{flag} {current[name]} differs from the checkpoint's {value}")
    if differ:
        raise ValueError(f"cannot --resume {path} with other data settings: {'; '.join(differ)}. Resume with the "
                         f"checkpoint's values, or start a new run in another --out-dir")



def growth_target(config: TrainConfig, small: ModelConfig) -> ModelConfig:
    return grown_config(small, preset_config(config.grow_to))



# ----------------------------------------------------------------------------------------------------
# Command line

def parse_train_args(argv=None, description: str = "") -> TrainConfig:
    recipe_default = TrainConfig()  # a flag that a recipe sets has no argparse default: the recipe fills it
    defaults = argparse.Namespace(**{name: None if name in RECIPE_FIELDS else getattr(recipe_default, name)
                                     for name in asdict(recipe_default)})
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", choices=("auto", "gpu", "cpu"), default="auto",
                        help="defaults for the flags not given: 'gpu' is cramming's recipe, 'cpu' the one measured "
                             f"for a 2-core CPU ({', '.join(RECIPE_FIELDS)}); auto = gpu when CUDA is available")
    data = parser.add_argument_group("data")
    data.add_argument("--data-dir", default=defaults.data_dir, help="folder with train.bin / val.bin")
    data.add_argument("--corpus", default=defaults.corpus,
                      help="text prepared into --data-dir when it is empty: file, folder, glob or URL "
                           "(default $CRAMLM_CORPUS or WikiText-103)")
    data.add_argument("--tokenizer", default=defaults.tokenizer,
                      help="for preparing --data-dir: gpt2, or a .bpe file (python -m data.prepare --help)")
    data.add_argument("--vocab-size", type=int, default=defaults.vocab_size,
                      help="for preparing --data-dir: train our own BPE with this many ids first (0 = use --tokenizer)")
    data.add_argument("--seq-len", type=int, default=defaults.seq_len, help="tokens per row")
    data.add_argument("--mask-rate", type=float, default=defaults.mask_rate, help="share of tokens masked (BERT: 0.15)")
    data.add_argument("--eval-mask-rate", type=float, default=defaults.eval_mask_rate,
                      help="masking of the fixed validation set (kept equal across runs to compare losses)")
    data.add_argument("--max-tokens-per-char", type=float, default=defaults.max_tokens_per_char,
                      help="cramming's data filter for preparing --data-dir: drop documents above this ratio (0 = off)")

    model = parser.add_argument_group("model (sizes and recipe switches; defaults = crammed recipe)")
    model.add_argument("--preset", "--model", default=defaults.preset,
                       help="tiny, mini, small, base, crammed, or auto: the Chinchilla-optimal size for --hours on "
                            "this machine's measured speed (scaling.py)")
    model.add_argument("--init-from", default="", help="start from this checkpoint's weights and config")
    for name in ("n_layer", "n_head", "n_embd", "intermediate_size"):
        model.add_argument("--" + name.replace("_", "-"), type=int, help=f"override the preset's {name}")
    model.add_argument("--norm-position", choices=("pre", "post"), help="pre-LN (crammed) or post-LN (BERT)")
    model.add_argument("--bias", action=argparse.BooleanOptionalAction, help="biases in linear layers (BERT: on)")
    model.add_argument("--ffn", choices=("glu", "gelu"), help="gated GELU (crammed) or plain GELU (BERT)")
    model.add_argument("--mlm-head", choices=("sparse", "dense"), help="logits at masked positions only, or everywhere")
    model.add_argument("--pos-emb", choices=("sinusoidal", "learned"), help="scaled sinusoidal (crammed) or learned")
    model.add_argument("--dropout", type=float, help="dropout in pretraining (crammed: 0, BERT: 0.1)")
    model.add_argument("--tie-embeddings", action=argparse.BooleanOptionalAction, help="share input/output embeddings")

    budget = parser.add_argument_group("budget (the run ends when the first is spent)")
    clock = budget.add_mutually_exclusive_group()
    clock.add_argument("--hours", type=float, help="wall-clock training budget (default 24 if no other budget)")
    clock.add_argument("--minutes", type=float, help="the same in minutes")
    clock.add_argument("--seconds", type=float, help="the same in seconds")
    budget.add_argument("--max-steps", type=int, default=0, help="optimizer-step budget")
    budget.add_argument("--max-flops", type=float, default=0.0, help="training-FLOP budget")
    budget.add_argument("--stop-after-steps", type=int, default=0,
                        help="checkpoint and exit after this many steps of this session; continue with --resume")

    optim = parser.add_argument_group("optimisation")
    optim.add_argument("--lr", type=float, default=defaults.lr, help="peak learning rate")
    optim.add_argument("--schedule", choices=("one-cycle", "bert", "constant"), default=defaults.schedule,
                       help="budget triangle (crammed), warmup + linear decay by steps (BERT), or constant")
    optim.add_argument("--peak-at", type=float, default=defaults.peak_at, help="one-cycle: budget fraction of the peak")
    optim.add_argument("--warmup-steps", type=int, default=defaults.warmup_steps, help="bert schedule: warmup steps")
    optim.add_argument("--schedule-steps", type=int, default=0, help="bert schedule: step at which lr reaches 0")
    optim.add_argument("--batch-tokens", type=int, default=defaults.batch_tokens, help="tokens per step at full batch")
    optim.add_argument("--micro-batch-size", type=int, default=defaults.micro_batch_size, help="rows per forward pass per device")
    optim.add_argument("--batch-ramp", action=argparse.BooleanOptionalAction, default=defaults.batch_ramp,
                       help="ramp the batch up to --batch-tokens over the first --ramp-until of the budget")
    optim.add_argument("--ramp-until", type=float, default=defaults.ramp_until, help="budget fraction where the ramp ends")
    optim.add_argument("--weight-decay", type=float, default=defaults.weight_decay, help="AdamW weight decay on matrices")
    optim.add_argument("--grad-clip", type=float, default=defaults.grad_clip, help="max gradient norm")

    run = parser.add_argument_group("evaluation, logging, checkpoints, system")
    run.add_argument("--out-dir", default=defaults.out_dir, help="where ckpt.pt and log.jsonl go")
    run.add_argument("--eval-interval", type=float, default=defaults.eval_interval, help="budget fraction between evaluations")
    run.add_argument("--eval-rows", type=int, default=defaults.eval_rows, help="rows in the fixed validation set")
    run.add_argument("--log-interval", type=int, default=defaults.log_interval, help="steps between log lines")
    run.add_argument("--checkpoint-minutes", type=float, default=defaults.checkpoint_minutes, help="minutes between checkpoints")
    run.add_argument("--resume", action="store_true", help="continue the run in --out-dir from its checkpoint")
    run.add_argument("--overwrite", action="store_true",
                     help="start afresh in an --out-dir that holds another run's checkpoint (deletes it and its log)")
    run.add_argument("--device", default=defaults.device, help="auto, cuda, mps or cpu")
    run.add_argument("--compile", action="store_true", help="torch.compile the model")
    run.add_argument("--seed", type=int, default=defaults.seed, help="seed for weights, data order and masking")
    run.add_argument("--no-progress-bar", action="store_true", help="no tqdm bar (log lines still print)")
    extensions = parser.add_argument_group("data policy (policy.py) and growth (grow.py)")
    extensions.add_argument("--policy", choices=("uniform", "learning-law"), default=defaults.policy,
                            help="per-example data weights: uniform, or the Learning Law's contribution-based policy")
    extensions.add_argument("--grow-at", type=float, default=0.0, help="grow the model at this budget fraction (0 = never)")
    extensions.add_argument("--grow-to", default="", help="preset to grow into (with --grow-at)")
    extensions.add_argument("--grow-method", choices=("ligo", "stack", "net2net", "scratch"), default=defaults.grow_method,
                            help="how to grow (LiGO learns the growth operator)")
    extensions.add_argument("--ligo-steps", type=int, default=defaults.ligo_steps, help="LiGO operator-training steps")
    args = parser.parse_args(argv)
    recipe = args.recipe
    if recipe == "auto":
        recipe = "gpu" if resolve_device(args.device).type == "cuda" else "cpu"
        print(f"recipe: {recipe} ({'CUDA found' if recipe == 'gpu' else 'no CUDA GPU'}); "
              f"{'--recipe cpu' if recipe == 'gpu' else '--recipe gpu'} for the other one")
    for name in RECIPE_FIELDS:  # flags given on the command line win over the recipe
        if getattr(args, name) is None:
            setattr(args, name, RECIPES[recipe].get(name, getattr(recipe_default, name)))

    if args.hours is not None or args.minutes is not None or args.seconds is not None:
        budget_seconds = args.hours * 3600 if args.hours is not None else (
            args.minutes * 60 if args.minutes is not None else args.seconds)
    else:
        budget_seconds = 0.0 if (args.max_steps or args.max_flops) else defaults.budget_seconds
    switches = {"n_layer": args.n_layer, "n_head": args.n_head, "n_embd": args.n_embd,
                "intermediate_size": args.intermediate_size, "norm_position": args.norm_position,
                "bias": args.bias, "ffn": args.ffn, "mlm_head": args.mlm_head, "pos_emb": args.pos_emb,
                "dropout": args.dropout, "tie_embeddings": args.tie_embeddings}
    return TrainConfig(
        data_dir=args.data_dir, corpus=args.corpus, tokenizer=args.tokenizer, vocab_size=args.vocab_size,
        seq_len=args.seq_len, mask_rate=args.mask_rate,
        eval_mask_rate=args.eval_mask_rate, max_tokens_per_char=args.max_tokens_per_char,
        preset=args.preset, model_overrides={k: v for k, v in switches.items() if v is not None},
        init_from=args.init_from, budget_seconds=budget_seconds, max_steps=args.max_steps, max_flops=args.max_flops,
        stop_after_steps=args.stop_after_steps, lr=args.lr, schedule=args.schedule, peak_at=args.peak_at,
        warmup_steps=args.warmup_steps, schedule_steps=args.schedule_steps, batch_tokens=args.batch_tokens,
        micro_batch_size=args.micro_batch_size, batch_ramp=args.batch_ramp, ramp_until=args.ramp_until,
        weight_decay=args.weight_decay, grad_clip=args.grad_clip, out_dir=args.out_dir,
        eval_interval=args.eval_interval, eval_rows=args.eval_rows, log_interval=args.log_interval,
        checkpoint_minutes=args.checkpoint_minutes, resume=args.resume, overwrite=args.overwrite, device=args.device,
        compile=args.compile, seed=args.seed, progress_bar=not args.no_progress_bar, policy=args.policy,
        grow_at=args.grow_at, grow_to=args.grow_to, grow_method=args.grow_method, ligo_steps=args.ligo_steps)
