"""experiments/downstream_curve.py: the curve's rows from a run's log and the result files, on hand-made inputs."""
import json
import os

import pytest

import experiments.downstream_curve as curve
from experiments.downstream_curve import (curve_rows, evaluation_commands, kept_checkpoints, main, markdown_table,
                                          result_path)


def write_run(run_dir, kept_minutes=(0, 15)):
    """A log as train.py writes it: an evaluation, then the kept copy at the same step."""
    os.makedirs(run_dir, exist_ok=True)
    records = [{"kind": "config"}]
    for index, minutes in enumerate(kept_minutes):
        step = 1000 * index
        records.append({"kind": "eval", "step": step, "tokens": 1_024_000 * index, "unigram_ratio": 1.3 - 0.6 * index,
                        "bits_per_byte": 3.2 - 1.5 * index})
        records.append({"kind": "train", "step": step + 1, "loss": 5.0})
        records.append({"kind": "kept", "step": step, "minutes": minutes,
                        "path": os.path.join("elsewhere", f"ckpt-{minutes:g}min.pt")})
    with open(os.path.join(run_dir, "log.jsonl"), "w") as f:
        f.writelines(json.dumps(record) + "\n" for record in records)


def sst2_result(mean, sd, lr):
    return {"results": {"1000": {"tasks": {"sst2": {"pretrained": {"mean": {"accuracy": mean}, "sd": {"accuracy": sd},
                                                                   "chosen_lr": lr}}}}}}


def test_rows_join_the_log_and_the_results_and_leave_gaps_for_missing_ones(tmp_path):
    write_run(tmp_path / "run")
    results = tmp_path / "results"
    results.mkdir()
    (results / "blimp-15.json").write_text(json.dumps({"results": {"model": {"overall": 0.561}}}))
    (results / "probe-0.json").write_text(json.dumps(sst2_result(54.4, 1.5, None)))
    (results / "lpft-15.json").write_text(json.dumps(sst2_result(69.3, 0.9, 3e-4)))
    rows = curve_rows(str(tmp_path / "run"), str(results))
    assert [(r["minutes"], r["step"], r["tokens"]) for r in rows] == [(0, 0, 0), (15, 1000, 1_024_000)]
    assert rows[1]["unigram_ratio"] == pytest.approx(0.7) and rows[1]["bits_per_byte"] == pytest.approx(1.7)
    assert rows[0]["blimp"] is None and rows[1]["blimp"] == pytest.approx(56.1)
    assert rows[0]["probe"] == (54.4, 1.5, None) and rows[1]["probe"] is None and rows[1]["lpft"] == (69.3, 0.9, 3e-4)
    assert rows[1]["path"] == os.path.join(str(tmp_path / "run"), "ckpt-15min.pt")  # beside the log, wherever it was written
    table = markdown_table(rows).splitlines()
    assert table[2] == "| 0 | 0 | 0.0 M | 1.300 | 3.200 | – | 54.4 ± 1.5 | – |"
    assert table[3] == "| 15 | 1,000 | 1.0 M | 0.700 | 1.700 | 56.1 | – | 69.3 ± 0.9 (lr 0.0003) |"


def test_evaluate_asks_only_for_the_missing_results(tmp_path):
    write_run(tmp_path / "run", kept_minutes=(30,))
    (checkpoint,) = kept_checkpoints(str(tmp_path / "run"))
    (tmp_path / "probe-30.json").write_text("{}")
    commands = evaluation_commands(checkpoint, str(tmp_path))
    assert [os.path.basename(c[1]) for c in commands] == ["blimp.py", "glue_eval.py"]
    assert commands[0][-1] == os.path.abspath(result_path(str(tmp_path), "blimp", 30))
    assert "--method" in commands[1] and commands[1][commands[1].index("--method") + 1] == "lp-ft"
    assert commands[0][commands[0].index("--ckpt") + 1] == os.path.abspath(tmp_path / "run" / "ckpt-30min.pt")


def test_a_run_without_kept_checkpoints_is_a_clear_error(tmp_path):
    write_run(tmp_path / "run", kept_minutes=())
    with pytest.raises(SystemExit, match="records no kept checkpoint"):
        main(["--run", str(tmp_path / "run"), "--results", str(tmp_path / "results")])
    with pytest.raises(SystemExit, match="no log at"):
        main(["--run", str(tmp_path / "absent"), "--results", str(tmp_path / "results")])


def test_a_failing_evaluation_stops_with_one_error_line_not_a_traceback(tmp_path, monkeypatch, capsys):
    write_run(tmp_path / "run")
    monkeypatch.setattr(curve, "kept_checkpoints", lambda run: [{"minutes": 0, "path": str(tmp_path / "ckpt-0min.pt")}])
    monkeypatch.setattr(curve.subprocess, "run", lambda command, cwd: type("Done", (), {"returncode": 1})())
    with pytest.raises(SystemExit) as stopped:
        main(["--run", str(tmp_path / "run"), "--results", str(tmp_path / "results"), "--evaluate"])
    assert str(stopped.value).startswith("error: stopped after this command failed:")
