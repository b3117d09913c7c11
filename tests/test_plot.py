"""plot.py: reading run logs, the summary table, and the optional plot."""
import importlib.util
import json

import pytest

from plot import main, plot_label_efficiency, plot_runs, read_log, summary_table


def write_log(folder, evals, unigram=7.5):
    folder.mkdir(parents=True)
    records = [{"kind": "config", "unigram_loss": unigram}]
    records += [{"kind": "eval", "step": s, "elapsed": t, "val_loss": v, "unigram_loss": unigram,
                 "unigram_ratio": v / unigram, "bits_per_byte": v / 3} for s, t, v in evals]
    records.append({"kind": "summary", "final_val_loss": evals[-1][2]})
    (folder / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def test_summary_table_reports_the_last_evaluation_against_the_unigram_line(tmp_path):
    write_log(tmp_path / "run_a", [(0, 0.0, 9.0), (100, 60.0, 6.0)])
    write_log(tmp_path / "run_b", [(0, 0.0, 9.0)])
    runs = [read_log(str(tmp_path / "run_a")), read_log(str(tmp_path / "run_b" / "log.jsonl"))]
    assert [run["name"] for run in runs] == ["run_a", "run_b"] and len(runs[0]["evals"]) == 2
    table = summary_table(runs).splitlines()
    assert table[1].split() == ["run_a", "100", "1.0", "6.000", "7.500", "0.800", "2.000"]
    assert table[2].split()[:3] == ["run_b", "0", "0.0"]


def test_plot_is_written_when_matplotlib_is_installed_and_skipped_when_not(tmp_path):
    write_log(tmp_path / "run", [(0, 0.0, 9.0), (10, 30.0, 7.0)])
    written = plot_runs([read_log(str(tmp_path / "run"))], str(tmp_path / "loss.png"))
    has_matplotlib = importlib.util.find_spec("matplotlib") is not None
    assert written == has_matplotlib
    assert (tmp_path / "loss.png").is_file() == has_matplotlib
    if has_matplotlib:
        assert (tmp_path / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_missing_or_broken_log_is_one_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="no log at"):
        main([str(tmp_path / "absent")])
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "log.jsonl").write_text('{"kind": "config"}\nnot json\n')
    with pytest.raises(SystemExit, match=r"log.jsonl:2: not a JSON line"):
        main([str(tmp_path / "bad")])


def test_label_efficiency_plot_is_written_or_skipped(tmp_path):
    curves = {"pretrained": [(100, 60.0, 2.0), (1000, 70.0, 1.0)],
              "random-init": [(100, 55.0, None), (1000, 66.0, 1.5)]}
    written = plot_label_efficiency(curves, str(tmp_path / "labels.png"))
    has_matplotlib = importlib.util.find_spec("matplotlib") is not None
    assert written == has_matplotlib and (tmp_path / "labels.png").is_file() == has_matplotlib
