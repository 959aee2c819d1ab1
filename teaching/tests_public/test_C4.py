"""C4, the masked KL (magpo_mpe.py: masked_kl; docs/algorithm.md §5)."""

import torch
from conftest import cases, close, load_fixture

from magpo_mpe import masked_kl


def test_matches_the_fixture_with_gradients():
    for k, case in enumerate(cases(load_fixture("C4"))):
        logp = case["logp"].clone().requires_grad_(True)
        kl = case["kl_to_learner"].clone().requires_grad_(True)
        loss, out_of_band = masked_kl(logp, case["logp_learner"], kl, case["delta"])
        close(loss, case["loss"], f"the masked KL (case {k}, delta {case['delta']})", "C4")
        close(out_of_band, case["out_of_band"], f"out_of_band (case {k})", "C4")
        d_logp, d_kl = torch.autograd.grad(loss, [logp, kl], allow_unused=True)
        assert d_logp is None or torch.all(d_logp == 0), "the mask is a constant: no gradient flows through it to logp"
        close(d_kl, case["d_kl_to_learner"], f"d loss / d kl_to_learner (case {k})", "C4")


def test_only_out_of_band_tokens_count_and_the_mean_runs_over_all_tokens():
    logp_learner = torch.zeros(4, dtype=torch.float64)
    logp = torch.tensor([0.5, 0.9, 1.1, 3.0], dtype=torch.float64).log()  # with delta 2 only the last is out of band
    kl = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    loss, out_of_band = masked_kl(logp, logp_learner, kl, 2.0)
    assert out_of_band.tolist() == [0.0, 0.0, 0.0, 1.0]
    assert loss.item() == 1.0, "4.0 on one token of four, averaged over all four"
    loss_inside, _ = masked_kl(logp[:3], logp_learner[:3], kl[:3], 2.0)
    assert loss_inside.item() == 0.0
