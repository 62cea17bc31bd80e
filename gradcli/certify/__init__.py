"""``gradcli certify``: every property of a custom ``autograd.Function``, a
``torch.library`` custom op or a callable of tensors, one verdict row each (SPEC §7).

- ``run``: :func:`certify`, the library's, the CLI's and the pytest plugin's entry point;
- ``registry``: the property table, each property a small registered unit;
- one module per property family: ``gradient``, ``grad_output`` (non-contiguous,
  untouched, zero and undefined), ``saved``, ``metadata``, ``second``, ``tangent``,
  ``transforms`` (torch.func, batched), ``precision`` (dtypes, autocast),
  ``compiled``, ``determinism``, ``shapes``, ``opcheck``;
- ``subject`` (what is certified), ``context`` (arguments, cotangents, the
  baseline), ``numeric`` (check's fd probes, Taylor test and fd's error bars,
  applied here), ``repro`` (one-line reproducers), ``report`` (Row, CertifyReport).

Imports from :mod:`gradcli.checking` and below; never from render or cli.

``gradcli.certify`` is both this package and the library function: calling the
package calls :func:`run.certify` (the package's module type is made callable),
so ``gradcli.certify(...)`` works whether or not a submodule was imported first.
"""

from __future__ import annotations

import sys
from types import ModuleType


def certify(function, input=None, **options):
    """Certify ``function`` at its arguments; see :func:`gradcli.certify.run.certify`."""
    from .run import certify as run

    return run(function, input, **options)


class _CallablePackage(ModuleType):
    def __call__(self, function, input=None, **options):
        return certify(function, input, **options)


sys.modules[__name__].__class__ = _CallablePackage
