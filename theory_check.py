"""Exact tabular MAGPO on small random cooperative Markov games: does the theory hold?

Paper: Li, Xie, Lu, "Multi-Agent Guided Policy Optimization", arXiv 2507.18059. The method: `docs/algorithm.md`
(§2 = the idealised iteration, Theorem 4.1 and Lemma 1). Write-up with the measured table: `docs/theory.md`.

No sampling and no networks: every policy is a table and every value is exact (a linear solve).

The story of this file, top to bottom:
  Args -> random games -> exact policy evaluation -> product (decentralised) policies -> the three steps of the
  idealised iteration (mirror-descent guider step, KL projection, backtracking) -> Lemma 1 -> main: Lemma 1 on random
  joint policies, then a sweep over eta x N x random games, with and without observation aliasing, that counts
  violations of Theorem 4.1's monotone improvement V(pi_{k+1}) >= V(pi_k), then one hand-made game where the step
  from an exact mixed equilibrium decreases V for every eta.

Conventions. A game has S states, N agents with A actions each, and M = A^N joint actions. A joint action is a flat index
in C order: `mu.reshape(S, A, ..., A)` has agent i on axis i + 1. A joint (centralised) policy `mu` is an (S, M) table.
A decentralised learner is an (N, O, A) table `pi[i, o, a^i]` of per-agent policies conditioned on the agent's own
observation o = obs_map[i, s]. Full observability is the special case obs_map[i] = identity (O = S), so one code path
serves both variants.

The aliasing weighting (the learner step under observation aliasing). The learner minimises the guider-to-learner KL
averaged over a state distribution d:  min_pi  sum_s d(s) KL(mu_hat(.|s) || prod_i pi^i(.|o^i(s))). Expanding,
  sum_s d(s) KL(...) = const - sum_i sum_o sum_{s: o^i(s) = o} d(s) sum_{a^i} mu_hat^i(a^i|s) log pi^i(a^i|o),
where mu_hat^i(.|s) is agent i's marginal of mu_hat(.|s). The objective separates over (agent, observation) and each
term is a cross-entropy, so its minimiser is the d-weighted average of the marginals over the states sharing o:
  pi^i(a^i|o) = sum_{s: o^i(s) = o} d(s) mu_hat^i(a^i|s) / sum_{s: o^i(s) = o} d(s).
With full observability each observation is one state, d cancels and pi^i = mu_hat^i (the product of marginals, the
exact per-state projection). Default d = d_{pi_k}, the normalised discounted visitation of the backtracked guider
mu_k = pi_k: step 1 of the iteration collects the data with mu_k, and the learner clones mu_hat on *that* data
(the practical algorithm updates both networks from the same batch, docs/algorithm.md §9). `--weighting mu_hat` uses d_{mu_hat}
(the state distribution of the policy being imitated) instead; the sweep measures both.
"""

import math
import sys
import time
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import tyro


@dataclass
class Args:
    seed: int = 1
    """seed of the experiment (every game, policy and order is drawn from `np.random.default_rng` seeded from it)"""
    num_states: int = 5
    """number of states S of each random game"""
    num_actions: int = 2
    """actions per agent A (joint action space A^N)"""
    gamma: float = 0.9
    """discount factor; rewards are in [0, 1], so values are in [0, 1 / (1 - gamma)] = [0, 10] by default"""
    num_obs: int = 3
    """observations per agent in the aliasing variant (each agent's random obs_map sends the S states onto them)"""
    agent_counts: tuple[int, ...] = (2, 3)
    """numbers of agents N to sweep"""
    etas: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0)
    """mirror-descent step sizes eta to sweep"""
    num_games: int = 100
    """random games per (N, eta, observation) cell; game g has its own seed and random initial product policy, shared
    by every eta, so rows that differ only in eta are paired comparisons"""
    num_iterations: int = 30
    """MAGPO iterations K per run, from a random product policy"""
    lemma_trials: int = 300
    """random (game, non-product joint policy, agent subset and order) draws for the Lemma 1 check"""
    tol: float = 1e-10
    """a step is a violation of Theorem 4.1 if V(pi_{k+1}) < V(pi_k) - tol; Lemma 1 must hold to tol"""


MAX_TABLE_ENTRIES = 10**8
"""largest transition table P (S x A^N x S entries, 0.8 GB as float64) that `validate_args` lets through"""


def validate_args(args: Args) -> None:
    """Reject bad input before any game is drawn (raises ValueError)."""
    checks = [
        (args.seed >= 0, f"--seed must be >= 0 (np.random.default_rng takes no negative seed), got {args.seed}"),
        (args.num_states >= 1, f"--num-states must be >= 1, got {args.num_states}"),
        (
            args.num_actions >= 2,
            f"--num-actions must be >= 2 (one action leaves one policy, nothing to check), got {args.num_actions}",
        ),
        (
            0.0 <= args.gamma < 1.0,
            f"--gamma must be in [0, 1) (the values solve (I - gamma P) V = r), got {args.gamma}",
        ),
        (
            1 <= args.num_obs <= args.num_states,
            f"--num-obs must be in [1, --num-states = {args.num_states}] (every observation is used), got {args.num_obs}",
        ),
        (len(args.agent_counts) >= 1, "--agent-counts needs at least one number of agents"),
        (all(n >= 1 for n in args.agent_counts), f"--agent-counts must all be >= 1, got {args.agent_counts}"),
        (len(args.etas) >= 1, "--etas needs at least one step size"),
        (all(0.0 < eta < float("inf") for eta in args.etas), f"--etas must all be finite and > 0, got {args.etas}"),
        (args.num_games >= 1, f"--num-games must be >= 1, got {args.num_games}"),
        (args.num_iterations >= 1, f"--num-iterations must be >= 1, got {args.num_iterations}"),
        (args.lemma_trials >= 0, f"--lemma-trials must be >= 0, got {args.lemma_trials}"),
        (0.0 <= args.tol < float("inf"), f"--tol must be finite and >= 0, got {args.tol}"),
    ]
    for ok, message in checks:
        if not ok:
            raise ValueError(message)
    N = max(args.agent_counts)  # in logs: A^N for a large N would take long to compute exactly
    if 2 * math.log10(args.num_states) + N * math.log10(args.num_actions) > math.log10(MAX_TABLE_ENTRIES):
        raise ValueError(
            f"games too large: P has S^2 x A^N = {args.num_states}^2 x {args.num_actions}^{N} entries, at most "
            f"{MAX_TABLE_ENTRIES:.0e} fit (lower --num-states, --num-actions or --agent-counts)"
        )


# ----------------------------------------------------------------------------------- random cooperative Markov games
class Game(NamedTuple):
    P: np.ndarray  # (S, M, S) transition probabilities P[s, a, s'], Dirichlet(1) rows
    R: np.ndarray  # (S, M) shared team reward, uniform in [0, 1]
    rho: np.ndarray  # (S,) initial state distribution, Dirichlet(1)
    gamma: float
    num_agents: int
    num_actions: int


def random_game(rng, num_states, num_agents, num_actions, gamma):
    M = num_actions**num_agents
    P = rng.dirichlet(np.ones(num_states), size=(num_states, M))
    R = rng.uniform(0.0, 1.0, size=(num_states, M))
    rho = rng.dirichlet(np.ones(num_states))
    return Game(P, R, rho, gamma, num_agents, num_actions)


def random_obs_map(rng, num_agents, num_states, num_obs):
    """(N, S) int array: agent i observes obs_map[i, s]. Every observation is used; num_obs = S with a permutation is
    full observability up to relabelling, `identity_obs_map` is the canonical one."""
    return np.stack([rng.permutation(np.arange(num_states) % num_obs) for _ in range(num_agents)])


def identity_obs_map(num_agents, num_states):
    return np.tile(np.arange(num_states), (num_agents, 1))


def joint_view(game, x):
    """(S, M) -> (S, A, ..., A): agent i on axis i + 1."""
    return x.reshape(x.shape[0], *(game.num_actions,) * game.num_agents)


# ----------------------------------------------------------------------------------- exact policy evaluation
def transition_under(game, mu):
    """P_mu[s, s'] = sum_a mu(a|s) P[s, a, s'] and r_mu[s] = sum_a mu(a|s) R[s, a]."""
    return np.einsum("sa,sat->st", mu, game.P), (mu * game.R).sum(1)


def evaluate(game, mu):
    """Exact V and Q of the joint policy mu: (I - gamma P_mu) V = r_mu, Q = R + gamma P V."""
    P_mu, r_mu = transition_under(game, mu)
    V = np.linalg.solve(np.eye(len(r_mu)) - game.gamma * P_mu, r_mu)
    Q = game.R + game.gamma * game.P @ V
    return V, Q


def value(game, mu):
    """V(rho) = rho . V_mu, the objective of Theorem 4.1."""
    return game.rho @ evaluate(game, mu)[0]


def visitation(game, mu):
    """Normalised discounted state visitation d_mu = (1 - gamma) rho^T (I - gamma P_mu)^{-1} (sums to 1)."""
    P_mu, _ = transition_under(game, mu)
    return (1.0 - game.gamma) * np.linalg.solve((np.eye(len(game.rho)) - game.gamma * P_mu).T, game.rho)


# ----------------------------------------------------------------------------------- product (decentralised) policies
def state_tables(pi, obs_map):
    """(N, O, A) observation-conditioned tables -> (N, S, A) state-conditioned ones: pi^i(.|s) = pi^i(.|obs_map[i, s])."""
    return np.stack([pi[i][obs_map[i]] for i in range(len(pi))])


def product_policy(pi_s):
    """(N, S, A) per-agent tables -> (S, M) joint policy prod_i pi^i(a^i|s), agent 0 most significant."""
    joint = pi_s[0]
    for p in pi_s[1:]:
        joint = (joint[:, :, None] * p[:, None, :]).reshape(joint.shape[0], -1)
    return joint


def marginals(game, mu):
    """(S, M) joint policy -> (N, S, A): agent i's marginal mu^i(a^i|s)."""
    m, N = joint_view(game, mu), game.num_agents
    return np.stack([m.sum(axis=tuple(j + 1 for j in range(N) if j != i)) for i in range(N)])


def kl(p, q):
    """Row-wise KL(p || q) over the last axis (0 log 0 = 0; +inf if q = 0 where p > 0)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * (np.log(p) - np.log(q)), 0.0)
    return terms.sum(-1)


# ----------------------------------------------------------------------------------- the idealised iteration (docs/algorithm.md §11)
def guider_step(mu, Q, eta):
    """Mirror descent in the joint space: argmax_mu eta <Q(s,.), mu> - KL(mu || mu_k) = mu_k exp(eta Q) / Z, per state.
    (Q - max Q) only guards exp against overflow; it cancels in the normalisation."""
    w = mu * np.exp(eta * (Q - Q.max(axis=1, keepdims=True)))
    return w / w.sum(axis=1, keepdims=True)


def project(game, mu_hat, obs_map, d):
    """Learner step: argmin_pi sum_s d(s) KL(mu_hat(.|s) || prod_i pi^i(.|o^i(s))) over product policies (module
    docstring): per agent and observation, the d-weighted average of mu_hat's marginals over the states sharing it.
    Returns the (N, O, A) observation-conditioned tables."""
    marg = marginals(game, mu_hat)  # (N, S, A)
    N, num_obs = game.num_agents, obs_map.max() + 1
    pi = np.zeros((N, num_obs, game.num_actions))
    for i in range(N):
        np.add.at(pi[i], obs_map[i], d[:, None] * marg[i])
    return pi / pi.sum(axis=-1, keepdims=True)


def projection_objective(game, mu_hat, pi, obs_map, d):
    """sum_s d(s) KL(mu_hat(.|s) || prod_i pi^i(.|o^i(s))): what `project` minimises."""
    return d @ kl(mu_hat, product_policy(state_tables(pi, obs_map)))


def guider_log_ratio(game, pi_s, Q, eta):
    """max |log mu_hat(a^i | s, a^{<i}) - log pi_k^i(a^i|s)| over states, agents, prefixes and actions, with
    mu_hat = guider_step(pi_k, Q, eta) factorised autoregressively in index order: the per-agent guider-to-learner
    ratio that MAGPO's practical algorithm clips to [1/delta, delta] (docs/algorithm.md §4). Computed in log space (logsumexp) so
    that it stays finite when probabilities underflow; actions with pi_k^i(a^i|s) = 0 are skipped (mu_hat is 0 there).
    It is at most eta * max_s (max_a Q(s,a) - min_a Q(s,a)): both conditionals are averages of exp(eta Q)."""
    N = game.num_agents
    with np.errstate(divide="ignore"):
        log_pi = np.log(pi_s)  # (N, S, A)
    log_w = joint_view(game, eta * (Q - Q.max(axis=1, keepdims=True)))  # unnormalised log mu_hat - log pi_k
    for i in range(N):  # log w <- log w + log pi^i, broadcast on agent i's axis
        log_w = log_w + log_pi[i].reshape(log_pi.shape[1], *[game.num_actions if j == i else 1 for j in range(N)])

    def logsumexp_tail(x, first):  # log sum over agents first..N-1 (axes first+1..N), keepdims
        axes = tuple(range(first + 1, N + 1))
        if not axes:
            return x
        top = x.max(axis=axes, keepdims=True)
        top = np.where(np.isfinite(top), top, 0.0)
        with np.errstate(divide="ignore"):
            return np.log(np.exp(x - top).sum(axis=axes, keepdims=True)) + top

    worst = 0.0
    for i in range(N):
        log_prefix_i = logsumexp_tail(log_w, i + 1)  # log mu_hat(a^{<=i}|s) + const
        log_prefix = logsumexp_tail(log_w, i)  # log mu_hat(a^{<i}|s) + const (same const)
        shape = [log_pi.shape[1]] + [game.num_actions if j == i else 1 for j in range(N)]
        with np.errstate(invalid="ignore"):  # -inf - -inf where a prefix has probability 0: skipped below
            log_ratio = log_prefix_i - log_prefix - log_pi[i].reshape(shape)
        ok = np.isfinite(log_ratio)
        if ok.any():
            worst = max(worst, np.abs(log_ratio[ok]).max())
    return worst


def magpo_run(game, pi0, obs_map, eta, num_iterations, weighting="pi_k"):
    """K exact MAGPO iterations from the product policy pi0 (docs/algorithm.md §11):
      1-2. guider mu_k = pi_k (backtracked), Q = Q_{mu_k}, mu_hat = mu_k exp(eta Q) / Z;
      3.   pi_{k+1} = argmin KL(mu_hat || pi) over product policies (d-weighted under aliasing);
      4.   backtrack mu_{k+1} = pi_{k+1}.
    Returns the values V(pi_0..pi_K) and the largest per-agent guider/learner log-ratio met on the way."""
    pi, values, max_log_ratio = pi0, [], 0.0
    for _ in range(num_iterations):
        pi_s = state_tables(pi, obs_map)
        mu = product_policy(pi_s)  # step 4 of the previous iteration: mu_k = pi_k
        V, Q = evaluate(game, mu)
        values.append(game.rho @ V)
        mu_hat = guider_step(mu, Q, eta)
        max_log_ratio = max(max_log_ratio, guider_log_ratio(game, pi_s, Q, eta))
        d = visitation(game, mu if weighting == "pi_k" else mu_hat)
        pi = project(game, mu_hat, obs_map, d)
    values.append(value(game, product_policy(state_tables(pi, obs_map))))
    return np.array(values), max_log_ratio


def mixed_equilibrium_example():
    """A one-state, 2-agent, 2-action game (gamma = 0, so Q = R) started at an exact mixed equilibrium:
    R = [[1, 0], [0.5, 0.75]] (rows: agent 0's action), pi^0 = (0.2, 0.8), pi^1 = (0.6, 0.4). Against the other agent,
    both of each agent's actions are worth 0.6 = V, so every individual advantage is 0 and the first-order (policy
    gradient) part of the step vanishes. mu_hat's marginals still move each agent, independently, toward the action
    with the larger E[exp(eta Q)] (an O(eta^2) effect): agent 0 toward action 0, agent 1 toward action 1. V is bilinear
    with cross-derivative 1 - 0 - 0.5 + 0.75 = 1.25 > 0 at this saddle, so that joint move *lowers* V, by O(eta^4):
    a strict decrease for every small eta > 0. Returns (game, pi0)."""
    R = np.array([[1.0, 0.0], [0.5, 0.75]]).reshape(1, 4)
    game = Game(P=np.ones((1, 4, 1)), R=R, rho=np.ones(1), gamma=0.0, num_agents=2, num_actions=2)
    pi0 = np.array([[[0.2, 0.8]], [[0.6, 0.4]]])
    return game, pi0


# ----------------------------------------------------------------------------------- Lemma 1 (Kuba et al.)
def conditional_q(game, mu, Q, agents):
    """Q^I(s, a^I) = E_{a^{-I} ~ mu(.|s, a^I)} Q(s, a) for the agent set I, as an array that broadcasts against
    (S, A, ..., A) (size-1 axes for the agents outside I). Q^{empty}(s) = E_{a ~ mu(.|s)} Q(s, a)."""
    m, q = joint_view(game, mu), joint_view(game, Q)
    others = tuple(j + 1 for j in range(game.num_agents) if j not in agents)
    return (m * q).sum(axis=others, keepdims=True) / m.sum(axis=others, keepdims=True)


def lemma1_error(game, mu, order):
    """max over s and a^{i_1:m} of |A^{i_1:m}(s, a^{i_1:m}) - sum_j A^{i_j}(s, a^{i_1:j-1}, a^{i_j})| for the ordered agent
    subset `order` = (i_1, ..., i_m), where A^{i_1:m} = Q^{i_1:m} - V with V from the linear solve, and
    A^{i_j}(s, a^{i_1:j-1}, a^{i_j}) = Q^{i_1:j} - Q^{i_1:j-1}. The right side telescopes to Q^{i_1:m} - Q^{empty}, so the
    identity holds exactly iff E_{a~mu} Q(s, a) = V(s) and the conditional expectations are computed consistently:
    a check of the evaluation and of the multi-agent Q/advantage code for non-product mu and any order."""
    V, Q = evaluate(game, mu)
    lhs = conditional_q(game, mu, Q, order) - V.reshape(-1, *(1,) * game.num_agents)
    rhs = sum(
        conditional_q(game, mu, Q, order[: j + 1]) - conditional_q(game, mu, Q, order[:j]) for j in range(len(order))
    )
    return np.abs(lhs - rhs).max()


# ----------------------------------------------------------------------------------- main
def main(args):
    start = time.time()

    # Lemma 1 on random non-product joint policies, random agent subsets and random orders
    rng = np.random.default_rng([args.seed, 0])
    lemma_max = 0.0
    for _ in range(args.lemma_trials):
        N = int(rng.choice(args.agent_counts))
        game = random_game(rng, args.num_states, N, args.num_actions, args.gamma)
        mu = rng.dirichlet(np.ones(args.num_actions**N), size=args.num_states)  # full support, not a product
        order = tuple(int(i) for i in rng.permutation(N)[: rng.integers(1, N + 1)])
        lemma_max = max(lemma_max, lemma1_error(game, mu, order))
    print(
        f"Lemma 1 (multi-agent advantage decomposition): {args.lemma_trials} random joint policies / subsets / "
        f"orders, max |error| = {lemma_max:.2e} (tolerance {args.tol:.0e})"
    )

    # Theorem 4.1 sweep: the same games and initial policies for every eta (paired), violations counted per iteration
    variants = [("full", "-"), ("aliased", "pi_k"), ("aliased", "mu_hat")]
    print(
        f"\nTheorem 4.1 sweep: S={args.num_states}, A={args.num_actions}, gamma={args.gamma}, K={args.num_iterations} "
        f"iterations x {args.num_games} random games per row, aliasing = {args.num_obs} observations per agent"
    )
    print("viol. iters = iterations with V(pi_{k+1}) < V(pi_k) - tol; worst = largest V(pi_k) - V(pi_{k+1});")
    print("gain = mean V(pi_K) - V(pi_0); delta_eff = median over runs of exp(max per-agent |log mu_hat/pi_k|)\n")
    header = "| obs | weighting | N | eta | viol. iters | runs w/ viol. | worst viol. | gain | delta_eff |"
    print(header)
    print("|---" * (header.count("|") - 1) + "|")
    for obs, weighting in variants:
        for N in args.agent_counts:
            for eta in args.etas:
                n_viol, n_iter, runs_viol, worst, gains, log_ratios = 0, 0, 0, 0.0, [], []
                for g in range(args.num_games):
                    rng = np.random.default_rng([args.seed, 1, N, g])
                    game = random_game(rng, args.num_states, N, args.num_actions, args.gamma)
                    if obs == "full":
                        obs_map = identity_obs_map(N, args.num_states)
                    else:
                        obs_map = random_obs_map(
                            np.random.default_rng([args.seed, 2, N, g]), N, args.num_states, args.num_obs
                        )
                    pi0 = rng.dirichlet(np.ones(args.num_actions), size=(N, obs_map.max() + 1))
                    values, max_log_ratio = magpo_run(game, pi0, obs_map, eta, args.num_iterations, weighting)
                    drops = values[:-1] - values[1:]
                    n_viol += int((drops > args.tol).sum())
                    n_iter += len(drops)
                    runs_viol += int((drops > args.tol).any())
                    worst = max(worst, drops.max())
                    gains.append(values[-1] - values[0])
                    log_ratios.append(max_log_ratio)
                worst_str = f"{worst:.1e}" if worst > args.tol else "none"
                delta_eff = np.exp(np.median(log_ratios))
                delta_str = f"{delta_eff:.3g}" if delta_eff < 1e6 else f"e^{np.median(log_ratios):.0f}"
                print(
                    f"| {obs} | {weighting} | {N} | {eta:g} | {n_viol}/{n_iter} ({n_viol / n_iter:.1%}) | "
                    f"{runs_viol}/{args.num_games} | {worst_str} | {np.mean(gains):.3f} | {delta_str} |"
                )

    # A counterexample to Theorem 4.1 at every small step size: one step from an exact mixed equilibrium
    game, pi0 = mixed_equilibrium_example()
    obs_map = identity_obs_map(2, 1)
    print(
        "\nOne step from an exact mixed equilibrium (one state, R = [[1, 0], [0.5, 0.75]], pi^0 = (0.2, 0.8), "
        "pi^1 = (0.6, 0.4), V = 0.6):"
    )
    for eta in args.etas:
        values, _ = magpo_run(game, pi0, obs_map, eta, 1)
        print(
            f"  eta = {eta:g}: V(pi_1) - V(pi_0) = {values[1] - values[0]:+.2e}  "
            f"((V(pi_1) - V(pi_0)) / eta^4 = {(values[1] - values[0]) / eta**4:+.2e})"
        )

    print(f"\ntotal time {time.time() - start:.1f} s")
    if lemma_max > args.tol:
        raise SystemExit(f"Lemma 1 violated: max error {lemma_max:.2e} > {args.tol:.0e}")


if __name__ == "__main__":
    args = tyro.cli(Args)
    try:
        validate_args(args)
    except ValueError as error:
        sys.exit(f"error: {error}")
    main(args)
