"""``gradcli health``: where a model's gradients go wrong, from one forward and one backward.

- ``step``: the batch bound to the model (``--wrt``, the cotangent), one step plainly.
- ``hooks``: the hooks that watch a step without changing it (gains, norms, dead units).
- ``flags``: measurements -> rows with their flags (nonfinite, exploding, vanishing, dead).
- ``origin``: where a non-finite value first appeared: module, op, your line.
- ``report``: the frozen report.
- ``run``: ``gradcli.health(...)``: bind, watch, flag, trace.

Imports from :mod:`gradcli.checking` and below (``checking.locate``'s paths, the
problem builder, the user-code loader); never from render or cli. Torch only
inside functions.
"""

import sys
import types


class _Package(types.ModuleType):
    """``gradcli.health`` is this package and the library's function at once: once the
    package is imported, ``gradcli.health`` names it (the import system sets the attribute,
    before ``gradcli.__getattr__`` is asked), so the package itself calls
    :func:`gradcli.health.run.health`."""

    def __call__(self, function, **kwargs):
        from .run import health

        return health(function, **kwargs)


sys.modules[__name__].__class__ = _Package
