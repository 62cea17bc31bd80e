"""The library's computations on a Problem: ``solve`` (first order, and the
library's ``jacobian``/``grad``/``vjp``/``jvp``/``hessian``/``hvp``), ``second_order``
(Hessians, hvp, ``--eig``), ``structure`` (notes on a computed Jacobian), and
per-sample gradients (``per_sample``: the command's logic; ``per_sample_torch``: the
torch mechanics — vmap or a loop, the layer shortcut, the decomposition checks).

Imports from the layers below (core, io, catalogue, usercode, problem, backends).
"""
