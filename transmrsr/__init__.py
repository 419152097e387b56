"""TransMRSR: isotropic high-resolution brain MRI from thick-slice scans.

The Python interface, the ``transmrsr`` commands on images in memory::

    import transmrsr

    restored = transmrsr.restore("thick_t1.nii.gz")  # a nibabel image

:func:`restore`, :func:`load_model`, :func:`degrade`, :func:`upsample` and :func:`evaluate`
live in :mod:`transmrsr.api` and are imported on first use, so that importing a lower module
(``transmrsr.io``, say) does not load torch and the networks with them. Bad input raises
:class:`TransMRSRError`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from transmrsr._version import __version__
from transmrsr.errors import TransMRSRError

if TYPE_CHECKING:
    from transmrsr.api import degrade, evaluate, load_model, restore, upsample

__all__ = [
    "TransMRSRError",
    "__version__",
    "degrade",
    "evaluate",
    "load_model",
    "restore",
    "upsample",
]

#: Names served from :mod:`transmrsr.api` on first access.
_API_NAMES = frozenset({"degrade", "evaluate", "load_model", "restore", "upsample"})


def __getattr__(name: str) -> Any:
    if name in _API_NAMES:
        from transmrsr import api

        value = getattr(api, name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _API_NAMES)
