"""Tests for policy.py: simplex projection, the unrolled meta-gradient, the exact policy on a planted-noise
perceptron and a tiny transformer, and the cheap LearningLawPolicy that train.py uses."""
import io
import itertools
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from data.tokenizer import Tokenizer
from model import CramBERT, preset_config, count_kept
from policy import (LearningLawPolicy, LearningLawPolicyConfig, Task, area_under_curve, contributions,
                    decoder_contributions, law_check, low_rank, optimise_policy, policy_flops, project_to_simplex, run,
                    uniform_policy, weighted_mlm_loss)
from experiments.policy_bench import (CurveFit, acceleration_ratio, compare, fit_learning_curves, mlm_examples, perceptron_task, read_wiki_tokens, remap_vocabulary,
                                      reproduction_config, transformer_task)

DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data"


pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------------------------------------------------
# Simplex projection

def brute_force_projection(v: torch.Tensor) -> torch.Tensor:
    """Try every support S: on S the projection is v − (Σ_S v − 1)/|S|, elsewhere 0; keep the closest feasible."""
    best, best_distance = None, float("inf")
    for size in range(1, len(v) + 1):
        for support in itertools.combinations(range(len(v)), size):
            x = torch.zeros_like(v)
            idx = list(support)
            x[idx] = v[idx] - (v[idx].sum() - 1) / size
            if (x >= -1e-12).all() and (x - v).norm() < best_distance:
                best, best_distance = x, (x - v).norm()
    return best


def test_projection_matches_brute_force_and_known_answers():
    gen = torch.Generator().manual_seed(0)
    for n in range(1, 7):
        for _ in range(20):
            v = torch.randn(n, generator=gen, dtype=torch.float64) * 2
            assert torch.allclose(project_to_simplex(v), brute_force_projection(v), atol=1e-9)
    assert torch.allclose(project_to_simplex(torch.tensor([2.0, 0.0])), torch.tensor([1.0, 0.0]))
    assert torch.allclose(project_to_simplex(torch.tensor([5.0, 5.0, 5.0])), torch.full((3,), 1 / 3))
    assert torch.allclose(project_to_simplex(torch.tensor([0.5, 0.3, -1.0])), torch.tensor([0.6, 0.4, 0.0]))


def test_projection_stays_on_simplex_and_fixes_simplex_points():
    gen = torch.Generator().manual_seed(1)
    v = torch.randn(50, 300, generator=gen, dtype=torch.float64) * torch.logspace(-3, 3, 50, dtype=torch.float64)[:, None]
    x = project_to_simplex(v)  # rows projected independently
    assert (x >= 0).all() and torch.allclose(x.sum(-1), torch.ones(50, dtype=torch.float64))
    assert torch.allclose(project_to_simplex(x), x)  # a projection is idempotent
    assert torch.allclose(x[3], project_to_simplex(v[3]))


# ---------------------------------------------------------------------------------------------------------
# The exact method

def toy_task(n_steps_lr=0.7) -> Task:
    """3 training examples, 2 parameters, logistic loss; desired set of 4 points. float64 for finite differences."""
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(3, 2, generator=gen, dtype=torch.float64), torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64)
    xd, yd = torch.randn(4, 2, generator=gen, dtype=torch.float64), torch.tensor([1.0, 0.0, 0.0, 1.0], dtype=torch.float64)
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    return Task(params={"w": torch.tensor([0.3, -0.2], dtype=torch.float64)},
                train_loss=lambda p, weights: (weights * bce(x @ p["w"], y, reduction="none")).sum(),
                desired_loss=lambda p: bce(xd @ p["w"], yd), test_loss=lambda p: bce(xd @ p["w"], yd),
                noisy=torch.zeros(3, dtype=torch.bool), lr=n_steps_lr)


def test_meta_gradient_matches_finite_differences():
    task = toy_task()
    gamma = torch.tensor([[0.2, 0.5, 0.3], [0.6, 0.1, 0.3]], dtype=torch.float64, requires_grad=True)  # 2 steps
    (grad,) = torch.autograd.grad(area_under_curve(run(task, gamma, differentiable=True)[0]), gamma)
    h = 1e-6
    for t, n in itertools.product(range(2), range(3)):
        bump = torch.zeros_like(gamma)
        bump[t, n] = h
        j_plus = area_under_curve(run(task, gamma.detach() + bump)[0])
        j_minus = area_under_curve(run(task, gamma.detach() - bump)[0])
        assert abs(grad[t, n].item() - (j_plus - j_minus).item() / (2 * h)) < 1e-7
    assert grad.abs().max() > 1e-3  # and it is not trivially zero


def test_contributions_equal_per_example_gradient_dot_products():
    task = toy_task()
    params = {"w": task.params["w"].clone().requires_grad_()}
    direction = {"w": torch.tensor([0.4, 1.3], dtype=torch.float64)}
    c = contributions(task.train_loss, params, direction, 3)
    for n in range(3):
        one_hot = torch.zeros(3, dtype=torch.float64)
        one_hot[n] = 1
        (g,) = torch.autograd.grad(task.train_loss(params, one_hot), params["w"])
        assert torch.isclose(c[n], g @ direction["w"])


def test_optimised_policy_lowers_auc_and_drops_noisy_labels():
    config = reproduction_config("perceptron", dim=8, n_train=64, n_held_out=256, steps=40, outer_epochs=15,
                                 noise_fraction=0.25, lr=0.3)
    task = perceptron_task(config)
    gamma, history = optimise_policy(task, config.steps, config.segment, config.outer_epochs, config.outer_lr)
    assert (gamma >= 0).all() and torch.allclose(gamma.sum(1), torch.ones(len(gamma)))
    assert min(history) < 0.9 * history[0]  # history[0] is the uniform policy's J
    result = compare(task, gamma, config.segment, horizon=5)
    uniform, optimised = result["rows"]["uniform"], result["rows"]["optimised"]
    assert optimised["auc"] < uniform["auc"] and optimised["test_auc"] < uniform["test_auc"]
    assert result["speedups"]["desired"]["auc"] == pytest.approx(uniform["auc"] / optimised["auc"])
    assert result["speedups"]["desired"]["catch_up"] > 1
    assert uniform["noisy_weight"] == pytest.approx(0.25)
    assert optimised["noisy_weight"] < 0.1  # the flipped labels lose most of their weight
    assert optimised["spread"] < uniform["spread"]  # contributions of kept examples become more equal (the Law)
    law = result["law_fit"]  # the paper's measure (Eq. 9) on the test curves
    assert law["ar"] == pytest.approx(acceleration_ratio(law["fit"], config.steps)) and law["ar"] > 1


def test_zero_weight_examples_contribute_less_than_kept_ones():
    # The Law's other half (KKT): an example the optimal policy drops contributes no more than the kept ones.
    config = reproduction_config("perceptron", dim=8, n_train=64, n_held_out=256, steps=40, outer_epochs=15,
                                 noise_fraction=0.25, lr=0.3)
    task = perceptron_task(config)
    gamma, _ = optimise_policy(task, config.steps, config.segment, config.outer_epochs, config.outer_lr)
    optimised, uniform = law_check(task, gamma, 1), law_check(task, uniform_policy(config.steps, 64), 1)
    assert uniform["zero_share"] == 0 and uniform["zero_below"] is None
    assert optimised["zero_share"] > 0.15  # at least most of the 25% flipped labels are dropped
    assert optimised["zero_below"] > 0.9


def learning_curve(L0, B, beta, steps, noise=0.0, seed=0):
    t = torch.arange(0, steps + 1, dtype=torch.float64).clamp(min=1)  # t = 0 is never fitted
    jitter = torch.exp(noise * torch.randn(steps + 1, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    return L0 + (B / t) ** beta * jitter


def test_curve_fit_recovers_a_shared_l0_and_both_laws():
    conventional = learning_curve(2.0, 50.0, 0.4, 400, noise=1e-3, seed=0)
    optimal = learning_curve(2.0, 5.0, 0.5, 400, noise=1e-3, seed=1)
    fit = fit_learning_curves(conventional, optimal)
    assert fit.L0 == pytest.approx(2.0, rel=0.01)
    assert fit.beta == pytest.approx((0.4, 0.5), rel=0.05) and fit.B == pytest.approx((50.0, 5.0), rel=0.15)
    exact = fit_learning_curves(learning_curve(2.0, 50.0, 0.4, 400), learning_curve(2.0, 5.0, 0.5, 400))
    assert exact.L0 == pytest.approx(2.0, rel=1e-3) and exact.beta == pytest.approx((0.4, 0.5), rel=1e-3)


def test_acceleration_ratio_by_hand():
    # Same β: the conventional curve is the near-optimal one slowed by B_c/B_o = 4.
    assert acceleration_ratio(CurveFit(L0=1.0, B=(100.0, 25.0), beta=(0.5, 0.5), error=0.0), 100) == pytest.approx(4.0)
    # Near-optimal at T=100: (10/100)^1 = 0.1 above L0; conventional (100/t)^0.5 = 0.1 at t = 10^4: AR = 100.
    assert acceleration_ratio(CurveFit(L0=1.0, B=(100.0, 10.0), beta=(0.5, 1.0), error=0.0), 100) == pytest.approx(100.0)
    assert acceleration_ratio(CurveFit(L0=1.0, B=(100.0, 10.0), beta=(-0.1, 1.0), error=0.0), 100) is None


def synthetic_tokens(n_tokens: int, seed: int = 0) -> torch.Tensor:
    """GPT-2 ids with structure an MLM can learn: runs of consecutive ids from a small alphabet."""
    gen = torch.Generator().manual_seed(seed)
    starts = torch.randint(100, 130, (n_tokens // 4 + 1,), generator=gen)
    return (starts[:, None] + torch.arange(4)).flatten()[:n_tokens]


def test_transformer_task_builds_masked_rows_and_learns_a_policy():
    tokens = synthetic_tokens(4000)
    lookup, unk_id, mask_id = remap_vocabulary(tokens, 16, Tokenizer.gpt2())
    assert lookup[tokens].max() < 16 and (lookup[tokens] != unk_id).float().mean() > 0.3
    ids, labels = mlm_examples(tokens[:64], 16, lookup, torch.Generator().manual_seed(0), Tokenizer.gpt2())
    assert ids.shape == (4, 16) and ((labels != -100).sum(1) == 4).all()  # exactly 25% of every row
    assert (ids[labels != -100] == mask_id).float().mean() > 0.5  # most picked positions show [MASK]
    config = reproduction_config("transformer", n_train=16, n_held_out=8, seq_len=16, vocab=40, steps=6,
                                 segment=3, outer_epochs=4, noise_fraction=0.25, lr=0.5)
    task = transformer_task(config, tokens=tokens)
    assert task.noisy.sum() == 4
    gamma, history = optimise_policy(task, config.steps, config.segment, config.outer_epochs, config.outer_lr)
    assert gamma.shape == (2, 16) and torch.allclose(gamma.sum(1), torch.ones(2))
    assert min(history) < history[0]


@pytest.mark.skipif(not (DATA_DIR / "wiki").is_dir(), reason="../shared/data/wiki is absent")
def test_wiki_vocabulary_remap_covers_frequent_tokens():
    tokens = torch.tensor(read_wiki_tokens(DATA_DIR / "wiki" / "enwiki-2015-00.txt.gz", 200_000))
    lookup, unk_id, _ = remap_vocabulary(tokens, 512, Tokenizer.gpt2())
    coverage = (lookup[tokens] != unk_id).float().mean().item()
    assert 0.45 < coverage < 0.75  # 510 ids cover about half of wiki tokens


# ---------------------------------------------------------------------------------------------------------
# The practical policy

def tiny_mlm_batch(n_rows: int, seed: int, noisy_rows=()):
    """Rows of 16 tokens from a small alphabet (ids 0..7), 4 positions masked (id 63). The labels of
    noisy rows are drawn from the whole vocabulary instead, as corrupted text would be: gradients that
    do not help predict the real data."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 8, (n_rows, 16), generator=gen)
    labels = torch.full_like(ids, -100)
    for r in range(n_rows):
        picked = torch.randperm(16, generator=gen)[:4]
        labels[r, picked] = torch.randint(0, 60, (4,), generator=gen) if r in noisy_rows else ids[r, picked]
        ids[r, picked] = 63
    return ids, torch.ones_like(ids), labels


def tiny_model(seed: int = 0) -> CramBERT:
    torch.manual_seed(seed)
    return CramBERT(preset_config("tiny", vocab_size=64, max_seq_len=16))


def test_weighted_loss_is_the_weighted_mean_of_per_example_losses():
    dense = CramBERT(preset_config("tiny", vocab_size=64, max_seq_len=16, mlm_head="dense"))
    input_ids, _, labels = tiny_mlm_batch(4, seed=0)
    logits, _ = dense(input_ids, labels=labels)
    per_example = torch.stack([F.cross_entropy(logits[i], labels[i], ignore_index=-100) for i in range(4)])
    weights = torch.tensor([0.1, 0.2, 0.3, 0.4])
    weighted = weighted_mlm_loss(logits, labels, weights)
    torch.testing.assert_close(weighted, (weights * per_example).sum())
    sparse = CramBERT(preset_config("tiny", vocab_size=64, max_seq_len=16))
    sparse.load_state_dict(dense.state_dict())
    for n_kept in (None, count_kept(4, 16, 0.5)):  # the labelled rows only, or a static count with extra rows
        sparse_logits, _ = sparse(input_ids, labels=labels, n_kept=n_kept)
        torch.testing.assert_close(weighted_mlm_loss(sparse_logits, labels, weights, n_kept), weighted)


def decoder_gradient_by_autograd(model, batch, weights, n_kept=None):
    """The reference: ∇ of Σ_n w_n l_n with respect to a copy of the decoder weight, by autograd, from the
    decoder inputs the policy's hook kept (the tied embedding's other role is left out, as the policy does)."""
    policy = LearningLawPolicy(LearningLawPolicyConfig(), batch)
    policy.watch(model)
    input_ids, attention_mask, labels = batch
    model(input_ids, attention_mask, labels, n_kept=n_kept)
    W = model.decoder.weight.detach().clone().requires_grad_()
    logits = policy.decoder_input @ W.T
    return torch.autograd.grad(weighted_mlm_loss(logits, labels, weights, n_kept), W)[0]


@pytest.mark.parametrize("mlm_head", ["sparse", "dense"])
def test_decoder_contributions_match_per_example_gradients_by_autograd(mlm_head):
    torch.manual_seed(0)
    model = CramBERT(preset_config("tiny", vocab_size=64, max_seq_len=16, mlm_head=mlm_head))
    batch, desired = tiny_mlm_batch(4, seed=1, noisy_rows=(3,)), tiny_mlm_batch(8, seed=2)
    n_kept = count_kept(4, 16, 0.5) if mlm_head == "sparse" else None  # a static count with unlabelled extra rows
    policy = LearningLawPolicy(LearningLawPolicyConfig(rank=0, score="decoder"), desired)  # G whole
    policy.watch(model)
    policy.refresh(model)
    G = decoder_gradient_by_autograd(model, desired, torch.ones(8) / 8)  # the desired loss is the mean over its rows
    left, right = policy.desired_gradient
    torch.testing.assert_close(left @ right, G, rtol=1e-4, atol=1e-7)
    logits = model(*batch, n_kept=n_kept)[0]
    c = decoder_contributions(logits, policy.decoder_input, batch[2], low_rank(G, 0), n_kept)
    for n in range(4):
        one_hot = torch.zeros(4)
        one_hot[n] = 1
        reference = (decoder_gradient_by_autograd(model, batch, one_hot, n_kept) * G).sum()
        assert torch.isclose(c[n], reference, rtol=1e-4, atol=1e-9)


def test_low_rank_desired_gradient_is_the_truncated_svd():
    torch.manual_seed(0)
    rank3 = torch.randn(40, 3) @ torch.randn(3, 12)
    left, right = low_rank(rank3, 3)
    assert left.shape == (40, 3) and right.shape == (3, 12)
    torch.testing.assert_close(left @ right, rank3, rtol=1e-4, atol=1e-5)  # exact when G's rank is at most r
    G = torch.randn(40, 12)
    left, right = low_rank(G, 4)
    S = torch.linalg.svdvals(G)
    # Eckart–Young: the error of the best rank-4 approximation is the energy of the other singular values
    torch.testing.assert_close((G - left @ right).norm() ** 2, S[4:].pow(2).sum(), rtol=1e-4, atol=1e-5)
    whole_left, whole_right = low_rank(G, 0)
    assert torch.equal(whole_left @ whole_right, G)


def trained_tiny_model(seed: int, steps: int = 30) -> CramBERT:
    """A tiny model after a few SGD steps on clean rows: it now predicts the alphabet, so noisy rows stand out."""
    model = tiny_model(seed)
    for step in range(steps):
        batch = tiny_mlm_batch(16, seed=1000 + step)
        sgd_step(model, model(*batch)[1], lr=0.2)
    return model


@pytest.mark.parametrize("score", ["loss", "decoder"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_policy_weights_are_on_the_simplex_and_downweight_noise(score, seed):
    model = trained_tiny_model(seed) if score == "loss" else tiny_model(seed)
    policy = LearningLawPolicy(LearningLawPolicyConfig(refresh_every=5, score=score), tiny_mlm_batch(32, seed=3 + seed))
    policy.watch(model)
    input_ids, attention_mask, labels = tiny_mlm_batch(16, seed=40 + seed, noisy_rows=(2, 9))
    logits = model(input_ids, attention_mask, labels)[0]
    w = policy.weights(model, logits, labels)
    assert w.shape == (16,) and (w >= 0).all() and torch.isclose(w.sum(), torch.tensor(1.0))
    clean = torch.ones(16, dtype=torch.bool)
    clean[[2, 9]] = False
    assert w[~clean].max() < 0.5 * w[clean].mean()
    loss = weighted_mlm_loss(logits, labels, w)  # what train.py does
    assert torch.isfinite(loss)


def test_loss_score_keeps_examples_within_the_margin_of_the_desired_losses_equally():
    # The reference by hand: per-example cross-entropy, the desired batch's mean and std, weight 1/k for the k kept.
    model = trained_tiny_model(0)
    desired = tiny_mlm_batch(32, seed=5)
    policy = LearningLawPolicy(LearningLawPolicyConfig(loss_margin=0.5), desired)
    policy.watch(model)
    input_ids, attention_mask, labels = tiny_mlm_batch(16, seed=6, noisy_rows=(0, 5, 7))
    logits = model(input_ids, attention_mask, labels)[0]
    w = policy.weights(model, logits, labels)

    def losses(batch):
        with torch.no_grad():
            out = model(batch[0], batch[1])[0]
        return torch.stack([F.cross_entropy(out[i], batch[2][i], ignore_index=-100) for i in range(len(batch[0]))])
    reference = losses(desired)
    kept = losses((input_ids, attention_mask, labels)) <= reference.mean() + 0.5 * reference.std()
    assert 0 < kept.sum() < 16 and not kept[[0, 5, 7]].any()
    torch.testing.assert_close(w, kept.float() / kept.sum())


def test_policy_needs_the_forward_pass_it_weights():
    model = tiny_model()
    policy = LearningLawPolicy(LearningLawPolicyConfig(), tiny_mlm_batch(8, seed=3))
    input_ids, attention_mask, labels = tiny_mlm_batch(4, seed=4)
    with pytest.raises(RuntimeError, match="watch"):
        policy.weights(model, model(input_ids, attention_mask, labels)[0], labels)
    policy.watch(model)
    grown = tiny_model(seed=1)  # e.g. the model after growth: the hook must follow it
    policy.watch(grown)
    assert policy.watched is grown.head_norm
    model(input_ids, attention_mask, labels)  # the old model's forward no longer feeds the policy
    assert policy.decoder_input is None


def sgd_step(model, loss, lr=0.5):
    grads = torch.autograd.grad(loss, list(model.parameters()))
    with torch.no_grad():
        for p, g in zip(model.parameters(), grads):
            p -= lr * g


def test_policy_state_dict_round_trip_resumes_exactly():
    model = tiny_model()
    config = LearningLawPolicyConfig(refresh_every=3, step_size=2.0)
    policy = LearningLawPolicy(config, tiny_mlm_batch(16, seed=5))
    policy.watch(model)

    def weights(policy, batch):
        policy.watch(model)
        logits = model(*batch)[0]
        return logits, policy.weights(model, logits, batch[2])
    for step in range(2):  # the desired gradient cached at call 0 is now stale: resume must keep it
        batch = tiny_mlm_batch(8, seed=10 + step, noisy_rows=(1,))
        logits, w = weights(policy, batch)
        sgd_step(model, weighted_mlm_loss(logits, batch[2], w))
    buffer = io.BytesIO()
    torch.save(policy.state_dict(), buffer)
    buffer.seek(0)
    resumed = LearningLawPolicy(LearningLawPolicyConfig(), tiny_mlm_batch(16, seed=99))
    resumed.load_state_dict(torch.load(buffer, weights_only=True))  # plain types and tensors only
    assert resumed.config == config and resumed.calls == 2
    fresh = LearningLawPolicy(config, tiny_mlm_batch(16, seed=5))  # recomputes at its first call instead
    for step in range(3):  # calls 2 (cached gradient), 3 (refresh), 4
        batch = tiny_mlm_batch(8, seed=20 + step, noisy_rows=(1,))
        expected = weights(policy, batch)[1]
        assert torch.equal(weights(resumed, batch)[1], expected)
        if step == 0:
            assert not torch.allclose(weights(fresh, batch)[1], expected)


@pytest.mark.parametrize("score, rank", [("decoder", 0), ("decoder", 4), ("loss", 0)])
def test_policy_flop_estimate_matches_torch_flop_counter(score, rank):
    # Two calls with refresh_every=2: one refreshes the desired gradient, one reuses it. The math attention backend
    # runs attention as matmuls the counter sees, as in the model's own FLOP test (tests/test_scaling.py).
    model_config = preset_config("tiny", vocab_size=64, max_seq_len=16)
    model = tiny_model()
    config = LearningLawPolicyConfig(refresh_every=2, desired_batch_size=32, rank=rank, score=score)
    policy = LearningLawPolicy(config, tiny_mlm_batch(32, seed=3))  # 4 of 16 positions labelled: a rate of 0.25
    policy.watch(model)
    input_ids, attention_mask, labels = tiny_mlm_batch(16, seed=4)
    n_kept = count_kept(16, 16, 0.25)
    total = 0
    for _ in range(2):
        logits = model(input_ids, attention_mask, labels, n_kept=n_kept)[0]  # the training forward: not the policy's cost
        with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
            policy.weights(model, logits, labels, n_kept=n_kept)
        total += counter.get_total_flops()
    estimate = 2 * policy_flops(model_config, 16, 16, 0.25, config)
    assert total == pytest.approx(estimate, rel=1e-9)  # every matmul, counted exactly
