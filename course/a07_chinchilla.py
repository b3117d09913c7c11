"""Assignment 7: fitting Chinchilla's L(N, D) (course/07-chinchilla.md)."""
import math
from pathlib import Path

import torch

from course.kit import Assignment
from scaling import LAWS, ScalingLaw, fit_law, read_points

ASSIGNMENT = Assignment(
    number=7, slug="chinchilla", title="Chinchilla's law: fit and compute-optimal size",
    functions=("scaling.py:ScalingLaw.compute_optimal", "scaling.py:fit_law"),
    metric="a",
    paper="Hoffmann et al. 2022, Sec. 3.3 (Approach 3, Eq. 2 and 4) and App. D.2 (the Huber fit)")

# The IsoFLOP sweep's measured runs on this CPU (BENCHMARKS.md, "Chinchilla"): refit them with no compute.
POINTS = Path(__file__).resolve().parents[1] / "experiments" / "scaling_points.json"


def check_compute_optimal_spends_the_budget():
    """N_opt and D_opt spend exactly C = 6ND and satisfy the optimum's condition αA/N^α = βB/D^β"""
    law = LAWS["chinchilla"]
    for compute in (1e18, 5.76e23):
        n, d = law.compute_optimal(compute)
        assert math.isclose(6 * n * d, compute, rel_tol=1e-9), f"6ND = {6 * n * d:.3e} != C = {compute:.3e}"
        left, right = law.alpha * law.A / n ** law.alpha, law.beta * law.B / d ** law.beta
        assert math.isclose(left, right, rel_tol=1e-6), f"αA/N^α = {left:.4e} != βB/D^β = {right:.4e}"


def check_compute_optimal_is_the_minimum():
    """on a fine grid of N (D = C / 6N), no point has a lower predicted loss than N_opt"""
    law, compute = LAWS["chinchilla"], 1e21
    n_opt, d_opt = law.compute_optimal(compute)
    grid = torch.logspace(math.log10(n_opt) - 1, math.log10(n_opt) + 1, 2001, dtype=torch.float64)
    losses = law.loss(grid, compute / (6 * grid))
    best = grid[losses.argmin()].item()
    assert abs(math.log(best / n_opt)) < 0.01, f"the grid's best N is {best:.3e}, compute_optimal says {n_opt:.3e}"


def synthetic_points(law: ScalingLaw, generator: torch.Generator, noise: float = 0.003):
    """An IsoFLOP sweep drawn from a known law: 4 compute levels x 9 sizes, 0.3% multiplicative noise."""
    params, tokens = [], []
    for compute in (1e18, 1e19, 1e20, 1e21):
        n_opt, _ = law.compute_optimal(compute)
        for factor in torch.logspace(-1, 1, 9).tolist():
            params.append(n_opt * factor)
            tokens.append(compute / (6 * n_opt * factor))
    losses = [law.loss(n, d) * (1 + noise * torch.randn(1, generator=generator).item()) for n, d in zip(params, tokens)]
    return params, tokens, losses


def check_fit_recovers_a_known_law():
    """fitted to 36 noisy points of a known law, the constants come back (E 5%, α and β 0.03, a 0.02)"""
    truth = LAWS["chinchilla"]
    law = fit_law(*synthetic_points(truth, torch.Generator().manual_seed(0)), starts=4)
    assert abs(law.E / truth.E - 1) < 0.05, f"E = {law.E:.3f}, true {truth.E}"
    assert abs(law.alpha - truth.alpha) < 0.03 and abs(law.beta - truth.beta) < 0.03, \
        f"α = {law.alpha:.3f}, β = {law.beta:.3f}; true {truth.alpha}, {truth.beta}"
    assert abs(law.exponents[0] - truth.exponents[0]) < 0.02, \
        f"a = {law.exponents[0]:.3f}, true {truth.exponents[0]:.3f}"


def check_fit_shrugs_off_an_outlier():
    """one run made 30% worse moves the Huber fit's E by under 5%"""
    truth = LAWS["chinchilla"]
    params, tokens, losses = synthetic_points(truth, torch.Generator().manual_seed(1))
    losses[5] *= 1.3
    law = fit_law(params, tokens, losses, starts=4)
    assert abs(law.E / truth.E - 1) < 0.05, f"E = {law.E:.3f} with one outlier, true {truth.E}"


def generated(seed: int) -> dict:
    generator = torch.Generator().manual_seed(seed)
    E, A, B = (1.5 + torch.rand(1, generator=generator).item(), 100 + 900 * torch.rand(1, generator=generator).item(),
               100 + 900 * torch.rand(1, generator=generator).item())
    alpha, beta = (0.2 + 0.3 * torch.rand(2, generator=generator)).tolist()
    law = ScalingLaw(E=E, A=A, B=B, alpha=alpha, beta=beta)
    return {"optimal": [list(law.compute_optimal(c)) for c in (1e15, 1e19, 3e22)]}


def experiment(seed: int) -> dict:
    """Fit the law to the shipped sweep (experiments/scaling_points.json): all points for seed 0; seed k > 0 leaves
    point k - 1 out (a leave-one-out spread, so the band says how much one run moves the fit)."""
    points = read_points([str(POINTS)])
    if seed:
        points = points[:(seed - 1) % len(points)] + points[(seed - 1) % len(points) + 1:]
    law = fit_law([p["N"] for p in points], [p["D"] for p in points], [p["loss"] for p in points])
    a, b = law.exponents
    return {"a": a, "b": b, "E": law.E, "A": law.A, "B": law.B, "alpha": law.alpha, "beta": law.beta,
            "points": len(points)}
