"""The local lab: disposable Debian 12 hosts to try Citadel on (needs root).

Containers (systemd-nspawn on an overlay of a cached golden rootfs, each in its own network
namespace on its own /30, air-gapped, packages from a local read-only apt repository) and,
on request, one qemu VM (deploy.lab.vm) for what containers cannot do. The life cycle is in
deploy.lab.lifecycle; its public names are re-exported here.

    lab = up(hosts=2)          # SSH-ready hosts, as citadel@10.77.0.2, 10.77.0.6, ...
    status()                   # per host: name, kind, address, running, ssh
    reboot("lab-01")           # a real reboot (systemd stops and boots); seconds until SSH answers
    down()                     # removes everything; leftovers() == [] afterwards
"""

from deploy.lab.errors import LabError
from deploy.lab.host import LabHost
from deploy.lab.lifecycle import Lab, down, leftovers, reboot, status, up, vault_address

__all__ = ["Lab", "LabError", "LabHost", "down", "leftovers", "reboot", "status", "up", "vault_address"]
