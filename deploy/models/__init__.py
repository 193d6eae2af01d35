"""Sealed models on the controller: seal, verify, list, rekey, and the signing public key.

The format itself (and the checks hosts run) is :mod:`citadel_runtime.sealed`; this
package adds Vault and the local store. Modules, one purpose each:

- :mod:`deploy.models.location` finds the store and its ``NAME/REVISION`` directories;
- :mod:`deploy.models.keys` talks to transit (data keys, signing, public keys) and keeps
  the KV copy of a model's wrapped data key in step;
- :mod:`deploy.models.seal`, :mod:`deploy.models.verify`, :mod:`deploy.models.rekey`
  and :mod:`deploy.models.listing` do one command each.

Example::

    >>> from deploy.models.seal import seal_model                        # doctest: +SKIP
    >>> seal_model(keys, Path("/srv/models"), Path("llama-3-8b"), "llama-3-8b", "r1")  # doctest: +SKIP
"""

from __future__ import annotations


class ModelError(Exception):
    """A problem the operator can act on; ``exit_code`` 2 for bad input, 1 for failed work."""

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code
