"""One lab host, as ``deploy.lab.up`` (containers) and ``deploy.lab.vm.start_vm`` (the VM) describe it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LabHost:
    name: str  # "lab-01", "lab-02", ...; the VM is "lab-vm"
    kind: str  # "container" or "vm"
    address: str  # where SSH reaches it from this machine
    port: int  # 22 for containers
    host_key: str  # pinned public host key line "ssh-ed25519 AAAA..."
    controller_address: str  # this machine's end of the host's link
