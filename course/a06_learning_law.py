"""Assignment 6: the Learning Law's optimal policy on a perceptron (course/06-learning-law.md)."""
import torch

from course.kit import Assignment
from experiments.policy_bench import perceptron_task, reproduce, reproduction_config
from policy import area_under_curve, optimise_policy, project_to_simplex, run, uniform_policy

ASSIGNMENT = Assignment(
    number=6, slug="learning-law", title="The Learning Law's optimal policy",
    functions=("policy.py:project_to_simplex", "policy.py:area_under_curve", "policy.py:optimise_policy"),
    metric="auc_ratio",
    paper="Gu et al. 2024, Sec. 2 (objective), Sec. 3 (the Law), Sec. 4 (proximal gradient); Duchi et al. 2008, Fig. 1")


def check_projection_by_hand():
    """projections worked by hand: a point on the simplex stays, others move to the nearest point"""
    cases = [([0.2, 0.3, 0.5], [0.2, 0.3, 0.5]), ([2.0, 0.0], [1.0, 0.0]), ([0.3, 0.3, 0.3], [1 / 3] * 3),
             ([1.0, 1.0, -5.0], [0.5, 0.5, 0.0]), ([0.0, 0.0, 0.0, 0.0], [0.25] * 4)]
    for v, expected in cases:
        got = project_to_simplex(torch.tensor([v]))
        assert torch.allclose(got, torch.tensor([expected]), atol=1e-6), f"projection of {v}: {got.tolist()[0]}"


def check_projection_is_nearest():
    """every row lands on the simplex, and no random simplex point is nearer (the definition of a projection)"""
    generator = torch.Generator().manual_seed(0)
    v = torch.randn(20, 7, generator=generator) * 2
    p = project_to_simplex(v)
    assert (p >= 0).all() and torch.allclose(p.sum(dim=1), torch.ones(20), atol=1e-6), "not on the simplex"
    others = torch.distributions.Dirichlet(torch.ones(7)).sample((20, 500))  # (20, 500, 7) points of the simplex
    assert ((v[:, None] - others).norm(dim=-1) >= (v - p).norm(dim=-1, keepdim=True) - 1e-6).all(), \
        "a simplex point is nearer than the projection"


def check_area_under_curve():
    """J = the mean of L(θ_1..θ_T): L(θ_0) does not depend on the policy and is left out"""
    assert torch.isclose(area_under_curve(torch.tensor([9.0, 3.0, 2.0, 1.0])), torch.tensor(2.0)), "(3+2+1)/3 = 2"


def tiny_task(seed: int):
    return perceptron_task(reproduction_config("perceptron", n_train=64, n_held_out=64, dim=16, seed=seed, lr=0.5))


def check_optimised_policy_beats_uniform():
    """on a small noisy perceptron: γ is (steps/segment, N) on the simplex, starts from uniform, lowers J and
    down-weights flipped labels"""
    task = tiny_task(0)
    gamma, history = optimise_policy(task, steps=20, segment=4, outer_epochs=15, outer_lr=1.0)
    assert gamma.shape == (5, 64), f"γ has shape {tuple(gamma.shape)}: one row of weights per segment of 4 steps"
    assert (gamma >= 0).all() and torch.allclose(gamma.sum(1), torch.ones(5), atol=1e-5), \
        "γ rows must be on the simplex"
    uniform_j = area_under_curve(run(task, uniform_policy(5, 64), 4)[0]).item()
    optimised_j = area_under_curve(run(task, gamma, 4)[0]).item()
    assert optimised_j < uniform_j - 1e-3, f"J {optimised_j:.4f} is not below uniform's {uniform_j:.4f}"
    assert abs(history[0] - uniform_j) < 1e-5, "the first iteration must start from the uniform policy"
    noisy_share = gamma[:, task.noisy].sum(1).mean().item()
    assert noisy_share < task.noisy.float().mean().item(), "flipped examples must end with less than their share"


def generated(seed: int) -> dict:
    generator = torch.Generator().manual_seed(seed)
    v = torch.randn(6, 9, generator=generator)
    gamma, history = optimise_policy(tiny_task(seed), steps=8, segment=4, outer_epochs=3, outer_lr=1.0)
    return {"projection": project_to_simplex(v), "auc": area_under_curve(torch.rand(12, generator=generator)),
            "gamma": gamma, "history": torch.tensor(history)}


def experiment(seed: int) -> dict:
    """The perceptron of experiments/policy_bench.py (D = 128, N = 1024, 20% flipped labels, T = 400 steps): the
    AUC of uniform weights over the optimised policy's, on the desired (held-out) loss."""
    result = reproduce(reproduction_config("perceptron", seed=seed))
    optimised = result["rows"]["optimised"]
    return {"auc_ratio": result["speedups"]["desired"]["auc"], "test_auc_ratio": result["speedups"]["test"]["auc"],
            "noisy_weight": optimised["noisy_weight"], "spread_uniform": result["rows"]["uniform"]["spread"],
            "spread_optimised": optimised["spread"]}
