"""Each recipe switch changes the model or the loop the way it says; experiments/ablate.py runs them all."""
import json

import pytest
import torch
import torch.nn.functional as F

from experiments import ablate
from model import Block, CramBERT, preset_config
from run.checkpoint import load_checkpoint
from train import parse_args, train


def tiny(**overrides):
    return preset_config("tiny", vocab_size=256, max_seq_len=16, **overrides)


def test_post_ln_normalises_after_the_residual_add():
    torch.manual_seed(0)
    block = Block(tiny(norm_position="post")).eval()
    for norm in (block.norm1, block.norm2):  # non-trivial norm parameters, so placement matters
        norm.weight.data.uniform_(0.5, 1.5)
        norm.bias.data.uniform_(-0.5, 0.5)
    x = torch.randn(2, 16, 64)
    h = F.layer_norm(x + block.attn(x), (64,), block.norm1.weight, block.norm1.bias)
    expected = F.layer_norm(h + block.ffn(h), (64,), block.norm2.weight, block.norm2.bias)
    torch.testing.assert_close(block(x), expected)
    pre = Block(tiny())
    pre.load_state_dict(block.state_dict())
    assert not torch.allclose(pre.eval()(x), expected)
    assert isinstance(CramBERT(tiny(norm_position="post")).encoder.final_norm, torch.nn.Identity)


def test_bias_switch_adds_a_bias_to_every_linear():
    linears = [m for m in CramBERT(tiny(bias=True)).modules() if isinstance(m, torch.nn.Linear)]
    assert linears and all(m.bias is not None for m in linears if m.out_features != 256)  # decoder is the tied table
    assert all(m.bias is None for m in CramBERT(tiny()).modules() if isinstance(m, torch.nn.Linear))


def test_plain_gelu_ffn_has_the_expected_parameter_count():
    gated, plain = CramBERT(tiny()), CramBERT(tiny(ffn="gelu"))
    C, I, L = 64, 256, 2
    assert plain.num_params() - gated.num_params() == L * (I * C - (I // 2) * C)  # fc_out sees I, not I/2
    x = torch.randn(3, 64)
    ffn = plain.encoder.blocks[0].ffn
    torch.testing.assert_close(ffn(x), F.gelu(x @ ffn.fc_in.weight.T) @ ffn.fc_out.weight.T)


def test_learned_positions_and_untied_embeddings_add_their_tables():
    base = CramBERT(tiny())
    assert CramBERT(tiny(pos_emb="learned")).num_params() == base.num_params() - 1 + 16 * 64  # table replaces the scale
    untied = CramBERT(tiny(tie_embeddings=False))
    assert untied.decoder.weight.data_ptr() != untied.encoder.embedding.tok.weight.data_ptr()


def test_dropout_changes_outputs_in_train_mode_only():
    model = CramBERT(tiny(dropout=0.1))
    ids = torch.randint(0, 256, (2, 16))
    model.eval()
    torch.testing.assert_close(model(ids)[0], model(ids)[0])
    model.train()
    assert not torch.allclose(model(ids)[0], model(ids)[0])
    no_dropout = CramBERT(tiny()).train()
    torch.testing.assert_close(no_dropout(ids)[0], no_dropout(ids)[0])


def test_switches_are_flags_and_land_in_the_checkpoint(tiny_corpus, tmp_path):
    config = parse_args(["--data-dir", str(tiny_corpus), "--out-dir", str(tmp_path), "--preset", "tiny",
                         "--seq-len", "32", "--micro-batch-size", "4", "--batch-tokens", "128", "--max-steps", "1",
                         "--norm-position", "post", "--bias", "--ffn", "gelu", "--mlm-head", "dense", "--pos-emb",
                         "learned", "--dropout", "0.1", "--no-tie-embeddings", "--schedule", "constant",
                         "--no-batch-ramp", "--mask-rate", "0.15", "--no-progress-bar", "--eval-rows", "8",
                         "--blimp-pairs", "0"])
    train(config)
    checkpoint = load_checkpoint(str(tmp_path / "ckpt.pt"))
    model_config, train_config = checkpoint["model_config"], checkpoint["train_config"]
    assert (model_config["norm_position"], model_config["bias"], model_config["ffn"], model_config["mlm_head"],
            model_config["pos_emb"], model_config["dropout"], model_config["tie_embeddings"]) == \
        ("post", True, "gelu", "dense", "learned", 0.1, False)
    assert (train_config["schedule"], train_config["batch_ramp"], train_config["mask_rate"],
            train_config["max_tokens_per_char"]) == ("constant", False, 0.15, 0.3)


def test_data_prepared_with_another_filter_is_refused(tiny_corpus, tmp_path):
    with pytest.raises(ValueError, match="max_tokens_per_char"):
        train(parse_args(["--data-dir", str(tiny_corpus), "--out-dir", str(tmp_path), "--preset", "tiny",
                          "--max-steps", "1", "--max-tokens-per-char", "0"]))


def test_ablate_runs_every_variant_and_writes_a_table(tmp_path, capsys):
    from conftest import synthetic_documents
    (tmp_path / "corpus.txt").write_text("\n\n".join(synthetic_documents(600)))
    ablate.main(["--seconds", "0.5", "--preset", "tiny", "--corpus", str(tmp_path / "corpus.txt"),
                 "--data-dir", str(tmp_path / "data"), "--val-fraction", "0.2", "--out-dir", str(tmp_path / "runs"), "--seq-len", "32",
                 "--batch-tokens", "256", "--micro-batch-size", "4", "--eval-rows", "8", "--eval-interval", "0.5"])
    table = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and "variant" not in line]
    assert [line.split(" | ")[0][2:] for line in table] == list(ablate.VARIANTS)
    result = json.loads((tmp_path / "runs" / "ablation.json").read_text())
    rows = {row["variant"]: row for row in result["rows"]}
    assert rows["full"]["delta"] == 0.0 and all(row["tokens"] > 0 for row in rows.values())
    assert rows["untied"]["params"] > rows["full"]["params"]
    # --eval-interval 0.5: at the start, halfway and at the end (halfway and the end fall on one step in a short run)
    assert all(2 <= len(run["curve"]) <= 3 for run in result["runs"])
    with pytest.raises(ValueError, match="unknown variants"):
        ablate.ablate(ablate.AblationConfig(variants=["full", "no-such-thing"]))
