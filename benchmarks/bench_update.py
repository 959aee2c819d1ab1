"""Where one training iteration of magpo_mpe.py spends its time (by hand, not a test).

Times the parts of one minibatch step of the update at the script's defaults (16 envs x 128 steps x 3 agents,
the guider 64 wide, the learner 128 wide), each a median of `--repeats` after warm-up, on the calling thread
(torch 1 thread, as the script): the forward and backward passes of guider and learner, the GRUs inside them
alone, and one rollout step (guider.act + the learner's state advance). Beside each, the matrix-multiply FLOPs
it must do and the GFLOP/s that makes, against this machine's measured matmul rate: how far a part is from
what any implementation of the same math could reach on this core. `--profile` adds the torch profiler's
table of one minibatch step.

    taskset -c 0 python benchmarks/bench_update.py
    taskset -c 0 python benchmarks/bench_update.py --profile
"""

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import magpo_mpe as m  # noqa: E402  (the script's networks and losses; its Args are parsed only under __main__)

T, M, B, N, OBS, A = 128, 16, 64, 3, 18, 5  # steps, envs per minibatch, envs in a rollout, agents, obs, actions


def median_ms(fn, repeats):
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def matmul_gflops(repeats):
    """This core's float32 matmul rate on the update's typical shape (6144 tokens x 128 -> 384)."""
    a, b = torch.randn(T * M * N, 128), torch.randn(128, 384)
    return 2 * a.shape[0] * 128 * 384 / median_ms(lambda: a @ b, repeats) / 1e6


def gru_flops(hidden, rows):
    """Forward matmul FLOPs of a GRU over T steps: input and hidden projections, 3 gates each."""
    return 2 * 2 * T * rows * hidden * 3 * hidden


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--profile", action="store_true", help="print the torch profiler's table of one step")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    guider, learner = m.Guider(OBS, N, A, True), m.Learner(OBS, N, A, True)
    obs, actions = torch.randn(T, M, N, OBS), torch.randn(T, M, N, A)
    starts = torch.zeros(T, M, dtype=torch.bool)
    starts[::25] = True  # simple_spread's 25-step episodes
    perm = m.random_perm(T * M, N, "cpu").view(T, M, N)
    g_h, l_h = torch.zeros(M, N, 64), torch.zeros(M, N, 128)

    def guider_forward():
        params, logp, entropy, value = guider.evaluate(obs, g_h, starts, actions, perm)
        return logp.mean() + entropy.mean() + value.square().mean() + params.mean()

    def learner_forward():
        params, _ = learner(obs, l_h, starts)
        return m.dist_log_prob(params, actions, True).mean()

    def backward_only(forward):
        def run():
            loss = forward()
            start = time.perf_counter()
            loss.backward()
            return time.perf_counter() - start

        return run

    def gru_pass(gru, hidden, backward):
        x = torch.randn(T, M * N, hidden, requires_grad=backward)

        def run():
            out, _ = m.gru_unroll(gru, x, torch.zeros(M * N, hidden), starts.repeat_interleave(N, dim=1))
            if backward:
                out.square().mean().backward()

        return run

    rollout_obs, rollout_h, rollout_lh = torch.randn(B, N, OBS), torch.zeros(B, N, 64), torch.zeros(B, N, 128)
    rollout_starts = torch.zeros(B, dtype=torch.bool)

    def rollout_step():
        with torch.no_grad():
            guider.act(rollout_obs, rollout_h, rollout_starts, m.random_perm(B, N, "cpu"))
            learner(rollout_obs.unsqueeze(0), rollout_lh, rollout_starts.unsqueeze(0))

    def backward_ms(forward):
        run = backward_only(forward)
        for _ in range(3):
            run()
        return 1e3 * statistics.median([run() for _ in range(args.repeats)])

    peak = matmul_gflops(args.repeats)
    tokens = T * M * N
    guider_mm = 2 * tokens * (
        (N + OBS) * 64 + 2 * 3 * 64 * 64 + 64 * (64 + 128 + 64) + 2 * 64 * 64 + 64 * 64 + 64  # embed, GRU, encoder, value
        + (A + 1) * 64 + 2 * 64 * (64 + 128 + 64) + 2 * 64 * 64 + 64 * 64 + 64 * A  # decoder, policy head
    )  # fmt: skip
    learner_mm = 2 * tokens * ((N + OBS) * 128 + 2 * 3 * 128 * 128 + 128 * 128 + 128 * A)
    rows = [
        ("guider forward (teacher-forced)", median_ms(guider_forward, args.repeats), guider_mm),
        ("guider backward", backward_ms(guider_forward), 2 * guider_mm),
        ("learner forward", median_ms(learner_forward, args.repeats), learner_mm),
        ("learner backward", backward_ms(learner_forward), 2 * learner_mm),
        ("  of which guider GRU (64) fwd + bwd", median_ms(gru_pass(guider.gru, 64, True), args.repeats),
         3 * gru_flops(64, M * N)),
        ("  of which learner GRU (128) fwd + bwd", median_ms(gru_pass(learner.gru, 128, True), args.repeats),
         3 * gru_flops(128, M * N)),
    ]  # fmt: skip
    print(f"matmul rate of this core (6144x128 @ 128x384, float32): {peak:.0f} GFLOP/s\n")
    print("| part of one minibatch step | ms (median) | matmul GFLOP | GFLOP/s | at the matmul rate (ms) |")
    print("|---|---|---|---|---|")
    for name, ms, flops in rows:
        print(f"| {name} | {ms:.1f} | {flops / 1e9:.2f} | {flops / ms / 1e6:.0f} | {flops / peak / 1e6:.1f} |")
    step = sum(ms for _, ms, _ in rows[:4])
    floor = sum(flops for _, _, flops in rows[:4]) / peak / 1e6
    print(f"| minibatch step (the four above) | {step:.1f} | | | {floor:.1f} |")
    rollout = median_ms(rollout_step, 5 * args.repeats)
    print(f"| one rollout step, {B} envs (guider.act + learner) | {rollout:.2f} | | | |")
    print(
        f"\nper iteration at the defaults (4 minibatches x 5 epochs, 128 rollout steps): update ~{20 * step / 1e3:.2f} s,"
        f" rollout networks ~{T * rollout / 1e3:.2f} s"
    )
    if args.profile:
        from torch.profiler import profile

        with profile() as prof:
            guider_forward().backward()
            learner_forward().backward()
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))


if __name__ == "__main__":
    main()
