"""Hidden checks of B2 (instructor kit only): the PPO formula written out, on fresh inputs and float32."""

import pytest
import torch

from mappo_baseline import ppo_loss


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("norm_adv,clip_vloss", [(True, True), (False, True), (False, False)])
def test_equals_the_written_out_formula(dtype, norm_adv, clip_vloss):
    g = torch.Generator().manual_seed(11)
    n = 200
    logp = torch.randn(n, generator=g).to(dtype)
    logp_old = logp + 0.4 * torch.randn(n, generator=g).to(dtype)
    adv, ent = torch.randn(n, generator=g).to(dtype), torch.rand(n, generator=g).to(dtype)
    value, value_old, returns = (torch.randn(n, generator=g).to(dtype) for _ in range(3))
    loss, stats = ppo_loss(logp=logp, logp_old=logp_old, advantages=adv, entropy=ent, value=value, value_old=value_old,
                           returns=returns, clip_coef=0.15, ent_coef=0.02, vf_coef=0.7, norm_adv=norm_adv,
                           clip_vloss=clip_vloss)  # fmt: skip
    a = (adv - adv.mean()) / (adv.std() + 1e-8) if norm_adv else adv
    r = (logp - logp_old).exp()
    pg = -torch.min(r * a, r.clamp(0.85, 1.15) * a).mean()
    if clip_vloss:
        vc = value_old + (value - value_old).clamp(-0.15, 0.15)
        vl = 0.5 * torch.max((value - returns) ** 2, (vc - returns) ** 2).mean()
    else:
        vl = 0.5 * ((value - returns) ** 2).mean()
    torch.testing.assert_close(loss, pg - 0.02 * ent.mean() + 0.7 * vl)
    assert stats["policy_loss"] == pytest.approx(pg.item(), rel=1e-5)
    assert stats["value_loss"] == pytest.approx(vl.item(), rel=1e-5)
