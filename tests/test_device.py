"""The `--cuda` path without a GPU (none is lent to CI). Two checks stand in for a CUDA run:

- on torch's `meta` device, which like CUDA refuses to mix its tensors with CPU tensors (0-dim CPU scalars
  allowed on both), every network's rollout step and training pass runs and returns `meta` tensors: nothing
  in them builds a tensor on the CPU. `gru_unroll` cuts its sequence where episodes start, which needs the
  data (`nonzero().tolist()`), so the multi-step passes run with a one-stretch stand-in; its one-step path
  (every rollout and evaluation step) needs no data and runs as it is.
- in the source of every training script, outside `__init__` (a module's buffers move with `.to(device)`),
  each tensor factory gets `device=` or goes straight to `.to(...)`, and each `.numpy()` reads from `.cpu()`.

What they cannot see: a CPU index into a device tensor (meta allows it, CUDA does not), speed, and CUDA's
numerics. The losses are not run on meta: their statistics call `.item()`, which meta has no value for; they
build no tensor of their own (the source check covers them)."""

import ast
import importlib
import os

import pytest
import torch
from helpers import REPO

SCRIPTS = ("magpo_mpe.py", "magpo_coordsum.py", "magpo_smax.py", "magpo_jumanji.py", "mappo_baseline.py",
           "happo_baseline.py", "ctce_baseline.py")  # fmt: skip
FACTORIES = {"zeros", "ones", "empty", "full", "arange", "rand", "randn", "randint", "randperm", "tensor",
             "as_tensor", "from_numpy", "eye", "linspace"}  # fmt: skip
META = torch.device("meta")
B, N, OBS, A, HIDDEN, T = 4, 3, 7, 5, 16, 6


def one_stretch_unroll(gru, x, h, starts):
    """gru_unroll's shapes and devices without its data-dependent cuts: one stretch, the state reset at step 0."""
    out, h = gru(x, (h * (~starts[0]).unsqueeze(-1).to(h.dtype)).unsqueeze(0))
    return out, h.squeeze(0)


def meta(*shape, dtype=torch.float32):
    return torch.zeros(*shape, dtype=dtype, device=META)


def assert_meta(*tensors):
    for tensor in tensors:
        assert tensor.device == META, tensor.device


MAGPO = [  # module, continuous actions, action masks, guider world-state width
    ("magpo_mpe", True, False, 0),
    ("magpo_coordsum", False, False, 0),
    ("magpo_smax", False, True, 0),
    ("magpo_smax", False, True, 9),
    ("magpo_jumanji", False, True, 0),
]


@pytest.mark.parametrize("name, continuous, masked, state_dim", MAGPO)
def test_magpo_networks_run_on_a_device_other_than_the_cpu(monkeypatch, name, continuous, masked, state_dim):
    module = importlib.import_module(name)
    extra = {"state_dim": state_dim} if state_dim else {}
    guider = module.Guider(OBS, N, A, continuous, dim=HIDDEN, heads=2, blocks=2, **extra).to(META)
    learner = module.Learner(OBS, N, A, continuous, hidden=HIDDEN).to(META)
    avail = meta(B, N, A, dtype=torch.bool) if masked else None
    state = {"state": meta(B, state_dim)} if state_dim else {}
    starts = meta(B, dtype=torch.bool)

    # the rollout step and the evaluation step, in both decoding orders (gru_unroll as it is: one step)
    for agent_order in ("random", "official"):
        perm = module.decoding_order(B, N, META, agent_order)
        action, logp, value, h = guider.act(meta(B, N, OBS), meta(B, N, HIDDEN), starts, perm, avail, **state)
        assert_meta(perm, action, logp, value, h)
    for deterministic in (False, True):
        action, h = learner.act(meta(B, N, OBS), meta(B, N, HIDDEN), starts, avail, deterministic)
        assert_meta(action, h)

    # the update's passes over stored sequences, the distributions' terms and GAE
    monkeypatch.setattr(module, "gru_unroll", one_stretch_unroll)
    seq_avail = None if avail is None else meta(T, B, N, A, dtype=torch.bool)
    seq_state = {"state": meta(T, B, state_dim)} if state_dim else {}
    actions = meta(T, B, N, A) if continuous else meta(T, B, N, dtype=torch.long)
    perms = module.random_perm(T * B, N, META).reshape(T, B, N)
    starts = meta(T, B, dtype=torch.bool)
    g_params, g_logp, g_entropy, g_value = guider.evaluate(
        meta(T, B, N, OBS), meta(B, N, HIDDEN), starts, actions, perms, seq_avail, **seq_state
    )
    l_params, h = learner(meta(T, B, N, OBS), meta(B, N, HIDDEN), starts, seq_avail)
    terms = [module.dist_log_prob(l_params, actions, continuous), module.dist_entropy(l_params, continuous)]
    terms.append(module.dist_kl(g_params, l_params, continuous))
    advantages, returns = module.compute_gae(
        rewards=meta(T, B, N), values=g_value, dones=meta(T, B, 1), next_value=meta(B, N), next_done=meta(B, 1),
        gamma=0.99, gae_lambda=0.95,
    )  # fmt: skip
    assert_meta(g_params, g_logp, g_entropy, g_value, l_params, h, *terms, advantages, returns)


@pytest.mark.parametrize("continuous, masked", [(True, False), (False, True)], ids=["continuous", "masked"])
@pytest.mark.parametrize("network", ["MAT", "Sable"])
def test_mat_and_sable_guiders_run_on_a_device_other_than_the_cpu(network, continuous, masked):
    """--guider mat / sable (the same classes in every MAGPO script and ctce_baseline.py): state, rollout step,
    bootstrap value and the teacher-forced pass (Sable's in 4-step chunks, so the state crosses chunks)."""
    module = importlib.import_module("magpo_mpe")
    extra = {"chunk_steps": 4} if network == "Sable" else {}
    guider = getattr(module, network)(OBS, N, A, continuous, dim=HIDDEN, heads=2, blocks=2, **extra).to(META)
    h = guider.initial_state(B)
    starts = meta(B, dtype=torch.bool)
    perm = module.random_perm(B, N, META)
    action, logp, value, h = guider.act(
        meta(B, N, OBS), h, starts, perm, meta(B, N, A, dtype=torch.bool) if masked else None
    )
    assert_meta(h, action, logp, value, guider.value(meta(B, N, OBS), h, starts))
    actions = meta(T, B, N, A) if continuous else meta(T, B, N, dtype=torch.long)
    perms = module.random_perm(T * B, N, META).reshape(T, B, N)
    seq_avail = meta(T, B, N, A, dtype=torch.bool) if masked else None
    outputs = guider.evaluate(meta(T, B, N, OBS), h, meta(T, B, dtype=torch.bool), actions, perms, seq_avail)
    assert_meta(*outputs)


@pytest.mark.parametrize("continuous, masked", [(True, False), (False, True)])
def test_mappo_networks_run_on_a_device_other_than_the_cpu(monkeypatch, continuous, masked):
    module = importlib.import_module("mappo_baseline")
    actor = module.Learner(OBS, N, A, continuous, hidden=HIDDEN).to(META)
    critic = module.Critic(11, N, hidden=HIDDEN).to(META)
    avail = meta(B, N, A, dtype=torch.bool) if masked else None
    action, h = actor.act(meta(B, N, OBS), meta(B, N, HIDDEN), meta(B, dtype=torch.bool), avail)
    value, critic_h = critic(meta(1, B, N, 11), meta(B, N, HIDDEN), meta(1, B, dtype=torch.bool))
    assert_meta(action, h, value, critic_h)

    monkeypatch.setattr(module, "gru_unroll", one_stretch_unroll)
    starts = meta(T, B, dtype=torch.bool)
    params, h = actor(
        meta(T, B, N, OBS), meta(B, N, HIDDEN), starts, None if avail is None else meta(T, B, N, A, dtype=torch.bool)
    )
    values, critic_h = critic(meta(T, B, N, 11), meta(B, N, HIDDEN), starts)
    actions = meta(T, B, N, A) if continuous else meta(T, B, N, dtype=torch.long)
    logp, entropy = module.dist_log_prob(params, actions, continuous), module.dist_entropy(params, continuous)
    assert_meta(params, h, values, critic_h, logp, entropy)


@pytest.mark.parametrize("continuous, masked", [(True, False), (False, True)])
def test_happo_networks_run_on_a_device_other_than_the_cpu(monkeypatch, continuous, masked):
    """happo_baseline.py's per-agent actors, both critics and the cut into chunks (its update's losses call
    `.item()`, as the others'; the source check below covers them)."""
    module = importlib.import_module("happo_baseline")
    actors = module.Actors(OBS, N, A, continuous, hidden=HIDDEN).to(META)
    avail = meta(B, N, A, dtype=torch.bool) if masked else None
    action, h = actors.act(meta(B, N, OBS), meta(B, N, HIDDEN), meta(B, dtype=torch.bool), avail)
    assert_meta(action, h)
    monkeypatch.setattr(module, "gru_unroll", one_stretch_unroll)
    starts = module.to_chunks(meta(T, B, dtype=torch.bool), 3)  # (3, 2 B): two chunks of every env
    params, h = actors(
        module.to_chunks(meta(T, B, N, OBS), 3), meta(2 * B, N, HIDDEN), starts,
        None if avail is None else meta(3, 2 * B, N, A, dtype=torch.bool),
    )  # fmt: skip
    assert params.shape[:3] == (3, 2 * B, N)
    for critic in (module.Critic(11, N, hidden=HIDDEN), module.Critics(11, N, hidden=HIDDEN)):
        values, critic_h = critic.to(META)(meta(3, 2 * B, N, 11), meta(2 * B, N, HIDDEN), starts)
        assert_meta(values, critic_h)
    assert_meta(params, h, starts)


def device_slips(path):
    """'line: code' for each tensor factory outside `__init__` with neither `device=` nor a `.to(...)` on its
    result, and each `.numpy()` whose tensor was not brought to `.cpu()` first."""
    tree = ast.parse(open(path).read())
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    exempt = {
        id(node)
        for init in ast.walk(tree)
        if isinstance(init, ast.FunctionDef) and init.name == "__init__"
        for node in ast.walk(init)
    }
    slips = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute) or id(node) in exempt:
            continue
        func = node.func
        if func.attr in FACTORIES and isinstance(func.value, ast.Name) and func.value.id == "torch":
            parent = parents.get(node)
            moved = isinstance(parent, ast.Attribute) and parent.attr == "to"
            if not moved and "device" not in {keyword.arg for keyword in node.keywords}:
                slips.append(f"{node.lineno}: {ast.unparse(node)}")
        elif func.attr == "numpy" and not (
            isinstance(func.value, ast.Call) and isinstance(func.value.func, ast.Attribute)
            and func.value.func.attr == "cpu"
        ):  # fmt: skip
            slips.append(f"{node.lineno}: {ast.unparse(node)}")
    return slips


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_tensor_of_a_training_script_is_made_on_its_device(script):
    assert device_slips(os.path.join(REPO, script)) == []


def test_the_source_check_finds_a_tensor_made_on_the_cpu(tmp_path):
    path = tmp_path / "slip.py"
    path.write_text(
        "import torch\n"
        "class Net:\n"
        "    def __init__(self):\n"
        "        self.ids = torch.eye(3)\n"  # a buffer: moves with the module, fine
        "def rollout(device, x):\n"
        "    a = torch.zeros(4, device=device)\n"
        "    b = torch.from_numpy(x).to(device)\n"
        "    c = torch.zeros(4)\n"
        "    return a.cpu().numpy(), b.numpy(), c\n"
    )
    assert device_slips(str(path)) == ["8: torch.zeros(4)", "9: b.numpy()"]
