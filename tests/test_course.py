"""The course kit cannot rot: for every assignment, the student copy's checks fail on the blanked functions, naming
the assignment, and the reference tree's pass. Plus the machinery itself: the ast blanking, the comparison with the
reference, the bands, and the errors on bad input. (The experiments' bands are re-measured with
`python -m course measure N`, not here: they take minutes.)"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from course.kit import (Assignment, CourseError, assignment_modules, blank_functions, compare, load, run_checks, start,
                        within_band)

REPO = Path(__file__).resolve().parents[1]
NUMBERS = sorted(assignment_modules())


def course(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "course", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600)


def test_there_are_at_least_eight_assignments_each_with_a_handout_and_functions():
    assert len(NUMBERS) >= 8 and NUMBERS == list(range(1, len(NUMBERS) + 1))
    for number in NUMBERS:
        assignment = load(number).ASSIGNMENT
        assert assignment.number == number and 1 <= len(assignment.functions) <= 4
        assert (REPO / assignment.handout).is_file(), assignment.handout
        handout = (REPO / assignment.handout).read_text()
        for spec in assignment.functions:
            assert spec.split(":")[1].split(".")[-1] in handout, f"{assignment.handout} does not name {spec}"


def test_list_prints_one_line_per_assignment_starting_with_its_number():
    done = course("list")
    lines = done.stdout.strip().splitlines()
    assert done.returncode == 0 and [int(line.split()[0]) for line in lines] == NUMBERS


def test_blanking_keeps_signature_and_docstring_and_nothing_else_changes():
    source = ('import math\n\n\ndef keep(x):\n    return x\n\n\nclass K:\n    def method(self, y):\n'
              '        """Doc."""\n        z = y + 1\n        return z\n\n\ndef gone(a,\n         b):\n'
              '    """Doc\n    on two lines."""\n    if a:\n        return b\n    return a\n')
    blanked = blank_functions(source, ["K.method", "gone"], "assignment 9: {function} — see course/09-x.md")
    assert blanked == ('import math\n\n\ndef keep(x):\n    return x\n\n\nclass K:\n    def method(self, y):\n'
                       '        """Doc."""\n        raise NotImplementedError(\'assignment 9: method — see course/09-x.md\')\n'
                       '\n\ndef gone(a,\n         b):\n    """Doc\n    on two lines."""\n'
                       '    raise NotImplementedError(\'assignment 9: gone — see course/09-x.md\')\n')
    with pytest.raises(CourseError, match="nowhere"):
        blank_functions(source, ["nowhere"], "{function}")


def test_the_reference_source_carries_no_solution_markers():
    for path in [*REPO.glob("*.py"), *REPO.glob("data/*.py"), *REPO.glob("run/*.py"), *REPO.glob("evaluation/*.py")]:
        text = path.read_text()
        assert "NotImplementedError(\"assignment" not in text and "BEGIN SOLUTION" not in text, path


@pytest.fixture(scope="module")
def student_checks(tmp_path_factory):
    """Every assignment's student copy, checked: the eight checks run at once (each a process of its own, one
    thread each), since most of their time is starting Python and importing torch."""
    root, running = tmp_path_factory.mktemp("copies"), {}
    for number in NUMBERS:
        start(number, str(root / str(number)))
        running[number] = subprocess.Popen([sys.executable, "-m", "course", "check", str(number), "--fast", "--json"],
                                           cwd=root / str(number), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                           text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    return {number: (process.wait(timeout=600), process.stdout.read()) for number, process in running.items()}


@pytest.mark.parametrize("number", NUMBERS)
def test_student_copy_fails_naming_the_assignment_and_the_reference_passes(number, student_checks):
    returncode, output = student_checks[number]
    report = json.loads(output)
    assert returncode == 1 and not report["passed"]
    failures = [result for result in report["results"] if not result["passed"]]
    assert failures and all(f"assignment {number}:" in result["why"] for result in failures), failures
    assert all(not result["passed"] for result in report["results"]), "a check passed on blanked functions"
    reference = run_checks(load(number))
    assert all(result.passed for result in reference), [r for r in reference if not r.passed]


def test_the_copy_changes_only_the_assignments_functions(tmp_path):
    functions = start(1, str(tmp_path / "copy"))
    assert functions == ["data/bpe.py:count_words", "data/bpe.py:train_bpe"]
    copied = {path.relative_to(tmp_path / "copy") for path in (tmp_path / "copy").rglob("*.py")}
    assert {path.relative_to(REPO) for path in REPO.rglob("*.py") if "runs" not in path.parts} <= copied
    for path in copied:
        if path != Path("data/bpe.py"):
            assert (tmp_path / "copy" / path).read_bytes() == (REPO / path).read_bytes(), path


def test_the_reference_comparison_catches_a_hard_coded_answer(tmp_path):
    start(3, str(tmp_path / "copy"))
    model_py = tmp_path / "copy" / "model.py"
    reference_source = (REPO / "model.py").read_text()
    model_py.write_text(reference_source)  # a student who copied the answer passes ...
    same = course("check", "3", "--fast", "--reference", str(REPO), "--json", cwd=tmp_path / "copy")
    assert json.loads(same.stdout)["passed"], same.stdout
    # ... one whose rotation is off on inputs the fixed checks do not try does not
    model_py.write_text(reference_source.replace("return torch.outer(torch.arange(max_seq_len).float(), inv_freq)",
                                                 "return torch.outer(torch.arange(max_seq_len).float(), inv_freq)"
                                                 " * (1 + 1e-3 * (head_dim == 16))"))
    differs = course("check", "3", "--fast", "--reference", str(REPO), "--json", cwd=tmp_path / "copy")
    results = {r["name"]: r for r in json.loads(differs.stdout)["results"]}
    assert all(results[name]["passed"] for name in results if name != "reference")
    assert not results["reference"]["passed"] and "differs from the reference" in results["reference"]["why"]


def test_compare_reports_where_outputs_differ():
    assert compare({"a": torch.ones(3), "b": [1, 2]}, {"a": torch.ones(3), "b": [1, 2]}) == ""
    assert "a: largest difference" in compare({"a": torch.ones(3) * 1.01}, {"a": torch.ones(3)})
    assert "b.1: differs" in compare({"b": [1, 3]}, {"b": [1, 2]})
    assert "missing" in compare({}, {"a": 1})
    assert "shape" in compare({"a": torch.ones(2)}, {"a": torch.ones(3)})


def test_a_band_is_mean_plus_minus_two_sd_with_a_floor_for_deterministic_experiments():
    assert within_band(1.05, {"mean": 1.0, "sd": 0.03}) == (True, pytest.approx(0.94), pytest.approx(1.06))
    assert not within_band(1.07, {"mean": 1.0, "sd": 0.03})[0]
    assert within_band(2.0015, {"mean": 2.0, "sd": 0.0})[0] and not within_band(2.003, {"mean": 2.0, "sd": 0.0})[0]


def test_every_assignment_has_a_measured_band():
    bands = json.loads((REPO / "course" / "bands.json").read_text())
    for number in NUMBERS:
        band = bands[str(number)]
        assert band["metric"] == load(number).ASSIGNMENT.metric and len(band["values"]) >= 3
        assert band["seconds"] < 600, f"assignment {number}'s experiment takes {band['seconds']:.0f} s"


def test_bad_input_gives_one_clear_error_and_overwrites_nothing(tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    done = course("start", "1", "--out", str(tmp_path / "busy"))
    assert done.returncode != 0 and done.stderr.startswith("error:") and "not an empty folder" in done.stderr
    assert [p.name for p in (tmp_path / "busy").iterdir()] == ["notes.txt"]
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"
    done = course("check", "99")
    assert done.returncode != 0 and "error: no assignment 99" in done.stderr and "Traceback" not in done.stderr
    start(2, str(tmp_path / "copy"))
    (tmp_path / "copy" / "course" / "a02_masking.py").unlink()  # a copy that lost its checks
    done = course("check", "2", cwd=tmp_path / "copy")
    assert done.returncode != 0 and "checks (course/a02_*.py) are missing" in done.stderr
    assert "Traceback" not in done.stderr


def test_an_assignment_is_a_frozen_record():
    assignment = Assignment(number=1, slug="x-y", title="t", functions=("a.py:f",), metric="m")
    assert assignment.handout == "course/01-x-y.md" and assignment.module == "course.a01_x_y"
