"""The teaching kit's fixtures (teaching/README.md): for each exercise, float64 inputs drawn from the instructor's seed,
and the reference's outputs and gradients on them. `make_assignment.py build` stores them as tests/fixtures/ID.npz; the
kit's public checks (teaching/tests_public/test_ID.py) compare the student's code with these numbers, so the kit holds
values and no reference code. Gradients are part of every loss fixture: they catch which side of a KL is detached and
what a clip lets through, which a loss value alone does not.

Each function takes the seed and returns {name: numpy array}; inputs and outputs of case k are `k_<name>`.
"""

import hashlib
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import magpo_mpe  # noqa: E402
import mappo_baseline  # noqa: E402
import theory_check  # noqa: E402


def generators(seed, exercise):
    """A numpy and a torch generator for one exercise: its numbers do not move when another exercise changes."""
    value = int(hashlib.sha256(f"{seed}-{exercise}".encode()).hexdigest()[:12], 16)
    return np.random.default_rng(value), torch.Generator().manual_seed(value)


def randn(g, *shape, scale=1.0):
    return torch.randn(*shape, generator=g, dtype=torch.float64) * scale


def numpy(x):
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def grads(output, inputs):
    """d output / d each input (zeros where the output does not depend on it)."""
    found = torch.autograd.grad(output, inputs, allow_unused=True, retain_graph=True)
    return [torch.zeros_like(x) if g is None else g for x, g in zip(inputs, found)]


# ---------------------------------------------------------------------------------------------- Part A
def fixture_A1(seed):
    rng, _ = generators(seed, "A1")
    out = {}
    for k, eta in enumerate([0.1, 1.0, 8.0]):
        mu = rng.dirichlet(np.ones(9), size=6)  # (S, M) joint policy
        Q = rng.normal(0.0, 3.0, size=(6, 9))
        out |= {f"{k}_mu": mu, f"{k}_Q": Q, f"{k}_eta": np.array(eta), f"{k}_out": theory_check.guider_step(mu, Q, eta)}
    return out


def fixture_A2(seed):
    rng, _ = generators(seed, "A2")
    out = {}
    for k, (num_states, num_agents, num_actions, num_obs) in enumerate([(5, 2, 3, 3), (6, 3, 2, 2), (4, 2, 2, 4)]):
        game = theory_check.random_game(rng, num_states, num_agents, num_actions, 0.9)
        obs_map = theory_check.random_obs_map(rng, num_agents, num_states, num_obs)
        mu_hat = rng.dirichlet(np.ones(num_actions**num_agents), size=num_states)
        d = rng.dirichlet(np.ones(num_states))
        out |= {
            f"{k}_P": game.P,
            f"{k}_R": game.R,
            f"{k}_rho": game.rho,
            f"{k}_gamma": np.array(game.gamma),
            f"{k}_num_agents": np.array(num_agents),
            f"{k}_num_actions": np.array(num_actions),
            f"{k}_obs_map": obs_map,
            f"{k}_mu_hat": mu_hat,
            f"{k}_d": d,
            f"{k}_out": theory_check.project(game, mu_hat, obs_map, d),
        }
    return out


# ---------------------------------------------------------------------------------------------- Part B
def fixture_B1(seed):
    _, g = generators(seed, "B1")
    out = {}
    T, B, N = 9, 4, 3
    for k, done_width in enumerate([1, N]):
        rewards, values = randn(g, T, B, N), randn(g, T, B, N)
        dones = (torch.rand(T, B, done_width, generator=g, dtype=torch.float64) < 0.25).double()
        next_value = randn(g, B, N)
        next_done = (torch.rand(B, done_width, generator=g, dtype=torch.float64) < 0.25).double()
        adv, ret = mappo_baseline.compute_gae(rewards, values, dones, next_value, next_done, 0.99, 0.95)
        out |= {
            f"{k}_rewards": numpy(rewards),
            f"{k}_values": numpy(values),
            f"{k}_dones": numpy(dones),
            f"{k}_next_value": numpy(next_value),
            f"{k}_next_done": numpy(next_done),
            f"{k}_advantages": numpy(adv),
            f"{k}_returns": numpy(ret),
        }
    return out


PPO_STATS = ("policy_loss", "value_loss", "entropy", "approx_kl", "clipfrac")


def fixture_B2(seed):
    _, g = generators(seed, "B2")
    out = {}
    for k, (norm_adv, clip_vloss) in enumerate([(True, True), (False, False), (True, False)]):
        logp = randn(g, 16, 8, scale=0.5) - 1.5
        logp_old = (logp + randn(g, 16, 8, scale=0.3)).detach()
        advantages, entropy = randn(g, 16, 8), randn(g, 16, 8).abs() + 0.5
        value, value_old, returns = randn(g, 16, 8), randn(g, 16, 8), randn(g, 16, 8)
        live = [x.clone().requires_grad_(True) for x in (logp, entropy, value)]
        loss, stats = mappo_baseline.ppo_loss(
            logp=live[0],
            logp_old=logp_old,
            advantages=advantages,
            entropy=live[1],
            value=live[2],
            value_old=value_old,
            returns=returns,
            clip_coef=0.2,
            ent_coef=0.01,
            vf_coef=0.5,
            norm_adv=norm_adv,
            clip_vloss=clip_vloss,
        )
        d_logp, d_entropy, d_value = grads(loss, live)
        out |= {f"{k}_{name}": numpy(x) for name, x in zip(("logp", "entropy", "value"), live)}
        out |= {
            f"{k}_logp_old": numpy(logp_old),
            f"{k}_advantages": numpy(advantages),
            f"{k}_value_old": numpy(value_old),
            f"{k}_returns": numpy(returns),
            f"{k}_norm_adv": np.array(norm_adv),
            f"{k}_clip_vloss": np.array(clip_vloss),
            f"{k}_loss": numpy(loss),
            f"{k}_d_logp": numpy(d_logp),
            f"{k}_d_entropy": numpy(d_entropy),
            f"{k}_d_value": numpy(d_value),
        }
        out |= {f"{k}_stats_{name}": np.array(stats[name]) for name in PPO_STATS}
    return out


def fixture_B3(seed):
    _, g = generators(seed, "B3")
    obs, state = randn(g, 2, 3, 4, 5), randn(g, 2, 3, 7)
    return {
        "obs": numpy(obs),
        "state": numpy(state),
        "mappo": numpy(mappo_baseline.critic_inputs(obs, state, False)),
        "ippo": numpy(mappo_baseline.critic_inputs(obs, state, True)),
    }


# ---------------------------------------------------------------------------------------------- Part C
def fixture_C1(seed):
    _, g = generators(seed, "C1")
    out = {}
    for k, shape in enumerate([(6, 4, 3), (6, 4)]):
        x = randn(g, *shape)
        perm = torch.rand(6, 4, generator=g).argsort(dim=1)
        out |= {
            f"{k}_x": numpy(x),
            f"{k}_perm": numpy(perm),
            f"{k}_positions": numpy(magpo_mpe.to_positions(x, perm)),
            f"{k}_agents": numpy(magpo_mpe.to_agents(x, perm)),
        }
    return out


def fixture_C2(seed):
    _, g = generators(seed, "C2")
    discrete = torch.randint(0, 5, (6, 4), generator=g)
    continuous = randn(g, 6, 4, 2)
    return {
        "discrete_actions": numpy(discrete),
        "discrete_tokens": numpy(magpo_mpe.shifted_tokens(discrete, 5, False, torch.float64)),
        "continuous_actions": numpy(continuous),
        "continuous_tokens": numpy(magpo_mpe.shifted_tokens(continuous, 2, True, torch.float64)),
    }


def fixture_C3(seed):
    _, g = generators(seed, "C3")
    out = {}
    for k, delta in enumerate([1.3, 2.0, 1.05]):
        logp_learner = randn(g, 300, scale=0.5) - 1.5
        logp = (logp_learner + randn(g, 300, scale=0.4)).requires_grad_(True)
        logp_behaviour = logp.detach() + randn(g, 300, scale=0.1)
        weights = randn(g, 300)
        r_tilde = magpo_mpe.tethered_ratio(logp, logp_learner, logp_behaviour, delta)
        (d_logp,) = grads((weights * r_tilde).sum(), [logp])
        out |= {
            f"{k}_logp": numpy(logp),
            f"{k}_logp_learner": numpy(logp_learner),
            f"{k}_logp_behaviour": numpy(logp_behaviour),
            f"{k}_delta": np.array(delta),
            f"{k}_weights": numpy(weights),
            f"{k}_r_tilde": numpy(r_tilde),
            f"{k}_d_logp": numpy(d_logp),
        }
    return out


def fixture_C4(seed):
    _, g = generators(seed, "C4")
    out = {}
    for k, delta in enumerate([1.3, 3.0]):
        logp_learner = randn(g, 8, 40, scale=0.5) - 1.5
        logp = (logp_learner + randn(g, 8, 40, scale=0.4)).requires_grad_(True)
        kl_to_learner = (randn(g, 8, 40).abs() * 0.2).requires_grad_(True)
        loss, out_of_band = magpo_mpe.masked_kl(logp, logp_learner, kl_to_learner, delta)
        d_logp, d_kl = grads(loss, [logp, kl_to_learner])
        out |= {
            f"{k}_logp": numpy(logp),
            f"{k}_logp_learner": numpy(logp_learner),
            f"{k}_kl_to_learner": numpy(kl_to_learner),
            f"{k}_delta": np.array(delta),
            f"{k}_loss": numpy(loss),
            f"{k}_out_of_band": numpy(out_of_band),
            f"{k}_d_logp": numpy(d_logp),
            f"{k}_d_kl_to_learner": numpy(d_kl),
        }
    return out


def fixture_C5(seed):
    _, g = generators(seed, "C5")
    out = {}
    for k, (continuous, width) in enumerate([(False, 5), (True, 4)]):
        guider = randn(g, 6, 3, width).requires_grad_(True)
        learner = randn(g, 6, 3, width).requires_grad_(True)
        w_to, w_from = randn(g, 6, 3), randn(g, 6, 3)
        kl_to, kl_from = magpo_mpe.tether_kls(guider, learner, continuous)
        to_g, to_l = grads((w_to * kl_to).sum(), [guider, learner])
        from_g, from_l = grads((w_from * kl_from).sum(), [guider, learner])
        out |= {
            f"{k}_continuous": np.array(continuous),
            f"{k}_guider_params": numpy(guider),
            f"{k}_learner_params": numpy(learner),
            f"{k}_w_to": numpy(w_to),
            f"{k}_w_from": numpy(w_from),
            f"{k}_kl_to_learner": numpy(kl_to),
            f"{k}_kl_from_guider": numpy(kl_from),
            f"{k}_to_d_guider": numpy(to_g),
            f"{k}_to_d_learner": numpy(to_l),
            f"{k}_from_d_guider": numpy(from_g),
            f"{k}_from_d_learner": numpy(from_l),
        }
    return out


LEARNER_STATS = ("learner_rl_loss", "kl_guider_learner", "learner_loss", "learner_clipfrac")


def fixture_C6(seed):
    _, g = generators(seed, "C6")
    out = {}
    for k, (alpha, norm_adv) in enumerate([(2.0, True), (0.5, False), (0.0, True)]):
        logp_behaviour = randn(g, 12, 10, scale=0.5) - 1.5
        logp_learner = (logp_behaviour + randn(g, 12, 10, scale=0.3)).requires_grad_(True)
        advantages = randn(g, 12, 10)
        kl_from_guider = (randn(g, 12, 10).abs() * 0.3).requires_grad_(True)
        loss, stats = magpo_mpe.learner_loss(
            logp_learner=logp_learner,
            logp_behaviour=logp_behaviour,
            advantages=advantages,
            kl_from_guider=kl_from_guider,
            clip_coef=0.2,
            alpha=alpha,
            norm_adv=norm_adv,
        )
        d_logp, d_kl = grads(loss, [logp_learner, kl_from_guider])
        out |= {
            f"{k}_logp_learner": numpy(logp_learner),
            f"{k}_logp_behaviour": numpy(logp_behaviour),
            f"{k}_advantages": numpy(advantages),
            f"{k}_kl_from_guider": numpy(kl_from_guider),
            f"{k}_alpha": np.array(alpha),
            f"{k}_norm_adv": np.array(norm_adv),
            f"{k}_loss": numpy(loss),
            f"{k}_d_logp_learner": numpy(d_logp),
            f"{k}_d_kl_from_guider": numpy(d_kl),
        }
        out |= {f"{k}_stats_{name}": np.array(stats[name]) for name in LEARNER_STATS}
    return out


def fixture_C7(seed):
    _, g = generators(seed, "C7")
    out = {}
    avail = torch.rand(6, 3, 5, generator=g) < 0.7
    avail[..., 0] = True  # at least one legal action per token
    for k, continuous in enumerate([False, True]):
        width = 4 if continuous else 5
        p, q = randn(g, 6, 3, width), randn(g, 6, 3, width)
        if not continuous:
            p, q = magpo_mpe.masked_logits(p, avail), magpo_mpe.masked_logits(q, avail)
        p, q = p.requires_grad_(True), q.requires_grad_(True)
        weights = randn(g, 6, 3)
        kl = magpo_mpe.dist_kl(p, q, continuous)
        d_p, d_q = grads((weights * kl).sum(), [p, q])
        out |= {
            f"{k}_continuous": np.array(continuous),
            f"{k}_p": numpy(p),
            f"{k}_q": numpy(q),
            f"{k}_weights": numpy(weights),
            f"{k}_kl": numpy(kl),
            f"{k}_d_p": numpy(d_p),
            f"{k}_d_q": numpy(d_q),
        }
    return out
