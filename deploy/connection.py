"""How the controller reaches a site's hosts: host selection and the pyinfra inventory.

Deploys (``deploy.runner``) and audits (``hardening.engine``) connect the same way: the hosts
chosen by ``--limit``, one pyinfra host per inventory host, strict host key checking against
the pinned keys (``inventory.known_hosts``), at most ``MAX_PARALLEL`` hosts at a time.

Example::

    import tempfile
    from pathlib import Path

    from pyinfra.api import Config, State

    from deploy.connection import MAX_PARALLEL, build_pyinfra_inventory, select_hosts
    from inventory.known_hosts import write_known_hosts

    names = select_hosts(site, ["gpu"])
    with tempfile.TemporaryDirectory() as scratch:
        known_hosts = write_known_hosts(site, names, Path(scratch))
        inventory = build_pyinfra_inventory(site, names, known_hosts)
        state = State(inventory, Config(PARALLEL=min(len(names), MAX_PARALLEL)))
"""

from __future__ import annotations

from pathlib import Path

from pyinfra.api import Inventory as PyinfraInventory

from inventory.schema import Inventory

MAX_PARALLEL = 50


class DeployError(Exception):
    """A deploy that cannot start (unknown role or host); nothing was changed."""


def select_hosts(site: Inventory, limit: list[str] | None) -> list[str]:
    """Host names to act on. A limit may name hosts or groups; an unknown name is an error."""
    if not limit:
        return list(site.hosts)
    chosen: list[str] = []
    for item in limit:
        matches = [item] if item in site.hosts else site.hosts_in(item)
        if not matches:
            raise DeployError(f"--limit {item!r} matches no host or group of site {site.site!r}")
        chosen.extend(m for m in matches if m not in chosen)
    return chosen


def build_pyinfra_inventory(
    site: Inventory, names: list[str], known_hosts: Path, vault=None, host_data: dict | None = None
) -> PyinfraInventory:
    """One pyinfra host per inventory host, with strict host key checking always on.

    `vault` (a ``deploy.vault.client.Access``, or None) is what roles that talk to Vault use.
    """
    hosts = []
    for name in names:
        entry = site.hosts[name]
        ssh = site.ssh_for(name)
        data = {
            "ssh_hostname": entry.address,
            "ssh_port": ssh.port,
            "ssh_user": ssh.user,
            "ssh_known_hosts_file": str(ssh.known_hosts or known_hosts),
            "ssh_strict_host_key_checking": "yes",
            "ssh_connect_retries": 1,
            "ssh_paramiko_connect_kwargs": {"timeout": ssh.connect_timeout, "banner_timeout": ssh.connect_timeout},
            "_sudo": ssh.sudo,
            "citadel_site": site,
            "citadel_vault": vault,
            **(host_data or {}),
        }
        if ssh.key:
            data["ssh_key"] = str(ssh.key)
        hosts.append((name, data))
    groups = {
        group: ([n for n in names if group in site.hosts[n].groups], {}) for group in ("gpu", "gateway")
    }
    return PyinfraInventory((hosts, {}), **{g: v for g, v in groups.items() if v[0]})
