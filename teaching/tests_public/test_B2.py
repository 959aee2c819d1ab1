"""B2, MAPPO's loss: clipped surrogate, clipped value loss, entropy bonus (mappo_baseline.py: ppo_loss;
docs/algorithm.md §4 and §6, which MAPPO shares with the guider)."""

import torch
from conftest import cases, close, load_fixture

from mappo_baseline import ppo_loss

STATS = ("policy_loss", "value_loss", "entropy", "approx_kl", "clipfrac")


def call(case, **live):
    return ppo_loss(
        logp=live.get("logp", case["logp"]),
        logp_old=case["logp_old"],
        advantages=case["advantages"],
        entropy=live.get("entropy", case["entropy"]),
        value=live.get("value", case["value"]),
        value_old=case["value_old"],
        returns=case["returns"],
        clip_coef=0.2,
        ent_coef=0.01,
        vf_coef=0.5,
        norm_adv=case["norm_adv"],
        clip_vloss=case["clip_vloss"],
    )


def test_matches_the_fixture_with_gradients():
    for k, case in enumerate(cases(load_fixture("B2"))):
        live = {name: case[name].clone().requires_grad_(True) for name in ("logp", "entropy", "value")}
        loss, stats = call(case, **live)
        where = f"(case {k}: norm_adv={case['norm_adv']}, clip_vloss={case['clip_vloss']})"
        close(loss, case["loss"], f"loss {where}", "B2")
        for name in STATS:
            close(stats[name], case[f"stats_{name}"], f"stats['{name}'] {where}", "B2")
        d_logp, d_entropy, d_value = torch.autograd.grad(loss, [live["logp"], live["entropy"], live["value"]])
        close(d_logp, case["d_logp"], f"d loss / d logp {where}", "B2")
        close(d_entropy, case["d_entropy"], f"d loss / d entropy {where}", "B2")
        close(d_value, case["d_value"], f"d loss / d value {where}", "B2")


def test_the_clip_stops_the_gradient_only_on_the_gaining_side():
    logp_old = torch.zeros(4, dtype=torch.float64)
    # ratios 1.5 and 0.5 with a positive advantage, 1.5 and 0.5 with a negative one
    logp = torch.tensor([1.5, 0.5, 1.5, 0.5], dtype=torch.float64).log().requires_grad_(True)
    adv = torch.tensor([1.0, 1.0, -1.0, -1.0], dtype=torch.float64)
    zeros = torch.zeros(4, dtype=torch.float64)
    loss, _ = ppo_loss(logp=logp, logp_old=logp_old, advantages=adv, entropy=zeros, value=zeros, value_old=zeros,
                       returns=zeros, clip_coef=0.2, ent_coef=0.0, vf_coef=0.0, norm_adv=False)  # fmt: skip
    (grad,) = torch.autograd.grad(loss, logp)
    assert grad[0] == 0 and grad[3] == 0, "past the clip on the side that would gain, there is no gradient"
    assert grad[1] < 0 and grad[2] > 0, "past the clip on the losing side, the gradient stays (the min keeps r * A)"
