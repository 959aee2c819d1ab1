"""C3, the double clip (magpo_mpe.py: tethered_ratio; docs/algorithm.md §4): r~ = clip(mu/pi, 1/delta, delta) * pi/beta."""

import math

import torch
from conftest import cases, close, load_fixture

from magpo_mpe import tethered_ratio


def test_matches_the_fixture_with_gradients():
    for k, case in enumerate(cases(load_fixture("C3"))):
        logp = case["logp"].clone().requires_grad_(True)
        r_tilde = tethered_ratio(logp, case["logp_learner"], case["logp_behaviour"], case["delta"])
        close(r_tilde, case["r_tilde"], f"r~ (case {k}, delta {case['delta']})", "C3")
        (grad,) = torch.autograd.grad((case["weights"] * r_tilde).sum(), logp)
        close(grad, case["d_logp"], f"d r~ / d logp (case {k}, delta {case['delta']})", "C3")


def test_inside_the_band_it_is_the_ppo_ratio_and_outside_it_does_not_move_with_mu():
    delta = 1.5
    logp_learner = torch.zeros(5, dtype=torch.float64)
    logp_behaviour = torch.full((5,), -0.2, dtype=torch.float64)
    ratios = torch.tensor([0.3, 0.7, 1.0, 1.45, 4.0], dtype=torch.float64)  # mu / pi
    logp = ratios.log().requires_grad_(True)
    r_tilde = tethered_ratio(logp, logp_learner, logp_behaviour, delta)
    inside = torch.tensor([False, True, True, True, False])
    close(r_tilde[inside], (logp - logp_behaviour).exp()[inside], "r~ inside the band", "C3")
    close(r_tilde[~inside], torch.tensor([1 / delta, delta]) * math.exp(0.2), "r~ outside the band", "C3")
    (grad,) = torch.autograd.grad(r_tilde.sum(), logp)
    assert torch.all(grad[~inside] == 0), "outside the band r~ must not depend on mu"


def test_an_infinite_delta_is_plain_ppo():
    logp = torch.randn(20, dtype=torch.float64)
    logp_learner, logp_behaviour = torch.randn(20, dtype=torch.float64), torch.randn(20, dtype=torch.float64)
    close(
        tethered_ratio(logp, logp_learner, logp_behaviour, math.inf),
        (logp - logp_behaviour).exp(),
        "r~ at delta inf",
        "C3",
    )
