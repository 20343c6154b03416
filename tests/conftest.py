"""Test helpers shared by every test folder (``cli_errors``) are imported from here, whatever the import mode.

Under pytest-xdist (``make test`` runs two workers on this 2-core machine) each worker keeps torch to one
thread, so two workers do not fight over the cores."""
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

if os.environ.get("PYTEST_XDIST_WORKER"):
    import torch

    torch.set_num_threads(1)
