"""C6, the learner's loss (magpo_mpe.py: learner_loss; docs/algorithm.md §7): alpha x off-policy PPO on the guider's
data (ratio pi / beta) + the KL from the guider."""

import torch
from conftest import cases, close, load_fixture

from magpo_mpe import learner_loss

STATS = ("learner_rl_loss", "kl_guider_learner", "learner_loss", "learner_clipfrac")


def test_matches_the_fixture_with_gradients():
    for k, case in enumerate(cases(load_fixture("C6"))):
        logp = case["logp_learner"].clone().requires_grad_(True)
        kl = case["kl_from_guider"].clone().requires_grad_(True)
        loss, stats = learner_loss(
            logp_learner=logp,
            logp_behaviour=case["logp_behaviour"],
            advantages=case["advantages"],
            kl_from_guider=kl,
            clip_coef=0.2,
            alpha=case["alpha"],
            norm_adv=case["norm_adv"],
        )
        where = f"(case {k}: alpha {case['alpha']}, norm_adv={case['norm_adv']})"
        close(loss, case["loss"], f"loss {where}", "C6")
        for name in STATS:
            close(stats[name], case[f"stats_{name}"], f"stats['{name}'] {where}", "C6")
        d_logp, d_kl = torch.autograd.grad(loss, [logp, kl], allow_unused=True)
        d_logp = torch.zeros_like(logp) if d_logp is None else d_logp
        close(d_logp, case["d_logp_learner"], f"d loss / d logp_learner {where}", "C6")
        close(d_kl, case["d_kl_from_guider"], f"d loss / d kl_from_guider {where}", "C6")


def test_alpha_zero_is_pure_distillation():
    logp = torch.randn(30, dtype=torch.float64, requires_grad=True)
    kl = torch.rand(30, dtype=torch.float64, requires_grad=True)
    loss, _ = learner_loss(logp_learner=logp, logp_behaviour=torch.randn(30, dtype=torch.float64),
                           advantages=torch.randn(30, dtype=torch.float64), kl_from_guider=kl, clip_coef=0.2, alpha=0.0)  # fmt: skip
    close(loss, kl.mean(), "the loss with alpha 0", "C6")
    d_logp, d_kl = torch.autograd.grad(loss, [logp, kl], allow_unused=True)
    assert d_logp is None or torch.all(d_logp == 0)
    close(d_kl, torch.full((30,), 1 / 30, dtype=torch.float64), "d loss / d kl_from_guider with alpha 0", "C6")


def test_on_the_behaviour_policy_the_rl_term_is_minus_the_mean_advantage():
    logp = torch.randn(30, dtype=torch.float64)
    adv = torch.randn(30, dtype=torch.float64)
    _, stats = learner_loss(logp_learner=logp, logp_behaviour=logp, advantages=adv, kl_from_guider=torch.zeros(30),
                            clip_coef=0.2, alpha=1.0, norm_adv=False)  # fmt: skip
    assert abs(stats["learner_rl_loss"] + adv.mean().item()) < 1e-12, "ratio pi / beta = 1 on the behaviour policy"
