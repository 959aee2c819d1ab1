"""C7 (optional), the KL between two action distributions (magpo_mpe.py: dist_kl; docs/algorithm.md §5)."""

import torch
from conftest import cases, close, load_fixture

from magpo_mpe import MASKED_LOGIT, dist_kl


def test_matches_the_fixture_with_gradients():
    for k, case in enumerate(cases(load_fixture("C7"))):
        kind = "continuous" if case["continuous"] else "discrete, with masked actions"
        p, q = case["p"].clone().requires_grad_(True), case["q"].clone().requires_grad_(True)
        kl = dist_kl(p, q, case["continuous"])
        close(kl, case["kl"], f"KL ({kind})", "C7")
        d_p, d_q = torch.autograd.grad((case["weights"] * kl).sum(), [p, q])
        close(d_p, case["d_p"], f"d KL / d p ({kind})", "C7")
        close(d_q, case["d_q"], f"d KL / d q ({kind})", "C7")


def test_matches_torch_distributions():
    p, q = torch.randn(20, 6, dtype=torch.float64), torch.randn(20, 6, dtype=torch.float64)
    expected = torch.distributions.kl_divergence(
        torch.distributions.Categorical(logits=p), torch.distributions.Categorical(logits=q)
    )
    close(dist_kl(p, q, False), expected, "categorical KL", "C7")
    mean_p, mean_q = torch.randn(20, 2, dtype=torch.float64), torch.randn(20, 2, dtype=torch.float64)
    std_p, std_q = torch.rand(20, 2, dtype=torch.float64) + 0.3, torch.rand(20, 2, dtype=torch.float64) + 0.3
    expected = torch.distributions.kl_divergence(
        torch.distributions.Normal(mean_p, std_p), torch.distributions.Normal(mean_q, std_q)
    ).sum(-1)
    p = torch.cat([mean_p, std_p.log()], -1)
    q = torch.cat([mean_q, std_q.log()], -1)
    close(dist_kl(p, q, True), expected, "Gaussian KL (of the pre-tanh Gaussians)", "C7")


def test_masked_actions_carry_no_mass_and_stay_finite():
    p, q = torch.randn(5, 4, dtype=torch.float64), torch.randn(5, 4, dtype=torch.float64)
    p[:, 2] = q[:, 2] = MASKED_LOGIT
    kl = dist_kl(p, q, False)
    assert torch.isfinite(kl).all()
    close(kl, dist_kl(p[:, [0, 1, 3]], q[:, [0, 1, 3]], False), "KL with a masked action against KL without it", "C7")
    assert torch.all(dist_kl(p, p, False).abs() < 1e-12)
