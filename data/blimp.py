"""
BLiMP's files (Warstadt et al. 2020, TACL): its 67 paradigms of 1 000 minimal pairs, reading and checking a folder
of <UID>.jsonl files (errors name the file and line), fixed subsets, the authors' published per-paradigm
accuracies (models_summary.jsonl), and fetching it all from the authors' repository (`blimp.py --download DIR`).
Scoring lives in blimp.py. BLiMP is CC BY 4.0, by Warstadt et al.: https://github.com/alexwarstadt/blimp
"""
import json
from dataclasses import dataclass
from pathlib import Path

from data.fetch import DownloadError, fetch

# The 67 paradigms (the files' UIDs), so that a missing file is noticed rather than silently averaged over.
PARADIGMS = (
    "adjunct_island", "anaphor_gender_agreement", "anaphor_number_agreement", "animate_subject_passive",
    "animate_subject_trans", "causative", "complex_NP_island", "coordinate_structure_constraint_complex_left_branch",
    "coordinate_structure_constraint_object_extraction", "determiner_noun_agreement_1", "determiner_noun_agreement_2",
    "determiner_noun_agreement_irregular_1", "determiner_noun_agreement_irregular_2",
    "determiner_noun_agreement_with_adj_2", "determiner_noun_agreement_with_adj_irregular_1",
    "determiner_noun_agreement_with_adj_irregular_2", "determiner_noun_agreement_with_adjective_1",
    "distractor_agreement_relational_noun", "distractor_agreement_relative_clause", "drop_argument",
    "ellipsis_n_bar_1", "ellipsis_n_bar_2", "existential_there_object_raising", "existential_there_quantifiers_1",
    "existential_there_quantifiers_2", "existential_there_subject_raising", "expletive_it_object_raising",
    "inchoative", "intransitive", "irregular_past_participle_adjectives", "irregular_past_participle_verbs",
    "irregular_plural_subject_verb_agreement_1", "irregular_plural_subject_verb_agreement_2",
    "left_branch_island_echo_question", "left_branch_island_simple_question", "matrix_question_npi_licensor_present",
    "npi_present_1", "npi_present_2", "only_npi_licensor_present", "only_npi_scope", "passive_1", "passive_2",
    "principle_A_c_command", "principle_A_case_1", "principle_A_case_2", "principle_A_domain_1",
    "principle_A_domain_2", "principle_A_domain_3", "principle_A_reconstruction",
    "regular_plural_subject_verb_agreement_1", "regular_plural_subject_verb_agreement_2",
    "sentential_negation_npi_licensor_present", "sentential_negation_npi_scope", "sentential_subject_island",
    "superlative_quantifiers_1", "superlative_quantifiers_2", "tough_vs_raising_1", "tough_vs_raising_2",
    "transitive", "wh_island", "wh_questions_object_gap", "wh_questions_subject_gap",
    "wh_questions_subject_gap_long_distance", "wh_vs_that_no_gap", "wh_vs_that_no_gap_long_distance",
    "wh_vs_that_with_gap", "wh_vs_that_with_gap_long_distance",
)
PAIRS_PER_PARADIGM = 1000
FIELDS = ("sentence_good", "sentence_bad", "UID", "linguistics_term", "field", "pairID")  # what we read of a line
SUMMARY_FILE = "models_summary.jsonl"  # the authors' per-paradigm accuracies, beside the paradigm files
REFERENCE_MODELS = {"ngram": "5-gram", "lstm": "LSTM", "txl": "TXL", "gpt2": "GPT-2"}  # the file's key: a column title
# The authors' repository: paradigm files under data/, the summary under raw_results/summary/.
BLIMP_URL = "https://raw.githubusercontent.com/alexwarstadt/blimp/master"
SUMMARY_URL_PATH = "raw_results/summary/" + SUMMARY_FILE
BLIMP_OFFLINE_HINT = "offline, copy the <UID>.jsonl files into a folder by hand and pass --blimp-dir"


@dataclass(frozen=True)
class MinimalPair:
    uid: str  # the paradigm, e.g. "determiner_noun_agreement_1"
    term: str  # its linguistics_term (13 in the files), e.g. "determiner_noun_agreement"
    pair_id: int  # the pair's number within its paradigm (pairID)
    good: str  # the grammatical sentence
    bad: str  # its ungrammatical twin


class BlimpDataError(ValueError):
    """A BLiMP file that cannot be used, or a sentence that cannot be scored; the message names it."""


def read_jsonl(path) -> list[tuple[int, dict]]:
    """(line number, object) for each non-blank line; a line that is not a JSON object is an error naming it."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = list(enumerate(f, start=1))
    except UnicodeDecodeError as error:
        raise BlimpDataError(f"{path} is not UTF-8 text ({error.reason})") from None
    rows = []
    for number, line in lines:
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise BlimpDataError(f"{path}:{number}: not a JSON line ({error.msg})") from None
        if not isinstance(row, dict):
            raise BlimpDataError(f"{path}:{number}: a JSON {type(row).__name__}, expected an object")
        rows.append((number, row))
    return rows


def read_paradigm(path, uid: str) -> list[MinimalPair]:
    """One paradigm's pairs in pairID order; anything unusable is an error naming the file and line."""
    pairs = []
    for number, row in read_jsonl(path):
        missing = [name for name in FIELDS if name not in row]
        if missing:
            raise BlimpDataError(f"{path}:{number}: no field {', '.join(missing)}")
        if row["UID"] != uid:
            raise BlimpDataError(f"{path}:{number}: UID {row['UID']!r} in the file of paradigm {uid!r}")
        if not all(isinstance(row[name], str) and row[name].strip() for name in ("sentence_good", "sentence_bad")):
            raise BlimpDataError(f"{path}:{number}: sentence_good and sentence_bad must be non-empty text")
        try:
            pair_id = int(row["pairID"])
        except (TypeError, ValueError):
            raise BlimpDataError(f"{path}:{number}: pairID {row['pairID']!r} is not a whole number") from None
        pairs.append(MinimalPair(uid, str(row["linguistics_term"]), pair_id, row["sentence_good"], row["sentence_bad"]))
    if not pairs:
        raise BlimpDataError(f"{path} holds no pairs")
    return sorted(pairs, key=lambda pair: pair.pair_id)


def read_blimp(blimp_dir, max_pairs: int | None = None, skip_missing: bool = False,
               paradigms=PARADIGMS) -> tuple[list[MinimalPair], list[str]]:
    """(the first max_pairs pairs by pairID of every paradigm, the paradigms whose file is missing). A missing
    file is an error unless skip_missing: an average over fewer paradigms is another number."""
    missing = [uid for uid in paradigms if not (Path(blimp_dir) / f"{uid}.jsonl").is_file()]
    if missing and not skip_missing:
        shown = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
        raise FileNotFoundError(f"{blimp_dir}: {len(missing)} of the {len(paradigms)} paradigm files are missing "
                                f"({shown}): fetch them with --download DIR, or pass --skip-missing to score the "
                                f"others (the average is then partial)")
    pairs = []
    for uid in paradigms:
        if uid not in missing:
            pairs += read_paradigm(Path(blimp_dir) / f"{uid}.jsonl", uid)[:max_pairs]
    if not pairs:
        raise FileNotFoundError(f"{blimp_dir} holds none of BLiMP's paradigm files (<UID>.jsonl)")
    return pairs, missing


def blimp_subset(blimp_dir, pairs_per_paradigm: int = 5) -> list[MinimalPair]:
    """The first pairs_per_paradigm pairs (by pairID) of every paradigm present: a fixed set, the same at every
    call, small enough to score at each of train.py's evaluations (blimp_accuracy)."""
    return read_blimp(blimp_dir, pairs_per_paradigm, skip_missing=True)[0]


def read_references(blimp_dir) -> dict[str, dict[str, float]]:
    """{paradigm: {"ngram": accuracy, "lstm": ..., "txl": ..., "gpt2": ...}} from the authors' summary file;
    {} when the folder has none. Its own "overall" lines are skipped: we average as we do for our models."""
    path = Path(blimp_dir) / SUMMARY_FILE
    if not path.is_file():
        return {}
    references = {}
    for number, row in read_jsonl(path):
        if row.get("UID") == "overall":
            continue
        if "UID" not in row or not all(isinstance(row.get(model), (int, float)) for model in REFERENCE_MODELS):
            raise BlimpDataError(f"{path}:{number}: expected a UID and the accuracies {', '.join(REFERENCE_MODELS)}")
        references[row["UID"]] = {model: float(row[model]) for model in REFERENCE_MODELS}
    return references


def download_blimp(blimp_dir, base_url: str = BLIMP_URL, paradigms=PARADIGMS,
                   progress: bool = True) -> tuple[dict, dict]:
    """Fetch the paradigm files and the summary into blimp_dir (the layout --blimp-dir reads) and read each with
    the readers scoring uses. Returns ({file: pairs or references read}, {file: error}); one failure does not
    stop the others. Files already there are kept, an interrupted one resumes (data/fetch.py), and a complete
    file that does not parse is deleted so that the next run fetches it again."""
    targets = [(f"{uid}.jsonl", f"data/{uid}.jsonl", lambda path, uid=uid: len(read_paradigm(path, uid)))
               for uid in paradigms]
    targets.append((SUMMARY_FILE, SUMMARY_URL_PATH, lambda path: len(read_references(blimp_dir))))
    checked, failed = {}, {}
    for name, url_path, check in targets:
        path = Path(blimp_dir) / name
        try:
            fetch(f"{base_url}/{url_path}", str(path), progress=progress, offline_hint=BLIMP_OFFLINE_HINT)
            checked[name] = check(path)
        except DownloadError as error:
            failed[name] = str(error)
        except BlimpDataError as error:
            path.unlink()
            failed[name] = f"{error}; deleted, run --download again"
    return checked, failed
