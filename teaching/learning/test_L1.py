"""L1: your MAPPO (B1-B3 in mappo_baseline.py) learns simple_spread with 3 agents in a short run (HANDOUT.md, Part B).
The bars are margins that the reference clears with room to spare (teaching/README.md gives the measured values)."""

import os

from learning_run import check_learned

STEPS = int(os.environ.get("KIT_LEARNING_STEPS", "200000"))


def test_L1_mappo_learns_simple_spread():
    check_learned("L1 (MAPPO)", "mappo_baseline.py", ["--env", "mpe"], STEPS, over_random=3.4, over_untrained=2.4)
