"""The two underscore attributes of pyinfra that Citadel uses, behind one name each.

Checked against pyinfra 3.10.0 (``pip show pyinfra``; pyproject allows >=3.10,<4). When
pyinfra changes either, this module is the one place to follow it.

Example::

    from roles.ops.pyinfra_private import inner, will_change

    unit = files.put(name="Unit x.service", src="x.service", dest="/etc/systemd/system/x.service")
    if will_change(unit):
        systemd.daemon_reload(name="Reload systemd units")

    @operation()
    def my_file(path: str):
        yield from inner(files.file)(path=path, mode="0600")
"""

from __future__ import annotations

from collections.abc import Callable, Generator

from pyinfra.api.operation import OperationMeta


def will_change(op: OperationMeta) -> bool:
    """Whether pyinfra predicted, from facts, that ``op`` changes the host (False for a no-op).

    The prediction pyinfra stores when the operation is added (prepare stage), in
    ``OperationMeta._maybe_is_change``. The public ``OperationMeta.will_change`` (3.10) returns
    that same value when it is set, but when it is not (a ``State`` with
    ``check_for_changes=False``) it runs the operation's command generator again under whatever
    host is in context: facts are read again, and outside a deploy (the dry-run count in
    ``deploy.runner``) there is no host. The stored value never does either.
    """
    return bool(op._maybe_is_change)


def inner(operation: Callable[..., OperationMeta]) -> Callable[..., Generator]:
    """The command generator behind a pyinfra operation, to ``yield from`` inside another operation.

    Calling an operation from inside one raises ("Operation called within another operation");
    pyinfra 3's "Writing Operations" documents ``yield from <operation>._inner(...)`` as the
    way, and offers no name without the underscore. Only the operation's own arguments go
    through: global arguments (``_sudo``, ...) are the calling operation's.
    """
    return operation._inner
