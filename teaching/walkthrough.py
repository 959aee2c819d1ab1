# %% [markdown]
# # MAGPO in one sitting: a walkthrough
#
# You know single-agent PPO. This notebook shows why MAGPO trains a centralised *guider* next to the
# decentralised *learner*, and why it keeps the two tied together (the *tether*). It does this in four steps:
# an exact toy computation, exact tabular MAGPO, a committed CoordSum figure, and a one-minute training run.
# The section numbers (§N) refer to `docs/algorithm.md`.
#
# Run it from the kit's root folder, as `python walkthrough.py` or in Jupyter. Figures go to `walkthrough_figures/`.

# %%
# In Jupyter this magic installs what Colab lacks (Colab has torch, numpy, matplotlib, scipy and pytest; elsewhere,
# install the kit's requirements.txt first); plain python reads it as a comment.
# %pip install -q tyro tensorboard rliable arch "pandas<3"

# %%
import os
import re
import subprocess
import sys

sys.path.insert(0, os.getcwd())  # the kit's code is in the working directory (a notebook has no __file__)

import matplotlib.pyplot as plt
import numpy as np

import plot  # the kit's plot.py: marl-eval JSON, IQM and bootstrap bands, TensorBoard scalars
import theory_check as tc  # exact tabular MAGPO

# Importing plot.py selects matplotlib's Agg backend. In Jupyter the next line is a magic that brings back
# inline figures; plain python reads it as a comment and keeps Agg (PNG files only).
# %matplotlib inline
if "ipykernel" not in sys.modules:
    plt.switch_backend("Agg")
FIGURES = "walkthrough_figures"
os.makedirs(FIGURES, exist_ok=True)


def show(fig, name):
    """Save the figure to walkthrough_figures/ and show it (nothing is shown outside Jupyter)."""
    fig.tight_layout()
    fig.savefig(os.path.join(FIGURES, name), dpi=110)
    print(f"saved {FIGURES}/{name}")
    plt.show()
    plt.close(fig)


# %% tags=["parameters"]
# Budgets: the defaults take about a minute on 2 CPU cores. Environment variables override them (CI sets tiny ones).
MPE_STEPS = int(os.environ.get("WALKTHROUGH_MPE_STEPS", 61_440))  # 30 updates of 16 envs x 128 steps
TABULAR_ITERATIONS = int(os.environ.get("WALKTHROUGH_TABULAR_ITERATIONS", 30))

# %% [markdown]
# ## 1. The imitation gap, computed exactly
#
# Why not train a centralised policy and then copy it into decentralised agents? Take the paper's motivating
# example in CoordSum's terms (§1): three agents each pick a number from 0 to 9, and the team succeeds when the
# numbers sum to 10. A centralised teacher lets agent 1 pick 3 or 4 at random, agent 2 pick 3, and agent 3 pick
# 7 − x, where x is agent 1's pick. It always succeeds. A decentralised student acts on its own information only.
# The best product of per-agent policies under KL(teacher ‖ student) copies each agent's *marginal* (§11, step 3).
# Agent 3 then plays 3 or 4 whatever agent 1 does, and the team succeeds only half the time.

# %%
A, N = 10, 3  # actions 0..9 and three agents; code index 0 is "agent 1" above, and agent 0 is the most significant
joint = np.array(np.meshgrid(*[np.arange(A)] * N, indexing="ij")).reshape(N, -1)  # (N, A^N) every joint action
success = (joint.sum(0) == 10).astype(float)[None]  # (1 state, A^N): reward 1 when the picks sum to 10
# one state and one step (gamma = 0), so the value of a policy is its success rate
one_step = tc.Game(P=np.ones((1, A**N, 1)), R=success, rho=np.ones(1), gamma=0.0, num_agents=N, num_actions=A)
teacher = np.zeros((1, A**N))
for x in (3, 4):
    teacher[0, np.ravel_multi_index((x, 3, 7 - x), (A,) * N)] = 0.5
student = tc.product_policy(tc.marginals(one_step, teacher))  # the product of the teacher's marginals
teacher_success, student_success = tc.value(one_step, teacher), tc.value(one_step, student)
print(f"teacher: success rate {teacher_success:.3f}")
print(f"product of its marginals: success rate {student_success:.3f}")
print(f"KL(teacher || product) = {tc.kl(teacher, student)[0]:.4f} nats (log 2 = {np.log(2):.4f})")
assert np.isclose(teacher_success, 1.0) and np.isclose(student_success, 0.5)

# %% [markdown]
# The teacher's success rests on coordination that no decentralised team can copy. MAGPO's answer is to keep the
# guider close to the learner, so that each improvement it finds is one the learner can still imitate.
#
# ## 2. Tabular MAGPO: the tether as a step size
#
# `theory_check.py` runs MAGPO's idealised iteration (§11) exactly, on small random Markov games. Each iteration
# has three steps:
#
# 1. The guider starts at the learner (*backtracking*: μ_k = π_k).
# 2. The guider takes a mirror-descent step μ̂ ∝ μ_k·exp(ηQ) (`guider_step`). This is policy improvement with a KL
#    penalty, PPO's idea in tabular form.
# 3. The learner projects μ̂ back onto decentralised policies (`project`).
#
# The game here has 3 agents and 5 states, and each agent sees only one of 3 observations, so the learner cannot
# tell some states apart. It is game 16 of the script's aliased sweep. The plots show the learner's value V(π_k),
# the guider's value V(μ̂_k) and the KL(μ̂_k ‖ π_{k+1}) that the projection cannot remove. They compare a moderate
# step (η = 1) with a large one (η = 10). A per-agent ratio band [1/δ, δ] limits the step as η does;
# `docs/theory.md` maps η = 1 to δ ≈ 2.4 and η = 10 to δ ≈ 10⁴.


# %%
def tabular_run(game, pi, obs_map, eta, iterations):
    """theory_check.magpo_run, step by step, also recording the guider's value and the projection's KL."""
    values, guider_values, kls = [], [], []
    for _ in range(iterations):
        mu = tc.product_policy(tc.state_tables(pi, obs_map))  # backtrack: the guider starts at the learner
        V, Q = tc.evaluate(game, mu)
        mu_hat = tc.guider_step(mu, Q, eta)  # the guider's improvement step in the joint action space
        d = tc.visitation(game, mu)  # the states as the guider's own data visits them
        pi = tc.project(game, mu_hat, obs_map, d)  # the learner imitates mu_hat as well as it can
        values.append(game.rho @ V)
        guider_values.append(tc.value(game, mu_hat))
        kls.append(tc.projection_objective(game, mu_hat, pi, obs_map, d))
    values.append(tc.value(game, tc.product_policy(tc.state_tables(pi, obs_map))))
    return np.array(values), np.array(guider_values), np.array(kls)


rng = np.random.default_rng([1, 1, 3, 16])  # seeded as theory_check.main seeds game 16 with N = 3
game = tc.random_game(rng, num_states=5, num_agents=3, num_actions=2, gamma=0.9)
obs_map = tc.random_obs_map(np.random.default_rng([1, 2, 3, 16]), num_agents=3, num_states=5, num_obs=3)
pi0 = rng.dirichlet(np.ones(2), size=(3, 3))  # (agents, observations, actions): a random decentralised start
try:
    fig, (ax_v, ax_kl) = plt.subplots(1, 2, figsize=(10, 3.8))
    for eta, color in ((1.0, "C0"), (10.0, "C3")):
        values, guider_values, kls = tabular_run(game, pi0, obs_map, eta, TABULAR_ITERATIONS)
        assert np.allclose(values, tc.magpo_run(game, pi0, obs_map, eta, TABULAR_ITERATIONS)[0])
        drops = int((np.diff(values) < -1e-10).sum())
        print(
            f"eta = {eta:g}: V(pi) {values[0]:.2f} -> {values[-1]:.2f}, {drops} of {TABULAR_ITERATIONS} steps lowered "
            f"it; mean KL(guider || learner) {kls.mean():.4f}"
        )
        ax_v.plot(values, color=color, label=rf"learner $V(\pi_k)$, η = {eta:g}")
        ax_v.plot(guider_values, color=color, ls="--", label=rf"guider $V(\hat\mu_k)$, η = {eta:g}")
        ax_kl.semilogy(np.maximum(kls, 1e-12), color=color, label=f"η = {eta:g}")
    ax_v.set(xlabel="iteration k", ylabel=r"value $V(\rho)$", title="values")
    kl_label = r"$\sum_s d(s)\,\mathrm{KL}(\hat\mu_k \| \pi_{k+1})$"
    ax_kl.set(xlabel="iteration k", ylabel=kl_label, title="what the learner cannot copy")
    for ax in (ax_v, ax_kl):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    show(fig, "tabular_tether.png")
except NotImplementedError as error:  # the student kit before exercises A1 and A2
    plt.close("all")
    print(f"skipped: {error} (solve exercises A1 and A2 in theory_check.py first)")

# %% [markdown]
# With η = 10 the guider jumps far ahead: its dashed curve sits above the learner's. The learner cannot follow,
# its KL is tens of times larger, and V(π_k) stalls or even falls. With η = 1 the guider stays within reach and
# the learner improves at every step. Theorem 4.1's monotone improvement holds for small steps only (§11).
#
# ## 3. CoordSum: the same trade-off with networks (committed results, no training)
#
# The numbers come from training runs on CoordSum 3x10 (§1), saved as marl-eval JSON by
# `plot.py --marl-eval-json`. The runs compare MAGPO at its tuned δ = 1.3 with CTDS (δ = ∞, α = 0), which lets
# the guider train freely and then distils it into the learner. MAGPO is also shown with δ = 1.1, 3 and ∞ (thin
# lines). The left panel is the learner's return, the policy that gets deployed: IQM over seeds with a 95%
# bootstrap band. The right panel is the guider's return minus the learner's: how far the guider got ahead of
# what the learner could copy.

# %%
DATA = "docs/data/teaching/coordsum_3x10_delta.json"
GUIDER_DATA = "docs/data/teaching/coordsum_3x10_delta_guider.json"
LABELS = {
    "magpo_coordsum": "MAGPO, δ = 1.3",
    "ctds_coordsum": "CTDS (δ = ∞, α = 0)",
    "magpo_delta1.1": "MAGPO, δ = 1.1",
    "magpo_delta3": "MAGPO, δ = 3",
    "magpo_deltainf": "MAGPO, δ = ∞",
}
MAIN = ("magpo_coordsum", "ctds_coordsum")


def draw(ax, runs, metric, ylabel):
    """Each algorithm's IQM over seeds (with a 95% bootstrap band for MAGPO and CTDS), using plot.py's functions."""
    groups, _ = plot.select_runs(plot.group_runs(runs, metric), metric, include_incomplete=False)
    order = {algorithm: i for i, algorithm in enumerate(LABELS)}  # MAGPO first, then CTDS, then the delta sweep
    for (_, algorithm), group in sorted(groups.items(), key=lambda item: order.get(item[0][1], len(order))):
        steps, values = plot.align(group, metric)
        main = algorithm in MAIN
        label = f"{LABELS.get(algorithm, algorithm)} ({len(group)} seeds)"
        (line,) = ax.plot(steps, plot.iqm(values), label=label, lw=2 if main else 1, alpha=1 if main else 0.6)
        if main and len(values) > 1:
            low, high = plot.bootstrap_ci(values, reps=1000, seed=1)
            ax.fill_between(steps, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set(xlabel="environment steps", ylabel=ylabel, title="coordsum_3x10")
    ax.grid(alpha=0.3)
    return groups


if not os.path.exists(DATA):
    print(f"skipped: {DATA} is not in this folder")
else:
    runs = plot.pool_json_runs((DATA,), "eval/learner_return")
    with_guider = os.path.exists(GUIDER_DATA)
    fig, axes = plt.subplots(1, 1 + with_guider, figsize=(6 + 5 * with_guider, 4), squeeze=False)
    groups = draw(axes[0, 0], runs, "eval/learner_return", "learner return (IQM, 95% CI)")
    axes[0, 0].legend(fontsize=8)
    if with_guider:  # give each run its guider's curve, then let plot.py subtract the learner's
        by_key = {(run.task, run.algorithm, run.seed): run for run in runs}
        for guider_run in plot.pool_json_runs((GUIDER_DATA,), "eval/guider_return"):
            if (guider_run.task, guider_run.algorithm, guider_run.seed) in by_key:
                by_key[(guider_run.task, guider_run.algorithm, guider_run.seed)].scalars.update(guider_run.scalars)
        gap = plot.add_difference(runs, "eval/guider_return", "eval/learner_return")
        draw(axes[0, 1], runs, gap, "guider − learner return (IQM)")
    show(fig, "coordsum_delta.png")
    print(plot.final_table(groups, "eval/learner_return", reps=1000, seed=1))

# %% [markdown]
# ## 4. One minute of MAGPO on simple_spread: the tether at work
#
# The next cell trains `magpo_mpe.py` on simple_spread with 3 agents for `MPE_STEPS` steps. The run's logs go to
# `runs/`. It then reads the evaluation returns and two tether scalars from TensorBoard, as `plot.py` does. One
# minute is too short for much learning; watch the two tether curves.

# %%
ROLLOUT = 16 * 128  # --num-envs x --num-steps: the steps of one update
steps = max(ROLLOUT, MPE_STEPS // ROLLOUT * ROLLOUT)
cmd = [sys.executable, "magpo_mpe.py", "--total-timesteps", str(steps), "--num-envs", "16", "--num-steps", "128"]
cmd += ["--eval-interval", str(max(ROLLOUT, steps // 6)), "--num-eval-episodes", "16"]
cmd += ["--exp-name", "walkthrough", "--seed", "1"]
print("python " + " ".join(cmd[1:]), flush=True)
output = []
with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
    for line in proc.stdout:
        print(line, end="", flush=True)
        output.append(line)
run_dir = re.search(r"run directory: (\S+)", "".join(output))
if proc.returncode != 0 or run_dir is None:  # e.g. the student kit before Part C is solved
    print(f"skipped: the run failed (exit code {proc.returncode}); solve Part C first")
else:
    scalars = plot.read_scalars(run_dir.group(1))
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.6))
    for tag in ("eval/learner_return", "eval/guider_return"):
        axes[0].plot(*scalars[tag], marker=".", label=tag.split("/")[1])
    axes[0].legend(fontsize=8)
    axes[0].set(title="evaluation return")
    for ax, tag in zip(axes[1:], ("magpo/kl_guider_learner", "magpo/out_of_band_frac")):
        ax.plot(*scalars[tag], marker=".")
        ax.set(title=tag)
    for ax in axes:
        ax.set(xlabel="environment steps")
        ax.grid(alpha=0.3)
    show(fig, "mpe_tether.png")

# %% [markdown]
# `magpo/kl_guider_learner` is the learner's imitation loss KL(sg μ ‖ π), averaged over the update (§7). It measures
# how far each agent's action distribution under the guider is from the learner's, on the guider's own data. It
# starts near 0, because both networks start out close to uniform, and grows as the guider exploits information the
# learner lacks; the tether keeps it small. `magpo/out_of_band_frac` is the share of sampled agent actions whose
# ratio μ/π has left the band [1/δ, δ]. For those actions, the double clip drops the gradient that would push the
# guider further away (§4), and the masked KL pulls it back (§5). Near 0 means the tether is slack; a large
# fraction would mean the guider pulls away faster than the tether holds it. CTDS (δ = ∞) has no band at all.
#
# ## Where next
#
# `HANDOUT.md` turns these pieces into exercises:
#
# - **Part A**: write the guider step and the projection of section 2 in `theory_check.py`.
# - **Part B**: write MAPPO's pieces in `mappo_baseline.py` (GAE, the PPO loss, the critic's input).
# - **Part C**: write MAGPO's pieces in `magpo_mpe.py` (decoding order, the double clip, the masked KL, the
#   learner's loss).
# - **Part D**: run experiments and read the logs, as in sections 3 and 4.
