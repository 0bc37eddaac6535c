"""Suite-wide settings: one torch thread.

The models in the tests are tiny; on a 2-core CI machine several torch threads per
process fight each other and the rest of the machine (measured: a 7 s test took 38 s).
"""

import torch

torch.set_num_threads(1)
