"""L2: your MAGPO (C1-C6 in magpo_mpe.py) learns simple_spread with 3 agents in a short run (HANDOUT.md, Part C): the
decentralised learner, which only imitates the guider and learns from its data, must clearly beat a random policy.
The bars are margins that the reference clears with room to spare (teaching/README.md gives the measured values)."""

import os

from learning_run import check_learned

STEPS = int(os.environ.get("KIT_LEARNING_STEPS", "200000"))


def test_L2_magpo_learns_simple_spread():
    check_learned("L2 (MAGPO)", "magpo_mpe.py", [], STEPS, over_random=3.4, over_untrained=2.4)
