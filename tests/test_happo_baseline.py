"""HAPPO's math and update (happo_baseline.py, docs/algorithm.md §15) on hand-built batches: the factor each agent
sees, that no gradient flows through it, normalise-then-weight, that only the agent being updated moves, the agent
orders of both schemes, one agent = MAPPO, and the contiguous recurrent chunks. The end-to-end runs are in the
parametrised modules (tests/helpers.py's CASES: test_scripts, test_resume, test_enjoy, test_protocol)."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn as nn

import happo_baseline as happo
import mappo_baseline as mappo

C, S, OBS, A, HIDDEN, STATE = 8, 6, 5, 4, 8, 7


def settings(scheme, **overrides):
    return SimpleNamespace(
        **{
            **dict(happo_scheme=scheme, clip_coef=0.2, ent_coef=0.01, vf_coef=1.0, norm_adv=True, clip_vloss=True,
                   max_grad_norm=10.0),
            **overrides,
        }
    )  # fmt: skip


def make_batch(num_agents, seed=0):
    """A rollout of S sequences of C steps, already cut into chunks, with its stored log-probs from `actors`."""
    g = torch.Generator().manual_seed(seed)
    starts = torch.rand(C, S, generator=g) < 0.2
    starts[0] = True
    batch = dict(
        obs=torch.randn(C, S, num_agents, OBS, generator=g),
        critic_in=torch.randn(C, S, num_agents, STATE, generator=g),
        avails=torch.ones(C, S, num_agents, A, dtype=torch.bool),
        advantages=torch.randn(C, S, num_agents, generator=g),
        values=torch.randn(C, S, num_agents, generator=g),
        value_targets=torch.randn(C, S, num_agents, generator=g),
        starts=starts,
        actor_h0=torch.zeros(S, num_agents, HIDDEN),
        critic_h0=torch.zeros(S, num_agents, HIDDEN),
    )
    batch["avails"][..., 0] = torch.rand(C, S, num_agents, generator=g) < 0.5  # some masked actions
    batch["avails"][..., 1] = True
    return batch


def networks(num_agents, scheme, seed=0, lr=1e-2):
    torch.manual_seed(seed)
    actors = happo.Actors(OBS, num_agents, A, False, HIDDEN)
    critic = (happo.Critic if scheme == "harl" else happo.Critics)(STATE, num_agents, HIDDEN)
    critics = [critic] if scheme == "harl" else list(critic.critics)
    return (
        actors,
        critic,
        [torch.optim.Adam(a.parameters(), lr=lr, eps=1e-5) for a in actors.agents],
        [torch.optim.Adam(c.parameters(), lr=lr, eps=1e-5) for c in critics],
    )


def sample_actions(actors, batch):
    """Actions and their log-probs from `actors` on the batch, as a rollout would store them (drawn from a fixed seed,
    whatever was built before)."""
    torch.manual_seed(123)
    with torch.no_grad():
        params, _ = actors(batch["obs"], batch["actor_h0"], batch["starts"], batch["avails"])
        actions = happo.dist_sample(params, False)
        batch["actions"], batch["logprobs"] = actions, happo.dist_log_prob(params, actions, False)


def agent_log_probs(actor, batch, i):
    with torch.no_grad():
        params, _ = actor(
            batch["obs"][:, :, i : i + 1], batch["actor_h0"][:, i : i + 1], batch["starts"], batch["avails"][:, :, i : i + 1]
        )  # fmt: skip
        return happo.dist_log_prob(params, batch["actions"][:, :, i : i + 1], False)[..., 0]


def schedule(epochs, num_minibatches, order, seed=0):
    rng = np.random.default_rng(seed)
    minibatches = [np.split(rng.permutation(S), num_minibatches) for _ in range(epochs)]
    return np.array([order] * epochs), minibatches


def record_factors(monkeypatch):
    """Every call of happo_actor_loss, in order: (the factor it got, its logp_old), the second identifying the agent."""
    calls, original = [], happo.happo_actor_loss

    def spy(**kwargs):
        calls.append((kwargs["factor"].clone(), kwargs["logp_old"].clone()))
        return original(**kwargs)

    monkeypatch.setattr(happo, "happo_actor_loss", spy)
    return calls


# ------------------------------------------------------------------------------------------ the factor
def test_the_factor_is_one_for_the_first_agent_then_the_product_of_the_earlier_agents_ratios(monkeypatch):
    """harl, 3 agents in the order 2, 0, 1, 2 epochs x 2 minibatches: agent 2 sees 1 everywhere; agent 0 sees agent
    2's new / behaviour ratio with agent 2's parameters after its update; agent 1 the product of both, token by
    token (the ratios are far from 1 here: the step size is large)."""
    batch = make_batch(3)
    actors, critic, actor_opts, critic_opts = networks(3, "harl")
    sample_actions(actors, batch)
    behaviour = [agent_log_probs(actors.agents[i], batch, i) for i in range(3)]
    orders, minibatches = schedule(2, 2, [2, 0, 1])
    calls = record_factors(monkeypatch)
    happo.happo_update(actors=actors, critic=critic, actor_optimizers=actor_opts, critic_optimizers=critic_opts,
                       batch=batch, orders=orders, minibatches=minibatches, args=settings("harl"))  # fmt: skip
    ratio = {i: (agent_log_probs(actors.agents[i], batch, i) - behaviour[i]).exp() for i in range(3)}
    expected = {2: torch.ones(C, S), 0: ratio[2], 1: ratio[2] * ratio[0]}
    assert (ratio[2] - 1).abs().max() > 1e-2 and (ratio[0] - 1).abs().max() > 1e-2  # a real test
    assert len(calls) == 3 * 2 * 2
    mbs = [mb for epoch in minibatches for mb in epoch]
    for k, (factor, logp_old) in enumerate(calls):
        agent, mb = [2, 0, 1][k // 4], mbs[k % 4]
        assert torch.equal(logp_old, batch["logprobs"][:, mb, agent])
        if agent == 2:
            assert torch.equal(factor, torch.ones(C, len(mb)))  # exactly 1
        else:
            torch.testing.assert_close(factor, expected[agent][:, mb], rtol=1e-5, atol=1e-6)


def test_no_gradient_flows_through_the_factor():
    """The agent being updated gets no gradient through F (it is the earlier agents' business): the loss's gradient
    reaches the factor's source not at all, and the logp's as if F were a plain number."""
    g = torch.Generator().manual_seed(1)
    logp, logp_old, adv = torch.randn(16, generator=g), torch.randn(16, generator=g), torch.randn(16, generator=g)
    logp = (logp_old + 0.05 * logp).requires_grad_()
    source = torch.rand(16, generator=g).add(0.5).requires_grad_()
    factor = source * 2.0  # built from something that could carry a gradient
    loss, _ = happo.happo_actor_loss(logp=logp, logp_old=logp_old, advantages=adv, factor=factor,
                                     entropy=torch.zeros(16), clip_coef=0.2, ent_coef=0.0)  # fmt: skip
    loss.backward()
    assert source.grad is None
    with_constant = logp.detach().clone().requires_grad_()
    happo.happo_actor_loss(logp=with_constant, logp_old=logp_old, advantages=adv, factor=factor.detach(),
                           entropy=torch.zeros(16), clip_coef=0.2, ent_coef=0.0)[0].backward()  # fmt: skip
    assert torch.equal(logp.grad, with_constant.grad)


def test_the_advantage_is_normalised_before_the_factor_weights_it():
    """Scaling the factor by c > 0 scales the policy loss and its gradient by c: the factor is not in the
    normalisation's statistics (Mava's abandoned HAPPO normalised the weighted advantage, undoing the weights)."""
    g = torch.Generator().manual_seed(2)
    logp_old, adv = torch.randn(32, generator=g), torch.randn(32, generator=g) * 3 + 1
    factor = torch.rand(32, generator=g) * 2
    out = []
    for c in (1.0, 3.0):
        logp = (logp_old + 0.3 * torch.randn(32, generator=torch.Generator().manual_seed(3))).requires_grad_()
        loss, _ = happo.happo_actor_loss(logp=logp, logp_old=logp_old, advantages=adv, factor=c * factor,
                                         entropy=torch.zeros(32), clip_coef=0.2, ent_coef=0.0)  # fmt: skip
        loss.backward()
        out.append((loss.detach(), logp.grad))
    torch.testing.assert_close(out[1][0], 3.0 * out[0][0])
    torch.testing.assert_close(out[1][1], 3.0 * out[0][1])
    # and with factor 1 it is MAPPO's policy term (ppo_loss with the value and entropy terms off)
    logp = logp_old + 0.1
    ours, _ = happo.happo_actor_loss(logp=logp, logp_old=logp_old, advantages=adv, factor=torch.ones(32),
                                     entropy=torch.zeros(32), clip_coef=0.2, ent_coef=0.0)  # fmt: skip
    _, stats = mappo.ppo_loss(logp=logp, logp_old=logp_old, advantages=adv, entropy=torch.zeros(32),
                              value=torch.zeros(32), value_old=torch.zeros(32), returns=torch.zeros(32),
                              clip_coef=0.2, ent_coef=0.0, vf_coef=0.0)  # fmt: skip
    assert ours.item() == stats["policy_loss"]


@pytest.mark.parametrize("scheme", ["harl", "official"])
def test_each_step_moves_only_the_network_it_updates(monkeypatch, scheme):
    """No parameter sharing: after any actor's (or critic's) step every other network is bitwise unchanged, and
    the agents hold distinct parameters."""
    batch = make_batch(3, seed=4)
    actors, critic, actor_opts, critic_opts = networks(3, scheme, seed=4)
    sample_actions(actors, batch)
    nets = [*actors.agents, *([critic] if scheme == "harl" else critic.critics)]
    assert actors.agents[0].head.weight.data_ptr() != actors.agents[1].head.weight.data_ptr()
    original, steps = happo.clipped_step, []

    def watched(network, optimizer, loss, max_grad_norm, check):
        before = [[p.clone() for p in net.parameters()] for net in nets]
        original(network, optimizer, loss, max_grad_norm, check)
        for net, params in zip(nets, before):
            same = all(torch.equal(p, q) for p, q in zip(net.parameters(), params))
            assert same == (net is not network)
        steps.append(network)

    monkeypatch.setattr(happo, "clipped_step", watched)
    orders, minibatches = happo.draw_schedule(3, S, 2, 3, scheme)
    happo.happo_update(actors=actors, critic=critic, actor_optimizers=actor_opts, critic_optimizers=critic_opts,
                       batch=batch, orders=orders, minibatches=minibatches, args=settings(scheme))  # fmt: skip
    assert len(steps) == 2 * 3 * (3 + (1 if scheme == "harl" else 3))  # epochs x minibatches x (actors + critics)


def test_the_orders_are_permutations_per_update_or_per_epoch():
    np.random.seed(5)
    orders, minibatches = happo.draw_schedule(5, 12, 4, 3, "harl")
    assert (orders == orders[0]).all() and sorted(orders[0]) == list(range(5))
    orders, _ = happo.draw_schedule(5, 12, 4, 3, "official")
    assert all(sorted(order) == list(range(5)) for order in orders) and len({tuple(o) for o in orders}) > 1
    for epoch in minibatches:  # every epoch splits all sequences into equal minibatches
        assert sorted(np.concatenate(epoch)) == list(range(12)) and {len(mb) for mb in epoch} == {4}
    # with one agent the draws are mappo_baseline.py's: one shuffle of the env indices per epoch, nothing else
    np.random.seed(6)
    _, minibatches = happo.draw_schedule(1, 12, 3, 2, "official")
    np.random.seed(6)
    inds = np.arange(12)  # shuffled in place, epoch after epoch
    for epoch in minibatches:
        np.random.shuffle(inds)
        assert [list(mb) for mb in epoch] == [list(inds[:6]), list(inds[6:])]


def test_with_one_epoch_and_one_minibatch_both_schemes_agree():
    """The two schemes differ only in when the agents take turns: with one step each, the same order and the same
    minibatch, the actors end with the same parameters (the critics differ: one shared against one per agent)."""
    results = []
    for scheme in ("harl", "official"):
        batch = make_batch(3, seed=7)
        actors, critic, actor_opts, critic_opts = networks(3, scheme, seed=7)
        sample_actions(actors, batch)
        orders, minibatches = np.array([[1, 2, 0]]), [[np.arange(S)]]
        happo.happo_update(actors=actors, critic=critic, actor_optimizers=actor_opts, critic_optimizers=critic_opts,
                           batch=batch, orders=orders, minibatches=minibatches, args=settings(scheme))  # fmt: skip
        results.append(actors.state_dict())
    for name in results[0]:
        torch.testing.assert_close(results[0][name], results[1][name], rtol=1e-6, atol=1e-7)


# ------------------------------------------------------------------------------------ one agent = MAPPO
@pytest.mark.parametrize("scheme", ["harl", "official"])
def test_with_one_agent_the_update_is_mappo(scheme):
    """One agent: the factor is 1 and HAPPO's update is mappo_baseline.py's, to the bit: the same initial networks
    (the same seed builds the same parameters), the same minibatches, per-agent Adams that are MAPPO's one Adam
    (Adam is per parameter), the actor and critic steps in another order (harl: the critic after the actor), which
    cannot matter as they share nothing. The MAPPO side below is mappo_baseline.py's update loop."""
    batch = make_batch(1, seed=8)
    args = settings(scheme, ent_coef=0.01, vf_coef=0.5)
    actors, critic, actor_opts, critic_opts = networks(1, scheme, seed=8, lr=5e-4)
    sample_actions(actors, batch)
    torch.manual_seed(8)
    learner, mappo_critic = mappo.Learner(OBS, 1, A, False, HIDDEN), mappo.Critic(STATE, 1, HIDDEN)
    for ours, theirs in ((actors, learner), (critic, mappo_critic)):
        assert all(torch.equal(p, q) for p, q in zip(ours.parameters(), theirs.parameters()))
    optimizer = torch.optim.Adam([*learner.parameters(), *mappo_critic.parameters()], lr=5e-4, eps=1e-5)
    orders, minibatches = np.zeros((3, 1), dtype=int), schedule(3, 2, [0], seed=8)[1]

    happo.happo_update(actors=actors, critic=critic, actor_optimizers=actor_opts, critic_optimizers=critic_opts,
                       batch=batch, orders=orders, minibatches=minibatches, args=args)  # fmt: skip
    for epoch in minibatches:  # mappo_baseline.py's loop
        for mb in epoch:
            mb = torch.from_numpy(mb)
            params, _ = learner(
                batch["obs"][:, mb], batch["actor_h0"][mb], batch["starts"][:, mb], batch["avails"][:, mb]
            )
            new_value, _ = mappo_critic(batch["critic_in"][:, mb], batch["critic_h0"][mb], batch["starts"][:, mb])
            loss, _ = mappo.ppo_loss(
                logp=mappo.dist_log_prob(params, batch["actions"][:, mb], False), logp_old=batch["logprobs"][:, mb],
                advantages=batch["advantages"][:, mb], entropy=mappo.dist_entropy(params, False), value=new_value,
                value_old=batch["values"][:, mb], returns=batch["value_targets"][:, mb], clip_coef=args.clip_coef,
                ent_coef=args.ent_coef, vf_coef=args.vf_coef,
            )  # fmt: skip
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(learner.parameters(), args.max_grad_norm)
            nn.utils.clip_grad_norm_(mappo_critic.parameters(), args.max_grad_norm)
            optimizer.step()
    for ours, theirs in ((actors, learner), (critic, mappo_critic)):
        for p, q in zip(ours.parameters(), theirs.parameters()):
            assert torch.equal(p, q)
    assert not torch.equal(next(learner.parameters()), next(networks(1, scheme, seed=8)[0].parameters()))  # it moved


# ------------------------------------------------------------------------------------ recurrent chunks
def test_chunks_are_contiguous_pieces_of_each_env():
    T, B, chunk = 8, 3, 4
    steps = torch.arange(T).unsqueeze(1).expand(T, B)  # step index
    envs = torch.arange(B).unsqueeze(0).expand(T, B)
    cut_steps, cut_envs = happo.to_chunks(steps, chunk), happo.to_chunks(envs, chunk)
    assert cut_steps.shape == (chunk, T // chunk * B)
    for k in range(T // chunk):
        for b in range(B):
            assert cut_steps[:, k * B + b].tolist() == list(range(k * chunk, (k + 1) * chunk))
            assert (cut_envs[:, k * B + b] == b).all()
    # the official code's single reshape takes every (T / chunk)-th step instead: (0, 2, 4, 6) and (1, 3, 5, 7)
    strided = steps.reshape(chunk, T // chunk * B)
    assert strided[:, 0].tolist() == [0, 2, 4, 6] and strided[:, B].tolist() == [1, 3, 5, 7]
    assert torch.equal(happo.to_chunks(steps, T), steps)  # chunk = T: the whole sequences, as mappo_baseline.py


@pytest.mark.parametrize("chunk", [3, 4, 12])
def test_bptt_from_each_stored_chunk_state_reproduces_the_rollout(chunk):
    """A rollout step by step, as happo_baseline.py runs it (the states stored at steps 0, chunk, 2 chunk, ...),
    with episode starts inside chunks and a non-zero state before step 0: BPTT over the contiguous chunks from
    the stored states gives every step's policy and value again."""
    T, B, N = 12, 4, 2
    torch.manual_seed(9)
    actors, critic = happo.Actors(OBS, N, A, False, HIDDEN), happo.Critic(STATE, N, HIDDEN)
    obs, state = torch.randn(T, B, N, OBS), torch.randn(T, B, N, STATE)
    starts = torch.zeros(T, B, dtype=torch.bool)
    starts[[2, 5, 7], [0, 1, 3]] = True  # inside chunks of every size tested
    starts[4, 2] = True  # at a chunk boundary (chunk 4)
    h, ch = torch.randn(B, N, HIDDEN), torch.randn(B, N, HIDDEN)
    actor_hs, critic_hs, rollout_params, rollout_values = [], [], [], []
    with torch.no_grad():
        for t in range(T):
            if t % chunk == 0:
                actor_hs.append(h)
                critic_hs.append(ch)
            params, h = actors(obs[t : t + 1], h, starts[t : t + 1])
            value, ch = critic(state[t : t + 1], ch, starts[t : t + 1])
            rollout_params.append(params[0])
            rollout_values.append(value[0])
        params, _ = actors(happo.to_chunks(obs, chunk), torch.stack(actor_hs).reshape(-1, N, HIDDEN),
                           happo.to_chunks(starts, chunk))  # fmt: skip
        values, _ = critic(happo.to_chunks(state, chunk), torch.stack(critic_hs).reshape(-1, N, HIDDEN),
                           happo.to_chunks(starts, chunk))  # fmt: skip
    torch.testing.assert_close(params, happo.to_chunks(torch.stack(rollout_params), chunk), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(values, happo.to_chunks(torch.stack(rollout_values), chunk), rtol=1e-5, atol=1e-6)
    if chunk < T:  # the carried state matters: BPTT from zeros at every chunk start gives other outputs
        params_zero, _ = actors(happo.to_chunks(obs, chunk), torch.zeros(T // chunk * B, N, HIDDEN),
                                happo.to_chunks(starts, chunk))  # fmt: skip
        assert not torch.allclose(params_zero, params, atol=1e-4)
