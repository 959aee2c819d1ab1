"""Hidden checks of C3 (instructor kit only): the whole guider loss with the student's double clip, against PPO
inside the band and against the exception of docs/algorithm.md §4 outside it."""

import torch

from magpo_mpe import guider_loss


def loss_and_grad(mu_over_pi, r, adv, delta=1.5, eps=0.2):
    logp_learner = torch.zeros(1, dtype=torch.float64)
    logp = torch.tensor([mu_over_pi], dtype=torch.float64).log().requires_grad_(True)
    logp_behaviour = (logp - torch.tensor([r], dtype=torch.float64).log()).detach()
    zeros = torch.zeros(1, dtype=torch.float64)
    loss, _ = guider_loss(logp=logp, logp_behaviour=logp_behaviour, logp_learner=logp_learner,
                          advantages=torch.tensor([adv], dtype=torch.float64), kl_to_learner=zeros, entropy=zeros,
                          value=zeros, value_old=zeros, returns=zeros, clip_coef=eps, delta=delta, ent_coef=0.0,
                          vf_coef=0.0, norm_adv=False)  # fmt: skip
    (grad,) = torch.autograd.grad(loss, logp)
    return grad.item()


def test_the_push_away_gradient_and_its_exception():
    # above the band with a positive advantage: dropped while r >= 1 - eps, kept (pushes away) below
    assert loss_and_grad(2.0, 0.9, 1.0) == 0.0
    assert loss_and_grad(2.0, 0.7, 1.0) < 0.0
    # below the band with a negative advantage: dropped while r <= 1 + eps, kept above
    assert loss_and_grad(0.5, 1.1, -1.0) == 0.0
    assert loss_and_grad(0.5, 1.3, -1.0) > 0.0
    # inside the band: plain PPO
    assert loss_and_grad(1.2, 1.0, 1.0) < 0.0
