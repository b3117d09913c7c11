import json
import math
from dataclasses import asdict

import pytest
import torch
from torch.func import functional_call

import grow
from grow import (GrowthOperator, duplication, grow_model, grown_config, growth_flops, main,
                  train_operator)
from data.prepare import PrepareConfig, prepare
from data.tokenizer import Tokenizer
from model import CramBERT, ModelConfig, flops_per_token, preset_config
from run.checkpoint import load_checkpoint, model_checkpoint, model_from_checkpoint, save_checkpoint
from model import make_optimizer
from run.config import TrainConfig
from train import train

VOCAB = 64  # a small vocabulary keeps these models fast; id VOCAB - 1 plays [MASK]


pytestmark = pytest.mark.usefixtures("one_thread")


def config(**overrides) -> ModelConfig:
    """2 layers, 2 heads of 16, gated FFN 32 wide: the default crammed recipe at toy size."""
    sizes = dict(vocab_size=VOCAB, max_seq_len=16, n_layer=2, n_head=2, n_embd=32, intermediate_size=64)
    return ModelConfig(**{**sizes, **overrides})


def perturbed_model(model_config: ModelConfig, seed: int = 0) -> CramBERT:
    """A model whose norms and biases are not at their 1/0 initial values, as after training: a bug that
    forgets a norm or a bias cannot hide behind an identity."""
    torch.manual_seed(seed)
    model = CramBERT(model_config)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    return model.eval()


def copy_task_batch(rows: int, seq_len: int, generator: torch.Generator):
    """Each row mixes two random tokens, a quarter of it masked: the answer is one of the visible two, so a
    model learns this in tens of steps."""
    pair = torch.randint(0, VOCAB - 1, (rows, 2), generator=generator)
    ids = pair.gather(1, torch.randint(0, 2, (rows, seq_len), generator=generator))
    picked = torch.rand(rows, seq_len, generator=generator).argsort(dim=1) < seq_len // 4
    return ids.masked_fill(picked, VOCAB - 1), ids.masked_fill(~picked, -100)


def random_ids(rows=3, seq_len=16, seed=1):
    return torch.randint(0, VOCAB, (rows, seq_len), generator=torch.Generator().manual_seed(seed))


BIG = config(n_layer=4, n_head=4, n_embd=64, intermediate_size=160)  # twice as wide and deep, FFN 2.5x


@pytest.mark.parametrize("method", ["ligo", "stack", "net2net", "scratch"])
def test_every_grown_tensor_has_the_target_shape(method):
    small = perturbed_model(config(bias=True))
    generator = torch.Generator().manual_seed(0)
    grown = grow_model(small, BIG, method, batches=lambda step: copy_task_batch(4, 16, generator), ligo_steps=1)
    assert grown.config == grown_config(small.config, BIG) and grown.config.bias  # target sizes, small's recipe
    reference = CramBERT(grown.config).state_dict()
    assert {k: v.shape for k, v in grown.state_dict().items()} == {k: v.shape for k, v in reference.items()}
    assert grown.decoder.weight is grown.encoder.embedding.tok.weight  # still tied


@pytest.mark.parametrize("recipe, big_layers", [
    (dict(pos_emb="learned"), 4), (dict(pos_emb="learned", bias=True, ffn="gelu"), 4),
    (dict(pos_emb="learned", tie_embeddings=False, mlm_head="dense"), 4),
    (dict(pos_emb="learned", norm_position="post"), 2),  # post-LN: a norm after the residual, no identity block
    (dict(pos_emb="rope"), 4)])  # rotary: no position weights, and each head keeps its size, so its rotation
def test_net2net_preserves_the_function_at_integer_width_multiples(recipe, big_layers):
    # Residual 32 -> 64 (x2), heads 2 -> 4, FFN hidden 32 -> 80 (x2.5), layers 2 -> 4 as identity blocks.
    small = perturbed_model(config(**recipe))
    grown = grow_model(small, config(n_layer=big_layers, n_head=4, n_embd=64, intermediate_size=160), "net2net",
                       noise=0.0).eval()
    ids = random_ids()
    torch.testing.assert_close(grown(ids)[0], small(ids)[0], rtol=1e-4, atol=1e-5)


def test_net2net_with_sinusoids_preserves_everything_but_the_position_table():
    small = perturbed_model(config())
    grown = grow_model(small, BIG, "net2net", noise=0.0).eval()
    ids = random_ids()
    assert not torch.allclose(grown(ids)[0], small(ids)[0], atol=1e-2)  # the sinusoid table depends on n_embd
    with torch.no_grad():
        small.encoder.embedding.pos_scale.zero_()  # without the position term ...
        grown.encoder.embedding.pos_scale.zero_()
    torch.testing.assert_close(grown(ids)[0], small(ids)[0], rtol=1e-4, atol=1e-5)  # ... the rest is exact


def test_net2net_preserves_heads_and_ffn_at_any_width_but_layernorm_needs_multiples():
    # 32 -> 48 (x1.5): heads 2 -> 3, FFN hidden 32 -> 40. Each sub-layer maps copied inputs to copied outputs.
    small = perturbed_model(config())
    grown = grow_model(small, config(n_head=3, n_embd=48, intermediate_size=80), "net2net", noise=0.0).eval()
    copy, _ = duplication(48, 32)
    x = torch.randn(3, 16, 32)
    for small_part, grown_part in [(small.encoder.blocks[1].attn, grown.encoder.blocks[1].attn),
                                   (small.encoder.blocks[1].ffn, grown.encoder.blocks[1].ffn)]:
        torch.testing.assert_close(grown_part(x @ copy.T), small_part(x) @ copy.T, rtol=1e-4, atol=1e-5)
    # Units 0..15 now have two copies and 16..31 one: LayerNorm's mean and variance change, so the model does.
    ids = random_ids()
    assert not torch.allclose(grown(ids)[0], small(ids)[0], atol=1e-2)


def test_noise_breaks_only_ligos_copies_and_the_baselines_stay_exact():
    # The default noise (0.01) is LiGO's: StackBERT and Net2Net are the exact transforms, and Net2Net with learned
    # positions at an integer width multiple computes the small model's function with the default arguments.
    small = perturbed_model(config(pos_emb="learned"))
    target = config(n_layer=4, n_head=4, n_embd=64, intermediate_size=160)
    for method in ("stack", "net2net"):
        default, exact = grow_model(small, target, method), grow_model(small, target, method, noise=0.0)
        assert all(torch.equal(default.state_dict()[name], tensor) for name, tensor in exact.state_dict().items())
    ids = random_ids()
    torch.testing.assert_close(grow_model(small, target, "net2net").eval()(ids)[0], small(ids)[0], rtol=1e-4, atol=1e-5)
    ligo, stack = grow_model(small, target, "ligo", batches=[], ligo_steps=0), grow_model(small, target, "stack")
    assert not torch.equal(ligo.encoder.embedding.tok.weight, stack.encoder.embedding.tok.weight)


def test_uneven_split_keeps_net2net_exact_and_lets_the_copies_diverge():
    # Random shares that sum to 1 per old unit: splitᵀ · copy is still the identity ...
    copy, split = duplication(48, 32, torch.Generator().manual_seed(0))
    torch.testing.assert_close(split.T @ copy, torch.eye(32))
    assert split[0, 0] != split[32, 0]  # ... but a unit's two copies read their inputs with different shares
    # With learned positions and no dropout, equal shares would keep a copy equal to its original through
    # training; the grown model's copied FFN units must drift apart after a few AdamW steps.
    small = perturbed_model(config(pos_emb="learned"))
    grown = grow_model(small, config(n_layer=2, n_head=2, n_embd=32, intermediate_size=128, pos_emb="learned"),
                       "net2net").train()
    ids = random_ids()
    torch.testing.assert_close(grown(ids)[0], small(ids)[0], rtol=1e-4, atol=1e-5)
    optimizer = torch.optim.AdamW(grown.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(0)
    for _ in range(5):
        inputs, labels = copy_task_batch(8, 16, generator)
        optimizer.zero_grad()
        grown(inputs, labels=labels)[1].backward()
        optimizer.step()
    fc_in = grown.encoder.blocks[0].ffn.fc_in.weight  # (2 x 64, 32): value rows, then gate rows
    hidden = grown.config.ffn_hidden
    assert (fc_in[:hidden // 2] - fc_in[hidden // 2:hidden]).abs().max() > 1e-4  # value unit i vs its copy i + 32


def test_stacking_reproduces_the_stacked_model_and_ligo_starts_as_stackbert():
    small = perturbed_model(config())
    stacked = CramBERT(config(n_layer=4)).eval()  # by hand: blocks 0, 1, 0, 1 of the small model
    state = small.state_dict()
    for name, tensor in small.state_dict().items():
        if name.startswith("encoder.blocks."):
            layer, rest = name.removeprefix("encoder.blocks.").split(".", 1)
            state[f"encoder.blocks.{int(layer) + 2}.{rest}"] = tensor
    stacked.load_state_dict(state)
    grown = grow_model(small, config(n_layer=4), "stack", noise=0.0).eval()
    for name, tensor in stacked.state_dict().items():
        assert torch.equal(grown.state_dict()[name], tensor), name
    ids = random_ids()
    assert torch.equal(grown(ids)[0], stacked(ids)[0])

    # Wider and deeper: the LiGO operator before any training is exactly StackBERT (+ the Net2Net width copy).
    stack = grow_model(small, BIG, "stack", noise=0.0)
    ligo = grow_model(small, BIG, "ligo", batches=[], ligo_steps=0, noise=0.0)
    operator = GrowthOperator(small, grown_config(small.config, BIG), depth="stack")
    materialised = operator.materialise()
    for name, tensor in stack.state_dict().items():
        assert torch.equal(ligo.state_dict()[name], tensor) and torch.equal(materialised[name], tensor), name


def test_operator_training_lowers_the_loss_and_trains_only_the_operator():
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    small = CramBERT(config())
    optimizer = make_optimizer(small, TrainConfig(lr=1e-2))
    for _ in range(60):  # pretrain the small model a little: the grown one then has something to lose
        input_ids, labels = copy_task_batch(16, 16, generator)
        small(input_ids, labels=labels)[1].backward()
        optimizer.step()
        optimizer.zero_grad()
    small_before = {name: tensor.clone() for name, tensor in small.state_dict().items()}

    operator = GrowthOperator(small, grown_config(small.config, BIG), noise=0.01)
    held_out = copy_task_batch(64, 16, torch.Generator().manual_seed(99))

    def held_out_loss():
        with torch.no_grad():
            model = CramBERT(operator.big_config)
            model.load_state_dict(operator.materialise())
            return model(held_out[0], labels=held_out[1])[1].item()

    initial = held_out_loss()  # stacking costs the small model's function a little: its deeper copies do too much
    train_operator(operator, lambda step: copy_task_batch(32, 16, generator), steps=20, lr=0.03, progress_bar=False)
    with torch.no_grad():
        small_loss = small(held_out[0], labels=held_out[1])[1].item()
    assert held_out_loss() < min(initial - 0.1, small_loss - 0.05)  # better than at the start, and than the small one
    # The gradient reaches every kind of operator parameter and none of the small model's weights.
    _, loss = functional_call(CramBERT(operator.big_config), operator.materialise(), (held_out[0],),
                              {"labels": held_out[1]})
    loss.backward()
    for name, parameter in operator.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    assert all(parameter.grad is None for parameter in small.parameters())
    assert all(torch.equal(small.state_dict()[name], tensor) for name, tensor in small_before.items())


def test_q_k_v_get_their_own_width_expansions_unless_shared():
    # The paper learns Q, K and V's expansions separately; shared_qkv ties them into one Parameter. Both start as
    # the same function (StackBERT's copy); trained, the separate ones move apart and the shared ones cannot.
    small = perturbed_model(config())
    big_config = grown_config(small.config, BIG)
    separate, shared = GrowthOperator(small, big_config), GrowthOperator(small, big_config, shared_qkv=True)
    for name, tensor in shared.materialise().items():
        assert torch.equal(separate.materialise()[name], tensor), name
    per_layer = BIG.n_embd * small.config.n_embd  # one expansion matrix per layer and kind
    extra = sum(p.numel() for p in separate.parameters()) - sum(p.numel() for p in shared.parameters())
    assert extra == 2 * small.config.n_layer * per_layer  # Q's and K's of every small layer
    assert shared.q_out[0] is shared.v_out[0] and separate.q_out[0] is not separate.v_out[0]
    generator = torch.Generator().manual_seed(0)
    for operator in (separate, shared):
        train_operator(operator, lambda step: copy_task_batch(16, 16, generator), steps=3, lr=0.03, progress_bar=False)
    assert not torch.equal(separate.q_out[0], separate.k_out[0])
    assert not torch.equal(separate.k_out[0], separate.v_out[0])


def test_cli_grows_a_checkpoint_that_train_py_continues(tiny_corpus, tmp_path):
    # A tiny model grown by LiGO through the command line on the synthetic corpus, then pretrained on.
    torch.manual_seed(0)
    save_checkpoint(str(tmp_path / "small.pt"), model_checkpoint(CramBERT(preset_config("tiny", n_head=1)), Tokenizer.gpt2()))
    out = tmp_path / "grown.pt"
    main(["--from", str(tmp_path / "small.pt"), "--to", "tiny", "--n-layer", "3", "--n-embd", "128", "--n-head", "2",
          "--method", "ligo", "--ligo-steps", "1", "--batch-size", "4", "--seq-len", "32",
          "--data-dir", str(tiny_corpus), "--out", str(out), "--device", "cpu"])
    grown = model_from_checkpoint(load_checkpoint(str(out)))
    assert (grown.config.n_layer, grown.config.n_embd, grown.config.n_head) == (3, 128, 2)
    summary = train(TrainConfig(data_dir=str(tiny_corpus), out_dir=str(tmp_path / "big"), init_from=str(out),
                                seq_len=32, micro_batch_size=8, batch_tokens=256, budget_seconds=0, max_steps=4,
                                lr=3e-3, eval_rows=16, eval_interval=1.0, progress_bar=False))
    with open(summary["log"]) as f:
        evals = [r["val_loss"] for r in map(json.loads, f) if r["kind"] == "eval"]
    assert summary["params"] == grown.num_params() and evals[-1] < evals[0]


def test_cli_masks_the_operator_batches_at_the_runs_rate_not_cramming_default(tiny_corpus, tmp_path, monkeypatch):
    # The operator trains on batches masked like the source run's training (its train_config's mask rates), or at
    # --mask-rate, and sizes the sparse head for that rate: not at the 0.25 a model config once carried.
    seen = []

    def record(operator, batches, steps, lr, device, progress_bar, mask_rate):
        _, labels = batches(0)
        seen.append(((labels != -100).float().mean().item(), mask_rate))

    monkeypatch.setattr(grow, "train_operator", record)
    small = CramBERT(preset_config("tiny", n_head=1))
    save_checkpoint(str(tmp_path / "small.pt"), model_checkpoint(
        small, Tokenizer.gpt2(), train_config=asdict(TrainConfig(mask_rate=0.4, eval_mask_rate=0.15))))
    arguments = ["--from", str(tmp_path / "small.pt"), "--to", "tiny", "--n-embd", "128", "--n-head", "2",
                 "--method", "ligo", "--batch-size", "8", "--seq-len", "32", "--data-dir", str(tiny_corpus),
                 "--out", str(tmp_path / "grown.pt"), "--device", "cpu"]
    main(arguments)  # the source run's rate
    main(arguments + ["--mask-rate", "0.15"])
    (masked_default, rate_default), (masked_flag, rate_flag) = seen
    assert rate_default == 0.4 and masked_default == pytest.approx(0.4, abs=0.03)
    assert rate_flag == 0.15 and masked_flag == pytest.approx(0.15, abs=0.03)


def test_cli_refuses_data_of_another_tokenizer(tiny_corpus, tmp_path):
    # a model of our own 320-id BPE, and data in GPT-2 ids: LiGO would learn its operator on the wrong ids
    (tmp_path / "corpus.txt").write_text((tiny_corpus.parent / "corpus.txt").read_text()[:20_000])
    prepare(PrepareConfig(corpus=str(tmp_path / "corpus.txt"), out_dir=str(tmp_path / "bpe"), vocab_size=320,
                          val_fraction=0.2, max_tokens_per_char=0))
    bpe = Tokenizer.from_spec(str(tmp_path / "bpe" / "tokenizer.bpe"))
    save_checkpoint(str(tmp_path / "small.pt"), model_checkpoint(CramBERT(config(vocab_size=bpe.vocab_size)), bpe))
    with pytest.raises(SystemExit, match=r"error: .*trained with tokenizer .bpe\d+-.*holds 'gpt2' tokens"):
        main(["--from", str(tmp_path / "small.pt"), "--to", "tiny", "--out", str(tmp_path / "big.pt"),
                   "--data-dir", str(tiny_corpus), "--ligo-steps", "1"])
    assert not (tmp_path / "big.pt").exists()


def test_cli_says_where_the_small_runs_schedule_stopped(tmp_path, capsys):
    # A source run that stopped mid-schedule (--schedule-to 0.3): the grown model continues it with --schedule-from.
    small = CramBERT(preset_config("tiny"))
    for schedule_to, hint in ((0.3, "--init-from " + str(tmp_path / "grown.pt") + " --schedule-from 0.3 ..."),
                              (1.0, "--init-from " + str(tmp_path / "grown.pt") + " ...")):
        save_checkpoint(str(tmp_path / "small.pt"), model_checkpoint(
            small, Tokenizer.gpt2(), train_config=asdict(TrainConfig(schedule_to=schedule_to))))
        main(["--from", str(tmp_path / "small.pt"), "--to", "tiny", "--n-layer", "3", "--method", "stack",
              "--out", str(tmp_path / "grown.pt"), "--device", "cpu"])
        assert hint in capsys.readouterr().out


def test_growth_that_cannot_be_done_fails_clearly():
    small = CramBERT(config())
    with pytest.raises(ValueError, match="cannot shrink"):
        grow_model(small, config(n_embd=16, n_head=1), "net2net")
    with pytest.raises(ValueError, match="head dim"):
        grow_model(small, config(n_embd=64), "net2net")  # 2 heads of 32 instead of 16
    with pytest.raises(ValueError, match="unknown growth method"):
        grow_model(small, BIG, "bert2bert")
    with pytest.raises(ValueError, match="pass batches"):
        grow_model(small, BIG, "ligo")


def test_flop_accounting_of_the_growth():
    assert growth_flops(config(), BIG, "stack", 100, 64, 16) == 0.0
    one, ten = (growth_flops(config(), BIG, "ligo", steps, 64, 16) for steps in (1, 10))
    big_model = 64 * flops_per_token(grown_config(config(), BIG), 16)  # the big model's share of a step
    # Materialising costs at least the token embedding's (V x 32) @ (32 x 64), forward and backward (3x).
    assert math.isclose(ten, 10 * one) and one - big_model > 3 * 2 * VOCAB * 32 * 64
