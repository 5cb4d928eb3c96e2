import os
import sys

import matplotlib

matplotlib.use("Agg")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
sys.path.insert(0, os.path.dirname(__file__))
