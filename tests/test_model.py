import math
from dataclasses import asdict, replace

import pytest
import torch
import torch.nn.functional as F

from evaluation.finetune import CramBERTForSequenceClassification
from model import (PRESETS, CramBERT, ModelConfig, flops_per_token,
                   model_config_from_dict, explicit_attention, preset_config, count_kept)


def tiny(**overrides) -> ModelConfig:
    return preset_config("tiny", vocab_size=512, max_seq_len=32, **overrides)


def random_mlm_batch(config, batch=4, seq=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(0, config.vocab_size, (batch, seq), generator=g)
    labels = torch.full_like(input_ids, -100)
    picked = torch.rand(batch, seq, generator=g) < 0.2
    labels[picked] = input_ids[picked]
    return input_ids, labels


def test_fused_attention_matches_the_written_out_one_with_padding():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 10, 8, generator=g, requires_grad=True) for _ in range(3))
    key_mask = torch.ones(2, 1, 1, 10, dtype=torch.bool)
    key_mask[0, ..., 7:] = False  # first sequence has 3 padding positions
    fused = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask)
    explicit = explicit_attention(q, k, v, key_mask)
    torch.testing.assert_close(fused, explicit, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(fused, explicit_attention(q, k, v))  # the mask really matters
    # the backward too: training on a CPU goes through the written-out form
    upstream = torch.randn(fused.shape, generator=g)
    fused_grads = torch.autograd.grad(fused, (q, k, v), upstream)
    for fused_grad, explicit_grad in zip(fused_grads, torch.autograd.grad(explicit, (q, k, v), upstream)):
        torch.testing.assert_close(fused_grad, explicit_grad, rtol=1e-5, atol=1e-6)


def test_written_out_attention_under_bf16_autocast_is_close_to_fused_fp32():
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, 2, 16, 32, generator=g) for _ in range(3))
    reference = F.scaled_dot_product_attention(q, k, v)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        explicit = explicit_attention(q, k, v)
    assert explicit.dtype == torch.bfloat16
    # bf16 keeps 8 bits of mantissa: errors of a few 1e-3 on outputs of order 0.3
    torch.testing.assert_close(explicit.float(), reference, rtol=0.05, atol=0.02)


def test_padding_does_not_change_real_positions():
    model = CramBERT(tiny()).eval()
    ids = torch.randint(0, 512, (1, 12))
    mask = torch.ones(1, 12, dtype=torch.long)
    mask[0, 8:] = 0
    other = ids.clone()
    other[0, 8:] = (other[0, 8:] + 7) % 512  # different tokens behind the padding mask
    out_a = model.encoder(ids, mask)[0, :8]
    out_b = model.encoder(other, mask)[0, :8]
    torch.testing.assert_close(out_a, out_b)


def test_sparse_head_equals_dense_head_on_masked_positions():
    sparse = CramBERT(tiny())
    dense = CramBERT(tiny(mlm_head="dense"))
    dense.load_state_dict(sparse.state_dict())
    input_ids, labels = random_mlm_batch(sparse.config)
    n_kept = count_kept(4, 32, 0.25)  # the static count the caller derives from its mask rate
    assert n_kept == math.ceil(0.25 * input_ids.numel())
    sparse_logits, sparse_loss = sparse(input_ids, labels=labels, n_kept=n_kept)
    dense_logits, dense_loss = dense(input_ids, labels=labels)
    assert sparse_logits.shape == (n_kept, 512) and dense_logits.shape == (4, 32, 512)
    torch.testing.assert_close(sparse_loss, dense_loss)
    masked = labels != -100
    kept = torch.sort(sparse_logits[-int(masked.sum()):], dim=0).values  # labelled rows come last
    torch.testing.assert_close(kept, torch.sort(dense_logits[masked], dim=0).values, rtol=1e-5, atol=1e-5)
    # without n_kept the head keeps exactly the batch's labelled positions
    exact_logits, exact_loss = sparse(input_ids, labels=labels)
    assert exact_logits.shape == (int(masked.sum()), 512)
    torch.testing.assert_close(exact_loss, dense_loss)


def test_a_config_stored_with_the_old_mlm_fraction_still_loads():
    stored = {**asdict(tiny()), "mlm_fraction": 0.15}  # what checkpoints before count_kept held
    assert model_config_from_dict(stored) == tiny()
    with pytest.raises(TypeError):
        ModelConfig(**stored)


def test_flops_per_token_counts_the_sparse_head_at_the_given_fraction():
    config, dense = tiny(), tiny(mlm_head="dense")
    head = 2 * 3 * (64 * 64 + 64 * 512)  # head_dense and decoder, forward + backward
    assert flops_per_token(config, 32, 0.5) - flops_per_token(config, 32, 0.25) == pytest.approx(0.25 * head)
    assert flops_per_token(dense, 32, 0.1) == flops_per_token(dense, 32, 0.9)
    assert CramBERT(config).flops_per_token(32, 0.15) == flops_per_token(config, 32, 0.15)


def hand_count(config: ModelConfig) -> int:
    C, I, L, V = config.n_embd, config.intermediate_size, config.n_layer, config.vocab_size
    layer_norm = 2 * C
    position_scale = 1 if config.pos_emb == "sinusoidal" else 0  # rotary positions have no parameter
    embedding = V * C + position_scale + layer_norm  # token table, the sinusoid scale, the embedding norm
    block = 2 * layer_norm + 3 * C * C + C * C + C * I + (I // 2) * C  # norms, qkv, proj, fc_in, fc_out (gated)
    head = C * C + layer_norm  # dense + norm; the decoder is the tied token table
    return embedding + L * block + layer_norm + head


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_parameter_count_matches_hand_count(name):
    config = preset_config(name)
    with torch.device("meta"):  # no memory, no init time: we only count
        model = CramBERT(config)
    assert model.num_params() == hand_count(config)
    assert model.num_params(non_embedding=True) == hand_count(config) - config.vocab_size * config.n_embd


def test_crammed_preset_is_the_papers_shape():
    config = preset_config("crammed")
    assert (config.n_layer, config.n_embd, config.n_head, config.intermediate_size) == (16, 768, 12, 3072)
    assert config.vocab_size % 64 == 0 and config.vocab_size >= 50257 + 4


def test_tied_embeddings_share_storage_and_untied_do_not():
    tied = CramBERT(tiny())
    assert tied.decoder.weight.data_ptr() == tied.encoder.embedding.tok.weight.data_ptr()
    untied = CramBERT(tiny(tie_embeddings=False))
    assert untied.num_params() == tied.num_params() + 512 * 64


def test_classifier_reuses_pretrained_encoder_and_trains():
    mlm = CramBERT(tiny())
    classifier = CramBERTForSequenceClassification.from_pretrained(mlm, num_labels=3)
    for name, tensor in mlm.encoder.state_dict().items():
        torch.testing.assert_close(classifier.encoder.state_dict()[name], tensor)
    assert classifier.config.dropout == 0.1 and mlm.config.dropout == 0.0
    ids = torch.randint(0, 512, (6, 16))
    logits, loss = classifier(ids, labels=torch.tensor([0, 1, 2, 0, 1, 2]))
    assert logits.shape == (6, 3) and loss.item() > 0
    regressor = CramBERTForSequenceClassification(tiny(), num_labels=1)
    scores, mse = regressor(ids, labels=torch.linspace(0, 5, 6))
    assert scores.shape == (6, 1) and mse.item() > 0


def test_mean_pooling_averages_real_tokens_only():
    """The mean-pooled head sees the average encoder output over non-padding positions, so padding a
    sequence does not change its logits (pre-norm encoder, padding masked out of attention)."""
    torch.manual_seed(0)
    classifier = CramBERTForSequenceClassification(tiny(), num_labels=2, pooling="mean").eval()
    ids = torch.randint(0, 500, (1, 10))
    padded = torch.cat([ids, torch.full((1, 6), 511)], dim=1)
    mask = torch.cat([torch.ones(1, 10), torch.zeros(1, 6)], dim=1).long()
    logits, _ = classifier(ids)
    padded_logits, _ = classifier(padded, mask)
    torch.testing.assert_close(padded_logits, logits, atol=1e-5, rtol=1e-5)
    reference = classifier.classifier(torch.tanh(classifier.pooler(classifier.encoder(ids).mean(dim=1))))
    torch.testing.assert_close(logits, reference)
    same_weights_cls = CramBERTForSequenceClassification(tiny(), num_labels=2, pooling="cls").eval()
    same_weights_cls.load_state_dict(classifier.state_dict())  # pooling holds no weights: only the reading differs
    assert not torch.allclose(same_weights_cls(ids)[0], logits)
    with pytest.raises(ValueError, match="pooling"):
        CramBERTForSequenceClassification(tiny(), num_labels=2, pooling="max")


def test_bad_config_is_refused():
    with pytest.raises(ValueError, match="divisible"):
        ModelConfig(n_embd=100, n_head=3)
    with pytest.raises(ValueError, match="norm_position"):
        replace(tiny(), norm_position="middle")
    with pytest.raises(ValueError, match="unknown preset"):
        preset_config("huge")


def test_rotary_attention_scores_depend_only_on_distance():
    # RoFormer's property: after rotation, q_i · k_j depends on (i - j), not on i and j themselves.
    from model import rotary_angles, rotate
    angles = rotary_angles(12, 8)
    q, k = torch.randn(8), torch.randn(8)
    q_rotated = rotate(q.expand(1, 1, 12, 8), angles)[0, 0]  # the same vector at every position
    k_rotated = rotate(k.expand(1, 1, 12, 8), angles)[0, 0]
    scores = q_rotated @ k_rotated.T  # (12, 12)
    for offset in (-3, 0, 1, 5):
        diagonal = scores.diagonal(offset)
        assert torch.allclose(diagonal, diagonal[0].expand_as(diagonal), atol=1e-5)
    assert not torch.allclose(scores.diagonal(0)[0], scores.diagonal(1)[0])  # ...but it does depend on distance
    assert torch.allclose(rotate(q.expand(1, 1, 1, 8), angles[:1])[0, 0, 0], q)  # position 0 is not rotated


def test_rope_model_has_no_absolute_positions_and_sees_order():
    torch.manual_seed(0)
    model = CramBERT(preset_config("tiny", vocab_size=100, max_seq_len=16, pos_emb="rope")).eval()
    assert not any("pos" in name for name, _ in model.named_parameters())
    ids = torch.randint(0, 100, (1, 8))
    logits, _ = model(ids)
    swapped, _ = model(ids[:, [1, 0, 2, 3, 4, 5, 6, 7]])
    assert not torch.allclose(logits[0, 2], swapped[0, 2])  # order matters through the rotation
