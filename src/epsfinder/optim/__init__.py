"""Adam-family optimizers in which ε enters the second-moment estimate.

No maintained package ships these, so they are implemented here in the style of
``torch.optim``. Both keep ``state['exp_avg_sq']`` *including* the accumulated ε
(``v_t = v'_t + ε·(1 − β2^t)/(1 − β2)``, where ``v'_t`` is the ε-free EMA).
"""

from __future__ import annotations

from .adamomentum import AdaMomentum
from .eadam import EAdam

__all__ = ["AdaMomentum", "EAdam"]
