"""One process of the 2-process data-parallel test (launched by torchrun): trains the tiny student with
the gloo backend, one thread, and rank 0 writes the parameters and the loss curve to ``argv[1]``."""
from __future__ import annotations

import sys

import torch
import torch.distributed as dist
from safetensors.torch import save_file

from tiny_setup import SETTINGS, photos, tiny_student  # tests/distill is the script's folder

from jetvit_compile.distill.end_to_end import distill_end_to_end

if __name__ == "__main__":
    torch.set_num_threads(1)
    result = distill_end_to_end(tiny_student(), photos(), SETTINGS, progress=False)
    if dist.get_rank() == 0:
        save_file({**result.params, "curve": torch.tensor(result.curve, dtype=torch.float64),
                   "world": torch.tensor(dist.get_world_size())}, sys.argv[1])
    dist.destroy_process_group()
