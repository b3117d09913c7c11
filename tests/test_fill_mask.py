"""fill_mask.py's command line: every mistake is one error line, never a traceback or a silently dropped blank."""
import pytest
import torch

from run.checkpoint import model_checkpoint, save_checkpoint, tokenizer_from_checkpoint
from data.tokenizer import Tokenizer
from fill_mask import main
from model import CramBERT, preset_config

GPT2 = Tokenizer.gpt2()


@pytest.fixture(scope="module")
def checkpoint_path(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("fill_mask") / "ckpt.pt"
    save_checkpoint(str(path), model_checkpoint(CramBERT(preset_config("tiny", max_seq_len=16, n_layer=1)), GPT2))
    return str(path)


def test_one_fill_line_per_mask(checkpoint_path, capsys):
    fills = main(["--ckpt", checkpoint_path, "--top", "3", "The [MASK] sat on the [MASK]."])
    assert len(fills) == 2 and all(len(candidates) == 3 for candidates in fills)
    assert capsys.readouterr().out.count("  [MASK] ") == 2  # a fill line for each blank


def test_a_mask_past_the_models_positions_is_an_error_not_a_silent_drop(checkpoint_path):
    sentence = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen [MASK]."
    assert len(GPT2.encode_masked(sentence)) > 14  # 16 positions less [CLS] and [SEP]
    with pytest.raises(SystemExit, match=r"error: .* tokens; this model reads at most 14 \(its max_seq_len 16"):
        main(["--ckpt", checkpoint_path, sentence])


@pytest.mark.parametrize("top", ["-1", "0", "100000"])
def test_top_must_be_a_number_of_text_ids(checkpoint_path, top):
    with pytest.raises(SystemExit, match=rf"error: --top {top}: must be in \[1, 50257\]"):
        main(["--ckpt", checkpoint_path, "--top", top, "I [MASK] you."])


def test_an_embedding_smaller_than_the_tokenizer_is_refused_by_every_entry_point(tmp_path):
    checkpoint = model_checkpoint(CramBERT(preset_config("tiny", vocab_size=64, max_seq_len=16, n_layer=1)), GPT2)
    with pytest.raises(ValueError, match="embedding has 64 rows, fewer than the 50261 ids of its tokenizer 'gpt2'"):
        tokenizer_from_checkpoint(checkpoint)  # what fill_mask, glue_eval, grow and train --init-from all call
    save_checkpoint(str(tmp_path / "ckpt.pt"), checkpoint)
    with pytest.raises(SystemExit, match="error: the checkpoint's embedding has 64 rows"):
        main(["--ckpt", str(tmp_path / "ckpt.pt"), "I [MASK] you."])
