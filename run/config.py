"""
The settings of a training run: TrainConfig (one field per flag), the two recipes that fill the flags a
command line leaves out, the checks every setting passes before any data is prepared or the clock starts,
and the command line built from them.
"""
import argparse
import math
import os
import sys
import typing
from dataclasses import asdict, dataclass, field, fields

from data.loader import data_identity
from data.prepare import check_vocab_size, default_corpus
from model import PRESETS, SHAPE_FIELDS, preset_config
from run.device import PRECISIONS, resolve_device

MIN_SEQ_LEN, MAX_SEQ_LEN = 8, 2048  # --seq-len range: the position table is built for seq_len rows, and
# attention memory grows with seq_len² (at 2048, scores alone take micro_batch × heads × 16 MiB in fp32)

# --micro-batch-size auto tries cramming's 128 rows first and halves on out-of-memory. It never tries more:
# the batch ramp starts at one micro-batch, so a bigger one would change the recipe, not just the speed.
AUTO_MICRO_BATCH = 128


def rows_or_auto(text: str) -> int | str:
    """--micro-batch-size's type: a number of rows, or "auto"."""
    return "auto" if text == "auto" else int(text)


def keep_minutes(config) -> list[float]:
    """--keep-minutes "0,15,60" as [0.0, 15.0, 60.0], sorted (a ValueError on anything but numbers)."""
    return sorted(float(text) for text in config.keep_minutes.split(",") if text.strip())


def flag(default, help: str, group: str = "", **argparse_options):
    """A TrainConfig field that is also a command-line flag (--field-name): its help text, the flag group it
    starts (if any) and extra argparse options such as choices. The flag's type comes from the annotation unless
    type= is given; a bool defaulting to False is a switch (--resume), one defaulting to True can be turned off
    (--no-batch-ramp), and one defaulting to None (the device decides) can be set either way (--compile, --no-compile)."""
    metadata = {"help": help, "group": group, "options": argparse_options}
    if callable(default):
        return field(default_factory=default, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class TrainConfig:
    data_dir: str = flag("data/cache/default", "folder with the token files (train.bin or train-NNNNN.bin parts, "
                                               "val.bin), prepared from --corpus if missing", group="data")
    corpus: str = flag(default_corpus, "text prepared into --data-dir when it is empty: c4 (English C4, fetched shard by "
                                       "shard, as many shards as the budget needs for --max-passes), wikitext103, or "
                                       "a local file, folder, glob or URL (default $CRAMLM_CORPUS or c4)")
    max_passes: float = flag(2.0, "passes over the prepared corpus the budget may make: c4 is prepared for at most "
                                  "this many, and any corpus repeated more often gets a loud warning (repeating data "
                                  "a couple of times costs little: Muennighoff et al. 2023)")
    seq_len: int = flag(128, "tokens per row, [CLS] included")
    mask_rate: float = flag(0.25, "share of tokens masked and predicted (cramming: 0.25; BERT: 0.15)")
    eval_mask_rate: float = flag(0.25, "masking of the fixed validation set (kept equal across runs to compare losses)")
    max_tokens_per_char: float = flag(0.3, "cramming's data filter for preparing --data-dir: drop documents above "
                                           "this ratio (0 = off)")
    tokenizer: str = flag("gpt2", "for preparing --data-dir: gpt2, or a .bpe file (python -m data.prepare --help)")
    vocab_size: int = flag(0, "for preparing --data-dir: train our own BPE with this many ids first "
                              "(0 = use --tokenizer)")
    preset: str = flag("crammed", "tiny, mini, small, base, crammed, or auto: the Chinchilla-optimal size for --hours "
                                  "on this machine's measured speed (scaling.py)",
                       group="model (sizes and recipe switches; defaults = crammed recipe)", aliases=("--model",))
    model_overrides: dict = field(default_factory=dict)  # ModelConfig fields to change: the MODEL_FLAGS below
    init_from: str = flag("", "start from this checkpoint's weights and config (e.g. grow.py's output)")
    # the budget: the run ends when the first is spent; 0 means "no limit of this kind"
    budget_seconds: float = 24 * 3600.0  # training wall-clock seconds (evaluation excluded): --hours/--minutes/--seconds
    max_steps: int = flag(0, "optimizer-step budget", group="budget (the run ends when the first is spent)")
    max_flops: float = flag(0.0, "training-FLOP budget, as counted by model.flops_per_token")
    stop_after_steps: int = flag(0, "checkpoint and exit after this many steps of this session without ending the "
                                    "schedule (a pause); continue with --resume")
    lr: float = flag(1e-3, "peak learning rate", group="optimisation")
    schedule: str = flag("one-cycle", "budget triangle (crammed), warmup + linear decay by steps (BERT), or constant",
                         choices=("one-cycle", "bert", "constant"))
    peak_at: float = flag(0.75, "one-cycle: where the peak is, as a fraction of the schedule (= of the budget, "
                                 "unless --schedule-from/--schedule-to make the run a piece of a longer schedule)")
    warmup_steps: int = flag(10_000, "bert schedule: warmup steps")
    schedule_steps: int = flag(0, "bert schedule: step at which lr reaches 0 (default: --max-steps)")
    # A run can be one piece of a longer schedule (one-cycle, constant): a small model to be grown stops mid-schedule
    # with --schedule-to, and the grown model continues from there with --schedule-from, with no second warmup.
    schedule_from: float = flag(0.0, "share of one longer schedule already behind this run: lr and batch ramp start "
                                     "there instead of at 0 (a grown model: the small run's --schedule-to, or later)")
    schedule_to: float = flag(1.0, "share of that schedule at which this run ends (a small model to be grown: it "
                                   "stops with the lr still up, and the grown run continues with --schedule-from)")
    rewarm: float = flag(0.0, "after growth (--grow-at, or the start of an --init-from run), ramp the lr from 0 "
                              "back up to the schedule over this share of it (0 = off: the schedule carries on)")
    batch_tokens: int = flag(524_288, "tokens per optimizer step at full batch (4096 rows of 128)")
    micro_batch_size: int | str = flag("auto", "rows per forward/backward pass per device; the rest of --batch-tokens "
                                               f"is gradient accumulation. auto: on CUDA the largest of "
                                               f"{AUTO_MICRO_BATCH}, {AUTO_MICRO_BATCH // 2}, ... that fits in memory "
                                               f"(tried before the clock starts); elsewhere {AUTO_MICRO_BATCH}",
                                       type=rows_or_auto)
    batch_ramp: bool = flag(True, "ramp the batch up from one micro-batch to --batch-tokens over the first "
                                  "--ramp-until of the budget")
    ramp_until: float = flag(0.6, "fraction of the schedule where the batch ramp ends (as --peak-at)")
    weight_decay: float = flag(0.01, "AdamW weight decay on matrices")
    betas: tuple = (0.9, 0.98)  # AdamW's moment decay rates (cramming's)
    eps: float = 1e-12  # AdamW's epsilon
    grad_clip: float = flag(0.5, "max global gradient norm")
    out_dir: str = flag("runs/default", "where ckpt.pt and log.jsonl go",
                        group="evaluation, logging, checkpoints, system")
    eval_interval: float = flag(0.05, "budget fraction between evaluations (also at start and end)")
    eval_rows: int = flag(1024, "rows of val.bin in the fixed validation set")
    log_interval: int = flag(10, "optimizer steps between log lines")
    checkpoint_minutes: float = flag(30.0, "wall-clock minutes between checkpoints")
    blimp_pairs: int = flag(0, "score this many BLiMP minimal pairs per paradigm (blimp.py, word-level PLL) at each "
                               "evaluation and log the accuracy as 'blimp' (0 = off; both recipes: 4, 268 pairs)")
    blimp_dir: str = flag("", "folder of BLiMP's <UID>.jsonl files (default: ../shared/data/blimp beside the repository)")
    keep_minutes: str = flag("", "keep a copy of the checkpoint, evaluated, when the budget clock passes each of "
                                 "these minutes (e.g. 0,15,30,60,120,180 -> ckpt-15min.pt, ...): downstream scores "
                                 "against pretraining compute from one run")
    resume: bool = flag(False, "continue the run in --out-dir from its checkpoint")
    overwrite: bool = flag(False, "start afresh in an --out-dir that holds another run's checkpoint "
                                  "(deletes it and its log, once the new run has passed its checks and starts training)")
    device: str = flag("auto", "auto (cuda, then mps, then cpu), cuda, mps or cpu")
    precision: str = flag("auto", "autocast precision. auto: bf16 on GPUs that have it, fp16 with a gradient scaler on "
                                  "older ones (T4, V100); on a CPU bf16 where its bf16 matmuls measure faster than "
                                  "fp32 (native), else fp32", choices=PRECISIONS)
    compile: bool | None = flag(None, "torch.compile the model (default: on CUDA; on CPU for wall-clock budgets of 5 "
                                      "minutes or more; eager mode, with one log line, if compilation fails)")
    plan: bool = flag(False, "print what the run will do (device, precision, micro-batch, measured tokens/s, tokens "
                             "and passes over the corpus, checkpoints, end time) and exit without training",
                      aliases=("--dry-run",))
    seed: int = flag(0, "seed for weights, data order and masking")
    progress_bar: bool = flag(True, "a tqdm bar of the budget (log lines print either way)")
    policy: str = flag("uniform", "per-example data weights: uniform, or a practical Learning-Law policy (Gu et "
                                  "al. 2024) that drops examples whose loss is far above the desired set's",
                       group="data policy (policy.py) and growth (grow.py)",
                       choices=("uniform", "learning-law"))
    grow_at: float = flag(0.0, "grow the model at this budget fraction (0 = never)")
    grow_to: str = flag("", "preset to grow into (with --grow-at)")
    grow_method: str = flag("ligo", "how to grow (LiGO learns the growth operator; see grow.py)",
                            choices=("ligo", "stack", "net2net", "scratch"))
    ligo_steps: int = flag(100, "LiGO operator-training steps (their time counts against the budget)")


# ModelConfig fields the command line can change (the rest come from --preset): name -> argparse options.
MODEL_FLAGS = {
    "n_layer": dict(type=int, help="override the preset's n_layer"),
    "n_head": dict(type=int, help="override the preset's n_head"),
    "n_embd": dict(type=int, help="override the preset's n_embd"),
    "intermediate_size": dict(type=int, help="override the preset's intermediate_size"),
    "norm_position": dict(choices=("pre", "post"), help="pre-LN (crammed) or post-LN (BERT)"),
    "bias": dict(action=argparse.BooleanOptionalAction, help="biases in linear layers (BERT: on)"),
    "ffn": dict(choices=("glu", "gelu"), help="gated GELU (crammed) or plain GELU (BERT)"),
    "mlm_head": dict(choices=("sparse", "dense"), help="logits at masked positions only, or everywhere"),
    "pos_emb": dict(choices=("sinusoidal", "learned", "rope"), help="scaled sinusoidal (crammed), learned (BERT) or rotary (RoFormer)"),
    "dropout": dict(type=float, help="dropout in pretraining (crammed: 0, BERT: 0.1)"),
    "tie_embeddings": dict(action=argparse.BooleanOptionalAction, help="share input/output embeddings"),
}


# Two recipes, one per kind of machine (README: "Which recipe for which machine"). A recipe fills every
# flag the command line leaves out; `--recipe auto` takes "gpu" when CUDA is present and "cpu" otherwise.
RECIPES = {
    # Cramming's (the TrainConfig defaults): the 16-layer crammed BERT, GPT-2 ids, batches ramped to 512 k tokens.
    "gpu": dict(blimp_pairs=4),
    # Found by measurement on a 2-core CPU (BENCHMARKS.md, "An hour of CPU" and "The recipe re-checked"): a small
    # model on our own 16 k BPE, many small constant-size batches, and a learning rate that peaks early.
    "cpu": dict(preset="laptop", data_dir="data/cache/default-bpe16k", vocab_size=16384, seq_len=128, lr=4e-3,
                peak_at=0.1, batch_tokens=2048, micro_batch_size=16, batch_ramp=False, eval_rows=256, blimp_pairs=4),
}
RECIPE_FIELDS = sorted(set().union(*RECIPES.values()))


# ----------------------------------------------------------------------------------------------------
# Checking the settings before any data is prepared or the clock starts

def max_mask_rate(config: TrainConfig) -> float:
    """Share of positions the sparse head keeps: enough for the training and the validation masking."""
    return max(config.mask_rate, config.eval_mask_rate)


def full_batch_micro_steps(config: TrainConfig, world_size: int) -> int:
    """Micro-steps per process in a full batch (where the batch ramp ends): --batch-tokens in whole micro-batches."""
    return max(1, round(config.batch_tokens / config.seq_len / (config.micro_batch_size * world_size)))


def budget_and_data_errors(config: TrainConfig) -> list[str]:
    """validate_config's checks of the budget and the data settings: one message per problem."""
    errors = []

    def check(ok: bool, message: str):
        if not ok:
            errors.append(message)

    # budgets: NaN and infinity fail too (a NaN passes every comparison written `not x < 0`)
    check(math.isfinite(config.budget_seconds) and config.budget_seconds >= 0,
          f"--hours/--minutes/--seconds gives {config.budget_seconds:g} s: the budget must be a number > 0")
    check(config.max_steps >= 0, f"--max-steps {config.max_steps}: must be >= 1 (0 = no step budget)")
    check(math.isfinite(config.max_flops) and config.max_flops >= 0,
          f"--max-flops {config.max_flops:g}: must be a number > 0 (0 = no FLOP budget)")
    check(errors or config.budget_seconds > 0 or config.max_steps > 0 or config.max_flops > 0,
          "no budget: give --hours/--minutes/--seconds, --max-steps or --max-flops")
    check(config.stop_after_steps >= 0, f"--stop-after-steps {config.stop_after_steps}: must be >= 0")
    # data
    if config.vocab_size:
        try:
            check_vocab_size(config.vocab_size)
        except ValueError as error:
            errors.append(str(error))
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
    return errors


def run_errors(config: TrainConfig) -> list[str]:
    """validate_config's checks of evaluation, checkpoints, resuming and growth: one message per problem."""
    errors = []

    def check(ok: bool, message: str):
        if not ok:
            errors.append(message)

    # evaluation, checkpoints, growth
    check(config.eval_rows >= 1, f"--eval-rows {config.eval_rows}: must be >= 1")
    check(config.log_interval >= 1, f"--log-interval {config.log_interval}: must be >= 1 step")
    check(config.max_passes > 0, f"--max-passes {config.max_passes:g}: must be > 0")
    check(config.blimp_pairs >= 0, f"--blimp-pairs {config.blimp_pairs}: must be >= 0 (0 = off)")
    check(config.checkpoint_minutes > 0, f"--checkpoint-minutes {config.checkpoint_minutes:g}: must be > 0")
    try:
        kept = keep_minutes(config)
    except ValueError:
        kept = [-1.0]
    check(all(math.isfinite(m) and m >= 0 for m in kept),
          f"--keep-minutes {config.keep_minutes!r}: give minutes >= 0 separated by commas, e.g. 0,15,30,60")
    check(not (config.resume and config.overwrite), "--resume and --overwrite contradict each other: pick one")
    check(0 <= config.grow_at < 1, f"--grow-at {config.grow_at:g} is a fraction of the budget: use a value in [0, 1) (0 = never)")
    check(not config.grow_at or config.grow_to, "--grow-at needs --grow-to PRESET")
    check(config.ligo_steps >= 0, f"--ligo-steps {config.ligo_steps}: must be >= 0")
    return errors


def validate_config(config: TrainConfig, world_size: int = 1) -> list[str]:
    """Every setting checked up front. Raises one ValueError with one line per problem, each naming the
    flag and the fix; returns notes to print (how --batch-tokens is rounded)."""
    errors, notes = budget_and_data_errors(config) + run_errors(config), []
    seq_len_ok = MIN_SEQ_LEN <= config.seq_len <= MAX_SEQ_LEN

    def check(ok: bool, message: str):
        if not ok:
            errors.append(message)

    # model
    if config.preset != "auto":
        try:
            preset_config(config.preset, **{"max_seq_len": max(1, config.seq_len), **config.model_overrides})
        except (ValueError, TypeError, ZeroDivisionError) as error:
            errors.append(f"--preset {config.preset} with the size/recipe flags: {error}")
    # optimisation
    check(config.lr > 0, f"--lr {config.lr:g}: the peak learning rate must be > 0")
    # auto picks a divisor of the batch's rows (auto_micro_batch_size), so the smallest micro-batch it can pick is one row
    micro_rows = 1 if config.micro_batch_size == "auto" else config.micro_batch_size
    check(micro_rows >= 1, f"--micro-batch-size {config.micro_batch_size}: must be >= 1 row")
    if micro_rows >= 1 and seq_len_ok:
        micro = micro_rows * config.seq_len * world_size  # tokens in one micro-step on all processes
        detail = (f"one micro-batch (--micro-batch-size {config.micro_batch_size}"
                  f"{' = at least 1 row' if config.micro_batch_size == 'auto' else ''} × --seq-len {config.seq_len}"
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
    check(0 <= config.schedule_from < config.schedule_to <= 1,
          f"--schedule-from {config.schedule_from:g} and --schedule-to {config.schedule_to:g} are shares of one "
          f"schedule: use 0 <= from < to <= 1")
    check(config.schedule != "bert" or (config.schedule_from, config.schedule_to) == (0, 1),
          "--schedule bert counts steps, not budget shares: --schedule-from/--schedule-to need one-cycle or constant")
    check(0 <= config.rewarm < 1, f"--rewarm {config.rewarm:g} is a share of the schedule: use a value in [0, 1)")
    check(config.weight_decay >= 0, f"--weight-decay {config.weight_decay:g}: must be >= 0")
    check(config.grad_clip > 0, f"--grad-clip {config.grad_clip:g}: must be > 0")
    if errors:
        raise ValueError("\nerror: ".join(errors))  # main() prefixes the first line with "error: "
    return notes


RESUME_DATA_SETTINGS = {"data_dir": "--data-dir", "seq_len": "--seq-len", "mask_rate": "--mask-rate",
                        "eval_mask_rate": "--eval-mask-rate", "seed": "--seed", "max_tokens_per_char": "--max-tokens-per-char"}


def check_resume_settings(config: TrainConfig, checkpoint: dict, path: str):
    """Name every data setting that differs from the checkpoint's."""
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


def check_resume_data(config: TrainConfig, checkpoint: dict, path: str):
    """--data-dir must hold the tokens the checkpoint was trained on (its data fingerprint)."""
    stored = checkpoint.get("data_identity")
    if stored is None:
        print(f"warning: {path} is older than data fingerprints: cannot check that {config.data_dir} still holds the "
              f"data it was trained on", file=sys.stderr)
    elif stored != data_identity(config.data_dir):
        raise ValueError(f"cannot --resume {path}: {config.data_dir} holds other tokens than it was trained on (the "
                         f"folder was prepared again, from other text?). Resume on the original data, or start a new "
                         f"run in another --out-dir")


def duration(seconds: float) -> str:
    return f"{seconds / 3600:.3g} h" if seconds >= 3600 else f"{seconds / 60:.3g} min" if seconds >= 60 else f"{seconds:.3g} s"


def describe_budget(config: TrainConfig) -> str:
    """The budget as given: "24 h", "100 steps", or several joined by "or" (the first reached ends the run)."""
    seconds = config.budget_seconds
    return " or ".join(part for part in (duration(seconds) if seconds else "", f"{config.max_steps} steps" if config.max_steps else "",
                                         f"{config.max_flops:.3g} FLOPs" if config.max_flops else "") if part)


# ----------------------------------------------------------------------------------------------------
# Command line

def command_line(description: str = "") -> argparse.ArgumentParser:
    """--recipe, then one flag per TrainConfig field made with flag(), in the groups flag() starts; the model
    group also takes MODEL_FLAGS and the budget group --hours/--minutes/--seconds (budget_seconds). A flag
    that a recipe sets has no argparse default (None): parse_train_args fills it from the recipe."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", choices=("auto", "gpu", "cpu"), default="auto",
                        help="defaults for the flags not given: 'gpu' is cramming's recipe, 'cpu' the one measured "
                             f"for a 2-core CPU ({', '.join(RECIPE_FIELDS)}); auto = gpu when CUDA is available")
    defaults, group, group_of = TrainConfig(), parser, {}
    for f in fields(TrainConfig):
        if "help" not in f.metadata:  # not a flag of its own (budget_seconds, model_overrides, betas, eps)
            continue
        if f.metadata["group"]:
            group = parser.add_argument_group(f.metadata["group"])
        group_of[f.name] = group
        default = None if f.name in RECIPE_FIELDS else getattr(defaults, f.name)
        options = dict(f.metadata["options"])
        names = ["--" + f.name.replace("_", "-"), *options.pop("aliases", ())]
        if bool in (f.type, *typing.get_args(f.type)):
            options["action"] = "store_true" if default is False else argparse.BooleanOptionalAction
        else:
            options.setdefault("type", f.type)
        group.add_argument(*names, dest=f.name, default=default, help=f.metadata["help"], **options)
    for name, options in MODEL_FLAGS.items():
        group_of["preset"].add_argument("--" + name.replace("_", "-"), dest=name, **options)
    clock = group_of["max_steps"].add_mutually_exclusive_group()
    clock.add_argument("--hours", type=float, help="wall-clock training budget (default 24 if no other budget)")
    clock.add_argument("--minutes", type=float, help="the same in minutes")
    clock.add_argument("--seconds", type=float, help="the same in seconds")
    return parser


def parse_train_args(argv=None, description: str = "") -> TrainConfig:
    args = command_line(description).parse_args(argv)
    recipe = args.recipe
    if recipe == "auto":
        recipe = "gpu" if resolve_device(args.device).type == "cuda" else "cpu"
        print(f"recipe: {recipe} ({'CUDA found' if recipe == 'gpu' else 'no CUDA GPU'}); "
              f"{'--recipe cpu' if recipe == 'gpu' else '--recipe gpu'} for the other one")
    for name in RECIPE_FIELDS:  # flags given on the command line win over the recipe
        if getattr(args, name) is None:
            setattr(args, name, RECIPES[recipe].get(name, getattr(TrainConfig(), name)))

    if args.hours is not None or args.minutes is not None or args.seconds is not None:
        budget_seconds = args.hours * 3600 if args.hours is not None else (
            args.minutes * 60 if args.minutes is not None else args.seconds)
    else:
        budget_seconds = 0.0 if (args.max_steps or args.max_flops) else TrainConfig.budget_seconds
    flags = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if "help" in f.metadata}
    model_overrides = {name: getattr(args, name) for name in MODEL_FLAGS if getattr(args, name) is not None}
    if args.preset == "auto":  # the plan picks the shape; the switches stay the recipe's (the CPU recipe: rotary)
        model_overrides = {**recipe_switches(recipe), **model_overrides}
    return TrainConfig(**flags, budget_seconds=budget_seconds, model_overrides=model_overrides)


def recipe_switches(recipe: str) -> dict:
    """The ModelConfig fields the recipe's preset sets beyond its shape (laptop: rotary positions), which
    --preset auto keeps while the plan chooses the layers, width, heads and feed-forward size."""
    preset = RECIPES[recipe].get("preset", TrainConfig.preset)
    return {name: value for name, value in PRESETS[preset].items() if name not in SHAPE_FIELDS}
