"""C5, the two KLs that tie the guider and the learner: which side is held fixed (magpo_mpe.py: tether_kls;
docs/algorithm.md §5 and §7)."""

import torch
from conftest import cases, close, load_fixture

from magpo_mpe import tether_kls


def test_matches_the_fixture_values_and_gradients():
    for k, case in enumerate(cases(load_fixture("C5"))):
        kind = "continuous" if case["continuous"] else "discrete"
        guider = case["guider_params"].clone().requires_grad_(True)
        learner = case["learner_params"].clone().requires_grad_(True)
        kl_to, kl_from = tether_kls(guider, learner, case["continuous"])
        close(kl_to, case["kl_to_learner"], f"kl_to_learner ({kind})", "C5")
        close(kl_from, case["kl_from_guider"], f"kl_from_guider ({kind})", "C5")
        for out, w, name in ((kl_to, case["w_to"], "to"), (kl_from, case["w_from"], "from")):
            grads = torch.autograd.grad((w * out).sum(), [guider, learner], allow_unused=True, retain_graph=True)
            grads = [torch.zeros_like(x) if g is None else g for x, g in zip((guider, learner), grads)]
            label = "kl_to_learner" if name == "to" else "kl_from_guider"
            close(grads[0], case[f"{name}_d_guider"], f"d {label} / d guider_params ({kind})", "C5")
            close(grads[1], case[f"{name}_d_learner"], f"d {label} / d learner_params ({kind})", "C5")


def test_the_guider_term_moves_only_the_guider_and_the_learner_term_only_the_learner():
    guider = torch.randn(10, 3, 5, dtype=torch.float64, requires_grad=True)
    learner = torch.randn(10, 3, 5, dtype=torch.float64, requires_grad=True)
    kl_to, kl_from = tether_kls(guider, learner, False)
    g, l_ = torch.autograd.grad(kl_to.sum(), [guider, learner], allow_unused=True)
    assert l_ is None or torch.all(l_ == 0), "KL(mu || sg pi) must not move the learner"
    assert g is not None and g.abs().sum() > 0
    g, l_ = torch.autograd.grad(kl_from.sum(), [guider, learner], allow_unused=True)
    assert g is None or torch.all(g == 0), "KL(sg mu || pi) must not move the guider"
    assert l_ is not None and l_.abs().sum() > 0
    # both are the forward KL, KL(mu || pi): the learner's gradient is (pi - mu), that of a cross-entropy to mu
    mu, pi = guider.softmax(-1).detach(), learner.softmax(-1).detach()
    close(l_, pi - mu, "d KL(sg mu || pi) / d learner logits", "C5")
