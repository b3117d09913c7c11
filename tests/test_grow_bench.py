import json

import pytest

from experiments import grow_bench
from run.config import TrainConfig
from experiments.grow_bench import COLUMNS, BenchConfig, bench, bench_seeds, flops_to_reach, print_table
from train import learning_rate


def test_flops_to_reach_interpolates_a_loss_curve():
    # Crossing points of a loss curve: linear interpolation between evaluations, None if never reached.
    curve = [(0.0, 5.0), (10.0, 3.0), (20.0, 2.0)]
    assert flops_to_reach(curve, 4.0) == 5.0 and flops_to_reach(curve, 2.5) == 15.0
    assert flops_to_reach(curve, 1.0) is None and flops_to_reach(curve, 6.0) == 0.0


def test_bench_reports_both_accountings(tiny_corpus, tmp_path, capsys):
    # The whole comparison at toy size: every method's row carries both accountings, which differ by exactly
    # the small model's share of the budget; a LiGO run per operator step count, Q/K/V separate by default.
    config = BenchConfig(data_dir=str(tiny_corpus), out_dir=str(tmp_path / "bench"), small="tiny",
                         small_overrides={"n_head": 1, "n_layer": 1}, big="tiny",
                         big_overrides={"n_layer": 2, "n_embd": 128, "n_head": 2, "intermediate_size": 256},
                         big_flops=1.5e10, small_fraction=0.3, methods=("stack", "ligo"), ligo_steps=(2, 1),
                         ligo_rows=2, seq_len=32, batch_tokens=128, micro_batch_size=4, eval_rows=8,
                         eval_interval=0.5, seed=3, grown_lr=1.5e-3)
    results = bench(config)
    assert set(results["methods"]) == {"stack", "ligo-2", "ligo-1"} and not results["config"]["shared_qkv"]
    share = results["small_cost"]["flops"] / results["curves"]["scratch"][-1]["flops"]
    assert 0.25 < share < 0.35
    assert results["curves"]["ligo-2"][0]["flops"] > results["curves"]["ligo-1"][0]["flops"]  # operator steps count
    for name, row in results["methods"].items():
        if row["flops_saved"] is not None:
            assert row["flops_saved_small_given"] == pytest.approx(row["flops_saved"] + share)
        curve = results["curves"][name]  # growth, then evaluations every half of the budget
        assert row["rise_after_growth"] == pytest.approx(curve[1]["val_loss"] - curve[0]["val_loss"])
        steps = [after["val_loss"] - before["val_loss"] for before, after in zip(curve, curve[1:])]
        assert row["largest_rise"] == pytest.approx(max(steps)) and row["largest_rise"] >= row["rise_after_growth"]
    scratch = results["curves"]["scratch"][-1]
    assert results["scratch_ratio_to_unigram"] == pytest.approx(scratch["val_loss"] / scratch["unigram_loss"])
    printed = capsys.readouterr().out
    assert "FLOPs saved (small given)" in printed and "x the unigram line" in printed
    # One one-cycle schedule (lr 3e-3, peak at 0.1) through growth: the small run stops at 0.3 of it with the lr still
    # up; each grown run starts where the small run and its operator left it and only decays from there, at the
    # scale of its own peak (--grown-lr 1.5e-3; scratch keeps --lr).
    small = run_config(tmp_path / "bench" / "small")
    assert small.schedule_to == 0.3 and learning_rate(small, 1.0, 0) == pytest.approx(3e-3 * 0.7 / 0.9)
    for name in ("stack", "ligo-2"):
        grown = run_config(tmp_path / "bench" / name)
        start = results["curves"][name][0]["flops"] / config.big_flops  # the small model's and the operator's share
        assert grown.schedule_from == pytest.approx(start) and start >= 0.3
        assert learning_rate(grown, 0.0, 0) == pytest.approx(1.5e-3 * (1 - start) / 0.9)  # no warmup from 0
    assert run_config(tmp_path / "bench" / "scratch").lr == 3e-3


def run_config(run_dir) -> TrainConfig:
    """The settings a train.py run logged on its first line."""
    with open(run_dir / "log.jsonl") as f:
        return TrainConfig(**json.loads(f.readline())["config"])


def test_bench_over_seeds_tables_mean_and_spread(monkeypatch, tmp_path):
    # bench_seeds runs bench once per seed in a folder of its own and keeps every seed's value per method;
    # a seed with results already on disk is read instead.
    calls = []

    def fake_bench(config):
        calls.append((config.seed, config.out_dir))
        return {"scratch_final_loss": 5.0 + config.seed,
                "methods": {"ligo-100": {key: 0.1 * config.seed for key, _, _ in COLUMNS}}}
    monkeypatch.setattr(grow_bench, "bench", fake_bench)
    summary = bench_seeds(BenchConfig(out_dir=str(tmp_path)), [0, 1, 2])
    assert calls == [(seed, str(tmp_path / f"seed-{seed}")) for seed in (0, 1, 2)]
    assert summary["rows"]["scratch"]["final_loss"] == [5.0, 6.0, 7.0]
    assert summary["rows"]["ligo-100"]["flops_saved"] == pytest.approx([0.0, 0.1, 0.2])
    with open(tmp_path / "summary.json") as f:
        assert json.load(f)["seeds"] == [0, 1, 2]
    (tmp_path / "seed-1").mkdir()
    with open(tmp_path / "seed-1" / "results.json", "w") as f:  # seed 1 ran elsewhere: read, not run again
        json.dump({"scratch_final_loss": 9.0, "methods": {"ligo-100": {key: 0.5 for key, _, _ in COLUMNS}}}, f)
    calls.clear()
    again = bench_seeds(BenchConfig(out_dir=str(tmp_path)), [0, 1, 2])
    assert [seed for seed, _ in calls] == [0, 2] and again["rows"]["scratch"]["final_loss"] == [5.0, 9.0, 7.0]


def test_table_cells_are_mean_and_spread_over_the_runs_that_reached(capsys):
    print_table({"a": {key: [0.1, 0.3, None] for key, _, _ in COLUMNS}, "b": {key: [] for key, _, _ in COLUMNS}})
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].startswith("a | 0.2000 ± 0.1414 (2/3 reached)") and "20.0% ± 14.1% (2/3 reached)" in lines[1]
    assert lines[2] == "b | – | – | – | – | – | – | –"  # one cell per column, both rises after growth included


def test_largest_rise_is_the_biggest_step_up_anywhere_after_growth():
    # A curve that falls at the first evaluation and rises at the second (what a re-warmup can give): the
    # first-evaluation column says no rise, this one finds the later one.
    assert grow_bench.largest_rise([5.39, 5.388, 5.437, 5.397, 5.2]) == pytest.approx(0.049)
    assert grow_bench.largest_rise([5.8, 5.6, 5.5]) == pytest.approx(-0.1)  # < 0: it only falls
    assert grow_bench.largest_rise([5.8]) is None


def test_compile_flag_reaches_every_run(monkeypatch, tmp_path):
    # --compile: each train.py run of the comparison is compiled (train.py leaves FLOP budgets eager by default);
    # without the flag train.py decides (None), so a GPU still compiles.
    seen = []
    monkeypatch.setattr(grow_bench, "bench", lambda config: seen.append(config))
    grow_bench.main(["--compile", "--out-dir", str(tmp_path / "b")])
    grow_bench.main(["--out-dir", str(tmp_path / "b")])
    grow_bench.main(["--no-compile", "--out-dir", str(tmp_path / "b")])
    assert [config.compile for config in seen] == [True, None, False]
    monkeypatch.setattr(grow_bench, "train", lambda config: seen.append(config) or {"interrupted": False})
    grow_bench.train_run(seen[0], "scratch", 1e9, seed=0)
    assert seen[-1].compile is True and seen[-1].max_flops == 1e9


def test_runs_take_the_prepared_folders_tokenizer(monkeypatch, tmp_path):
    # Every run trains with the tokenizer its folder was prepared with, so train.py has no default to warn about
    # (a 16 k BPE folder under the default gpt2 setting warned on every run); a folder without meta keeps the defaults.
    (tmp_path / "bpe").mkdir()
    (tmp_path / "bpe" / "meta.json").write_text(json.dumps({"config": {"tokenizer": "gpt2", "vocab_size": 16384}}))
    seen = []
    monkeypatch.setattr(grow_bench, "train", lambda config: seen.append(config) or {"interrupted": False})
    grow_bench.train_run(BenchConfig(data_dir=str(tmp_path / "bpe"), out_dir=str(tmp_path / "b")), "scratch", 1e9)
    grow_bench.train_run(BenchConfig(data_dir=str(tmp_path / "none"), out_dir=str(tmp_path / "b")), "scratch", 1e9)
    assert [(config.tokenizer, config.vocab_size) for config in seen] == [("gpt2", 16384), ("gpt2", 0)]


def test_a_negative_grown_lr_is_refused_before_any_run(monkeypatch, tmp_path):
    monkeypatch.setattr(grow_bench, "train", lambda config: pytest.fail("a run started"))
    with pytest.raises(SystemExit, match=r"error: --grown-lr -1: must be >= 0 \(0 = --lr\)"):
        grow_bench.main(["--grown-lr", "-1", "--out-dir", str(tmp_path / "b")])


def test_scratch_is_reused_only_from_a_finished_run_with_the_same_settings(monkeypatch, tmp_path):
    # --scratch-from: a sweep over --small-fraction trains scratch once per seed. The old run must hold every setting
    # this comparison would give its scratch run (a run logged before the tokenizer fields were passed counts) and
    # must have finished; "{seed}" picks each seed's folder.
    config = BenchConfig(data_dir=str(tmp_path / "data"), out_dir=str(tmp_path / "new"), seed=2,
                         scratch_from=str(tmp_path / "old-{seed}"))
    settings = grow_bench.run_settings(config, "scratch", config.big_flops, preset=config.big,
                                       model_overrides=config.big_overrides, seed=2)
    logged = {**settings, "out_dir": "elsewhere", "vocab_size": 0, "precision": "bf16"}  # train.py adds its defaults

    def write_log(config_record, finished=True):
        (tmp_path / "old-2").mkdir(exist_ok=True)
        records = [{"kind": "config", "config": config_record},
                   {"kind": "eval", "flops": 1e9, "elapsed": 1.0, "val_loss": 5.0},
                   {"kind": "summary", "finished": finished, "interrupted": not finished}]
        (tmp_path / "old-2" / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))

    with pytest.raises(FileNotFoundError, match="old-2: no log.jsonl"):
        grow_bench.reused_scratch(config, settings)
    write_log(logged)
    assert grow_bench.reused_scratch(config, settings) == {"log": str(tmp_path / "old-2" / "log.jsonl")}
    write_log({**logged, "lr": 1e-3})
    with pytest.raises(ValueError, match=r"another run: lr 0.001 there, 0.003 here"):
        grow_bench.reused_scratch(config, settings)
    write_log(logged, finished=False)
    with pytest.raises(ValueError, match="did not finish"):
        grow_bench.reused_scratch(config, settings)
    # In the comparison: scratch is read, never trained; the small model is the first run.
    write_log(logged)
    trained = []

    def fake_train_run(config, name, flops, **settings):
        trained.append(name)
        raise KeyboardInterrupt
    monkeypatch.setattr(grow_bench, "train_run", fake_train_run)
    with pytest.raises(KeyboardInterrupt):
        bench(config)
    assert trained == ["small"]
