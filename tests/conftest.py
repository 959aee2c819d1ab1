import os
import sys

# make the repository root importable (`from utils.mpe import ...`, `import magpo_mpe`) however pytest is started
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
