"""
The machinery of the course: which functions an assignment asks for, the student copy with their bodies taken out,
and the grader that runs an assignment's checks and its experiment.

An assignment is one module here, course/aNN_<slug>.py, beside its handout course/NN-<slug>.md. The module holds:
  ASSIGNMENT           an Assignment: the functions the student writes ("file.py:Qualified.name"), the experiment's
                       metric and its time on this machine
  check_*()            unit checks: each raises AssertionError (with why) or returns; run in file order
  generated(seed)      the student's functions on inputs drawn from `seed`: a dict of tensors/numbers/lists, compared
                       with the reference tree's on a seed the student never saw (`check N --reference PATH`)
  experiment(seed)     the short experiment, budgeted in steps or FLOPs (not seconds), so its band holds on any
                       machine; returns a dict holding ASSIGNMENT.metric
The bands are measured with the reference code over several seeds (`python -m course measure N`) and kept in
course/bands.json with the machine and torch version that measured them.

The reference source carries no markers: a student copy is made by parsing each file with `ast` and replacing the
named functions' bodies (docstrings kept) by a `raise NotImplementedError` that names the assignment.
"""
import ast
import contextlib
import importlib
import io
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import textwrap
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import torch

from data.bpe import FILE_HEADER
from data.tokenizer import Tokenizer

COURSE = Path(__file__).resolve().parent
ROOT = COURSE.parent
BANDS_FILE = COURSE / "bands.json"
# What a student copy leaves out: outputs of runs, caches, git's own folder.
NOT_COPIED = {".git", "runs", "__pycache__", ".pytest_cache", "cache", ".data"}


@dataclass(frozen=True)
class Assignment:
    number: int
    slug: str
    title: str
    functions: tuple[str, ...]  # "path/to/file.py:Qualified.name", the bodies the student writes
    metric: str  # the experiment's number compared with its band
    paper: str = ""  # the paper and section the functions implement

    @property
    def handout(self) -> str:
        return f"course/{self.number:02d}-{self.slug}.md"

    @property
    def module(self) -> str:
        return f"course.a{self.number:02d}_{self.slug.replace('-', '_')}"


def shared_data() -> Path:
    """The real data (Wikipedia shards, GLUE, BLiMP): $CRAMLM_DATA, else ../shared/data beside the repository,
    else the folder a student copy was made from recorded (course/data-path.txt)."""
    candidates = [os.environ.get("CRAMLM_DATA"), ROOT.parent / "shared" / "data"]
    recorded = COURSE / "data-path.txt"
    if recorded.is_file():
        candidates.append(recorded.read_text().strip())
    for candidate in candidates:
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    raise CourseError("the experiment needs the shared data folder (wiki/, glue/, blimp/): set CRAMLM_DATA to it")


class CourseError(Exception):
    """Bad input to a course command: printed as one `error:` line."""


# ----------------------------------------------------------------------------------------------------
# Finding the assignments

def assignment_modules(root: Path = ROOT) -> dict[int, str]:
    """Assignment number -> module name, from the files course/aNN_*.py present in `root`."""
    found = {}
    for path in sorted((root / "course").glob("a[0-9][0-9]_*.py")):
        found[int(path.name[1:3])] = f"course.{path.stem}"
    return found


def load(number: int, root: Path = ROOT):
    """The module of assignment `number`, with a clear error when it is unknown or its checks are missing."""
    modules = assignment_modules(root)
    if number not in modules:
        handouts = sorted((root / "course").glob(f"{number:02d}-*.md"))
        if handouts:  # a copy that has the handout but lost the checks
            raise CourseError(f"assignment {number}'s checks (course/a{number:02d}_*.py) are missing from {root}: "
                              f"copy them from the reference repository, or start the assignment again")
        known = ", ".join(str(n) for n in sorted(modules)) or "none"
        raise CourseError(f"no assignment {number}: the assignments are {known} (python -m course list)")
    return importlib.import_module(modules[number])


# ----------------------------------------------------------------------------------------------------
# The student copy: bodies out, through ast (the reference source carries no markers)

def find_function(tree: ast.Module, qualname: str) -> ast.FunctionDef:
    scope, node = tree.body, None
    for part in qualname.split("."):
        node = next((n for n in scope if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.name == part), None)
        if node is None:
            raise CourseError(f"{qualname}: no {part!r} found")
        scope = node.body
    if not isinstance(node, ast.FunctionDef):
        raise CourseError(f"{qualname} is not a function")
    return node


def blank_functions(source: str, qualnames: list[str], message: str) -> str:
    """`source` with each named function's body replaced by `raise NotImplementedError(message)`; its signature,
    decorators and docstring stay. Bodies are cut by line span, so the rest of the file is untouched."""
    tree, lines = ast.parse(source), source.split("\n")
    spans = []
    for qualname in qualnames:
        node = find_function(tree, qualname)
        body = node.body
        has_docstring = isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
            and isinstance(body[0].value.value, str)
        first = body[1] if has_docstring and len(body) > 1 else None if has_docstring else body[0]
        indent = " " * (body[0].col_offset)
        name = qualname.split(".")[-1]
        raise_line = f"{indent}raise NotImplementedError({message.format(function=name)!r})"
        if first is None:  # a docstring alone: add the raise after it
            spans.append((body[0].end_lineno, body[0].end_lineno, raise_line))
        else:
            spans.append((first.lineno - 1, node.end_lineno, raise_line))
    for start, end, replacement in sorted(spans, reverse=True):
        lines[start:end] = [replacement]
    return "\n".join(lines)


def blanked_message(assignment: Assignment) -> str:
    return f"assignment {assignment.number}: {{function}} — see {assignment.handout}"


def start(number: int, out: str, root: Path = ROOT) -> list[str]:
    """Write a student copy of `root` into `out` with assignment `number`'s functions blanked; returns them."""
    assignment = load(number, root).ASSIGNMENT
    out_path = Path(out).resolve()
    if out_path.exists() and (not out_path.is_dir() or any(out_path.iterdir())):
        raise CourseError(f"{out} exists and is not an empty folder: nothing was written; choose a new folder")
    if out_path == root or root in out_path.parents:
        raise CourseError(f"{out} is inside the repository {root}: choose a folder outside it")
    by_file = {}
    for spec in assignment.functions:
        path, qualname = spec.split(":")
        by_file.setdefault(path, []).append(qualname)
    blanked = {path: blank_functions((root / path).read_text(), names, blanked_message(assignment))
               for path, names in by_file.items()}  # all parsed before anything is written
    shutil.copytree(root, out_path, dirs_exist_ok=True,
                    ignore=lambda folder, names: [n for n in names if n in NOT_COPIED or n.endswith((".pt", ".pyc"))])
    for path, source in blanked.items():
        (out_path / path).write_text(source)
    if (ROOT.parent / "shared" / "data").is_dir():  # so that a copy made anywhere finds the data
        (out_path / "course" / "data-path.txt").write_text(str((ROOT.parent / "shared" / "data").resolve()) + "\n")
    return list(assignment.functions)


# ----------------------------------------------------------------------------------------------------
# Grading

@dataclass
class Result:
    name: str
    passed: bool
    why: str = ""
    details: dict = field(default_factory=dict)


def failure_reason(error: BaseException) -> str:
    if isinstance(error, NotImplementedError):
        return f"not implemented ({error})"
    if isinstance(error, AssertionError):
        return str(error) or "assertion failed: " + traceback.format_exception(error)[-2].strip().splitlines()[0]
    return f"{type(error).__name__}: {error}"


def run_checks(module) -> list[Result]:
    """Every check_* function of the assignment's module, in file order."""
    results = []
    names = [name for name in vars(module) if name.startswith("check_") and callable(getattr(module, name))]
    for name in names:
        check = getattr(module, name)
        summary = (check.__doc__ or "").strip().split("\n")[0]
        try:
            torch.manual_seed(0)
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):  # its own output
                check()
            results.append(Result(name, True, summary))
        except Exception as error:  # noqa: BLE001  a student's code may raise anything: report it, go on
            results.append(Result(name, False, failure_reason(error)))
    return results


def generated_outputs(number: int, seed: int, root: Path = ROOT) -> dict:
    return load(number, root).generated(seed)


def reference_outputs(number: int, seed: int, reference: str) -> dict:
    """The reference tree's outputs on the same generated inputs, computed there in its own process."""
    reference_root = Path(reference).resolve()
    if not (reference_root / "course" / "kit.py").is_file():
        raise CourseError(f"--reference {reference}: not a cramlm repository (no course/kit.py there)")
    out = Path(os.environ.get("TMPDIR", "/tmp")) / f"course-reference-{os.getpid()}-{seed}.pt"
    try:
        done = subprocess.run([sys.executable, "-m", "course", "outputs", str(number), "--seed", str(seed),
                               "--out", str(out)], cwd=reference_root, capture_output=True, text=True)
        if done.returncode != 0:
            raise CourseError(f"the reference in {reference} failed: {done.stderr.strip().splitlines()[-1:]}")
        return torch.load(out, weights_only=True)
    finally:
        out.unlink(missing_ok=True)


def compare(student, reference, path: str = "") -> str:
    """'' when equal within tolerance (rtol 1e-4, atol 1e-5 for floats: thread counts and kernels may differ
    in the last bits), else where the two first differ."""
    if isinstance(reference, dict):
        for key in reference:
            if key not in student:
                return f"{path}{key}: missing"
            why = compare(student[key], reference[key], f"{path}{key}.")
            if why:
                return why
        return ""
    if isinstance(reference, (list, tuple)) and not isinstance(reference, torch.Tensor):
        if len(student) != len(reference):
            return f"{path.rstrip('.')}: length {len(student)} != {len(reference)}"
        for i, (s, r) in enumerate(zip(student, reference)):
            why = compare(s, r, f"{path}{i}.")
            if why:
                return why
        return ""
    s, r = torch.as_tensor(student), torch.as_tensor(reference)
    if s.shape != r.shape:
        return f"{path.rstrip('.')}: shape {tuple(s.shape)} != {tuple(r.shape)}"
    if r.is_floating_point():
        if not torch.allclose(s.double(), r.double(), rtol=1e-4, atol=1e-5, equal_nan=True):
            return f"{path.rstrip('.')}: largest difference {(s.double() - r.double()).abs().max().item():.3g}"
    elif not torch.equal(s, r):
        return f"{path.rstrip('.')}: differs in {(s != r).sum().item()} of {r.numel()} entries"
    return ""


def check_against_reference(number: int, reference: str, seed: int | None = None) -> Result:
    seed = int.from_bytes(os.urandom(4), "little") % 2**31 if seed is None else seed
    expected = reference_outputs(number, seed, reference)
    try:
        got = generated_outputs(number, seed)
    except Exception as error:  # noqa: BLE001
        return Result("reference", False, f"on generated inputs (seed {seed}): {failure_reason(error)}")
    why = compare(got, expected)
    return Result("reference", not why, f"equal to the reference on generated inputs (seed {seed})" if not why
                  else f"differs from the reference on generated inputs (seed {seed}): {why}")


def read_bands() -> dict:
    return json.loads(BANDS_FILE.read_text()) if BANDS_FILE.is_file() else {}


def band_of(number: int) -> dict | None:
    return read_bands().get(str(number))


def within_band(value: float, band: dict) -> tuple[bool, float, float]:
    """mean ± 2 sd over the seeds measured; a deterministic experiment (sd 0) gets a relative 0.1% width."""
    width = max(2 * band["sd"], 1e-3 * abs(band["mean"]))
    low, high = band["mean"] - width, band["mean"] + width
    return low <= value <= high, low, high


def run_experiment(number: int, seed: int = 0) -> Result:
    module = load(number)
    assignment, band = module.ASSIGNMENT, band_of(number)
    start_time = time.perf_counter()
    try:
        measured = module.experiment(seed)
    except Exception as error:  # noqa: BLE001
        return Result("experiment", False, failure_reason(error))
    seconds = time.perf_counter() - start_time
    value = measured[assignment.metric]
    details = {**measured, "seconds": seconds}
    if band is None:
        return Result("experiment", False, f"{assignment.metric} = {value:.4g}: no band measured yet "
                      f"(python -m course measure {number})", details)
    ok, low, high = within_band(value, band)
    return Result("experiment", ok, f"{assignment.metric} = {value:.4g}, band [{low:.4g}, {high:.4g}] "
                  f"(mean ± 2 sd of {len(band['values'])} seeds, {band['machine']})", details)


def machine_name() -> str:
    """This CPU's model name (or the platform's), its cores, and the threads torch uses."""
    name = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        name = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    return f"{name}, {os.cpu_count()} cores, {torch.get_num_threads()} thread(s), torch {torch.__version__}"


def measure_band(number: int, seeds: int) -> dict:
    """Run the experiment with the reference code on seeds 0..seeds-1; store mean, sd, time and the machine in
    course/bands.json and write the band into the handout (between its <!-- band: N --> markers)."""
    if seeds < 3:
        raise CourseError(f"--seeds {seeds}: a band needs at least 3 seeds")
    module = load(number)
    values, seconds = [], []
    for seed in range(seeds):
        start_time = time.perf_counter()
        values.append(float(module.experiment(seed)[module.ASSIGNMENT.metric]))
        seconds.append(time.perf_counter() - start_time)
    band = {"metric": module.ASSIGNMENT.metric, "values": values, "mean": statistics.fmean(values),
            "sd": statistics.stdev(values), "seconds": statistics.fmean(seconds), "machine": machine_name()}
    bands = read_bands()
    bands[str(number)] = band
    BANDS_FILE.write_text(json.dumps(bands, indent=1, sort_keys=True) + "\n")
    write_band_into_handout(number, band)
    return band


def band_paragraph(number: int, band: dict) -> str:
    _, low, high = within_band(band["mean"], band)
    values = ", ".join(f"{value:.4g}" for value in band["values"])
    return (f"**Expected result:** `{band['metric']}` in **[{low:.4g}, {high:.4g}]**: the mean {band['mean']:.4g} "
            f"± 2 sd "
            f"of {len(band['values'])} seeds of the reference code ({values}), measured on {band['machine']}. "
            f"`python -m course check {number}` runs seed 0 and compares with this band. **Time:** "
            f"{band['seconds']:.0f} s a seed on that machine (a first run also prepares its data once); on a small GPU "
            f"(a Colab T4) we estimate about the same, since models this small are bound by Python, not arithmetic "
            f"(an estimate, not measured).")


def write_band_into_handout(number: int, band: dict):
    path = ROOT / load(number).ASSIGNMENT.handout
    text = path.read_text()
    replacement = f"<!-- band: {number} -->\n{textwrap.fill(band_paragraph(number, band), 116)}\n<!-- /band -->"
    written = re.compile(rf"<!-- band: {number} -->\n.*?<!-- /band -->", re.S)  # a band written before
    marker = re.compile(rf"<!-- band: {number} -->")  # only the marker: the first time
    pattern = written if written.search(text) else marker
    if not pattern.search(text):
        raise CourseError(f"{path} has no <!-- band: {number} --> line to write the band under")
    path.write_text(pattern.sub(lambda match: replacement, text, count=1))


def handout_minutes(number: int) -> str:
    band = band_of(number)
    return f"{band['seconds'] / 60:.1f} min" if band else "not measured"


def describe(number: int) -> str:
    assignment = load(number).ASSIGNMENT
    names = ", ".join(re.sub(r"^.*:", "", spec) for spec in assignment.functions)
    return f"{number:2d}  {assignment.title:<44} {names}  [experiment {handout_minutes(number)} on 2 CPU cores]"


def byte_tokenizer() -> Tokenizer:
    """A tokenizer with no merges: ids 0..255 are bytes, then [CLS], [SEP], [MASK], [PAD]. For checks that need
    a vocabulary but no trained BPE."""
    return Tokenizer.from_bpe_text("\n".join([FILE_HEADER] + [bytes([b]).hex() for b in range(256)]) + "\n")
