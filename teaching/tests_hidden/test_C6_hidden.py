"""Hidden checks of C6 (instructor kit only): the loss written out, with alpha and the clip on fresh inputs."""

import pytest
import torch

from magpo_mpe import learner_loss


@pytest.mark.parametrize("alpha", [0.0, 1.0, 4.0])
def test_equals_the_written_out_formula(alpha):
    g = torch.Generator().manual_seed(5)
    logp_b = torch.randn(64, generator=g, dtype=torch.float64)
    logp_l = logp_b + 0.5 * torch.randn(64, generator=g, dtype=torch.float64)
    adv, kl = torch.randn(64, generator=g, dtype=torch.float64), torch.rand(64, generator=g, dtype=torch.float64)
    loss, stats = learner_loss(logp_learner=logp_l, logp_behaviour=logp_b, advantages=adv, kl_from_guider=kl,
                               clip_coef=0.1, alpha=alpha)  # fmt: skip
    a = (adv - adv.mean()) / (adv.std() + 1e-8)
    r = (logp_l - logp_b).exp()
    rl = -torch.min(r * a, r.clamp(0.9, 1.1) * a).mean()
    torch.testing.assert_close(loss, alpha * rl + kl.mean())
    assert stats["learner_rl_loss"] == pytest.approx(rl.item())
