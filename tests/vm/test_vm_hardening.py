"""Kernel-level controls on the VM host, where a real kernel can show and change them.

After `citadel deploy` the VM passes every control, kernel-scoped ones included. Then each
kernel-scoped control is broken in turn: software emulation makes a redeploy per control too
slow, so breaks accumulate and each new break must add exactly its own control to the
failing set of kernel controls; with all of them broken no other control may fail; one
redeploy at the end must fix them all.

Then the sealed store's LUKS2 volume (roles/store_volume), and its unlock unit at boot: the
VM reaches the lab's Vault through qemu's forward (deploy.lab.vm), so after a real reboot
``citadel-store-unlock.service`` unwraps the volume key through Vault with the host's own
token and mounts the store, with no operator.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

import deploy.lab
from deploy.runner import run_deploy
from hardening.catalog import load_catalog
from hardening.engine import run_audit
from inventory.lab import write_lab_inventory
from inventory.loader import load_inventory
from tests.conftest import require_root
from tests.lab.hardening_harness import run_as_root
from tests.lab.vaultutil import free_port_pair

# The controls the base and hardening roles fix. The vault-agent role's controls are tested on
# containers (tests/lab/test_vault_agent.py); on the VM the agent runs for the store's unlock at boot, below.
CATALOG = tuple(c for c in load_catalog() if c.remediation in ("base", "hardening"))
KERNEL = [c for c in CATALOG if c.scope == "kernel"]
# What the air-gapped lab cannot give the VM, so these controls cannot pass there.
LAB_CANNOT = {
    "svc-chrony-synchronised": "the air-gapped lab has no NTP server: qemu's restricted user network carries "
    "no UDP, so chrony has nothing to synchronise with (it is checked to be running)",
}
LAB_NAME = "cvm"
LAB_SUBNET = "10.89.0.0/16"


@pytest.fixture(scope="module")
def vm_lab():
    require_root("the VM tier")
    # The VM's forward to the lab's Vault is made when it boots, so the port is chosen now (a free
    # one: a person's `citadel vault serve` may hold the default 8200).
    lab = deploy.lab.up(hosts=1, vm=True, name=LAB_NAME, subnet=LAB_SUBNET, vault_port=free_port_pair(),
                        progress=lambda t: print(f"[lab] {t}"))
    try:
        yield lab
    finally:
        deploy.lab.down(name=LAB_NAME)


@pytest.fixture(scope="module")
def vm_site(vm_lab, tmp_path_factory):
    return load_inventory(write_lab_inventory(vm_lab, tmp_path_factory.mktemp("vm") / "lab.yaml"))


@pytest.fixture(scope="module")
def vm_host(vm_lab):
    return next(h for h in vm_lab.hosts if h.kind == "vm")


@pytest.fixture(scope="module")
def hardened(vm_site, vm_host):
    report = run_deploy(vm_site, ["base", "hardening"], limit=[vm_host.name])
    assert report.ok, report.hosts[vm_host.name].errors
    return run_audit(vm_site, list(CATALOG), limit=[vm_host.name])


def test_vm_passes_every_control_after_deploy(hardened):
    bad = [
        f"{r.control}: {r.status}: {r.evidence}"
        for r in hardened
        if r.status not in ("pass", "notapplicable") and r.control not in LAB_CANNOT
    ]
    assert not bad, "\n".join(bad)


def test_vm_passes_kernel_level_controls(hardened):
    kernel_ids = {c.id for c in KERNEL}
    results = [r for r in hardened if r.control in kernel_ids]
    assert len(results) == len(kernel_ids)
    # On the VM nothing kernel-level is left to "a container cannot show this".
    container = [r.control for r in results if r.status == "notapplicable" and "container" in r.evidence]
    assert not container, container
    bad = [f"{r.control}: {r.evidence}" for r in results if r.status not in ("pass", "notapplicable") and r.control not in LAB_CANNOT]
    assert not bad, "\n".join(bad)


@pytest.fixture(scope="module")
def cumulative_breaks(hardened, vm_site, vm_lab, vm_host):
    outcome: dict[str, str | None] = {}
    kernel_ids = {c.id for c in KERNEL}
    # Failing already (the lab cannot pass it, or the deploy missed it: reported above).
    failing_before = {r.control for r in hardened if r.status in ("fail", "error")}
    broken = failing_before & kernel_ids
    passing_before = {r.control for r in hardened if r.status == "pass"}
    for control in KERNEL:
        if control.id not in passing_before:
            outcome[control.id] = "did not pass after deploy, so its break cannot be observed"
            continue
        done = run_as_root(vm_lab, vm_host, control.break_with)
        if done.returncode != 0:
            outcome[control.id] = f"break_with failed: {done.stderr.strip()[:300]}"
            continue
        broken.add(control.id)
        # Under emulation a whole-catalog audit per break is too slow: audit the kernel
        # controls here, and the whole catalog once below, when every break is in.
        failing = {r.control for r in run_audit(vm_site, KERNEL, limit=[vm_host.name]) if r.status in ("fail", "error")}
        outcome[control.id] = None if failing == broken else f"expected failing {sorted(broken)}, got {sorted(failing)}"
        broken = failing  # carry on from what is really broken, so one mistake does not cascade
    everything = {r.control for r in run_audit(vm_site, list(CATALOG), limit=[vm_host.name]) if r.status in ("fail", "error")}
    collateral = sorted(everything - broken - failing_before)
    fixed = run_deploy(vm_site, ["base", "hardening"], limit=[vm_host.name])
    still = [
        r for r in run_audit(vm_site, list(CATALOG), limit=[vm_host.name])
        if r.status in ("fail", "error") and r.control not in LAB_CANNOT
    ]
    return outcome, collateral, fixed, still


@pytest.mark.parametrize("control_id", [c.id for c in KERNEL])
def test_breaking_a_kernel_control_fails_it_alone(cumulative_breaks, control_id):
    if control_id in LAB_CANNOT:
        pytest.skip(f"cannot pass in the lab, so its break cannot be seen: {LAB_CANNOT[control_id]}")
    outcome, _, _, _ = cumulative_breaks
    assert outcome[control_id] is None, outcome[control_id]


def test_kernel_breaks_fail_no_other_control(cumulative_breaks):
    _, collateral, _, _ = cumulative_breaks
    assert not collateral, f"with every kernel control broken, these others failed too: {collateral}"


def test_one_redeploy_fixes_every_kernel_break(cumulative_breaks):
    _, _, fixed, still = cumulative_breaks
    assert fixed.ok
    assert not still, "\n".join(f"{r.control}: {r.evidence}" for r in still)


# --- the sealed store's LUKS2 volume (roles/store_volume) -------------------------------------
# A real OpenBao on the controller, on the lab's Vault address and port, which the VM reaches
# through qemu's forward. The deploy unwraps the key itself and pipes it in; at boot the unit
# unwraps it through Vault with the host's own token (the last test). A file-backed image: the
# VM has no spare disk.

STORE = "/var/lib/citadel/models"


@pytest.fixture(scope="module")
def store_volume(vm_lab, vm_host, tmp_path_factory):
    import io
    import logging

    from deploy.runner import configure_logging
    from deploy.vault.client import Access, resolve
    from deploy.vault.server import stop

    base = tmp_path_factory.mktemp("store-volume")

    def luks(data):
        data["hosts"][vm_host.name]["model_store"] = {"luks": {"image_size": "96M"}}

    server = _start_lab_vault(vm_lab, base, luks)
    log = io.StringIO()
    configure_logging(2, logging.StreamHandler(log))
    access = Access(lambda: resolve(server["site"].vault, env={"BAO_TOKEN": server["token"]}))

    def deploy():
        return run_deploy(server["site"], ["store-volume"], vault=access, limit=[vm_host.name], verbosity=2)

    try:
        yield {**server, "access": access, "deploy": deploy, "deploys": [deploy(), deploy()], "log": log}
    finally:
        stop(base / "vault")


def _start_lab_vault(vm_lab, base, edit) -> dict:
    """``start_for_lab`` on the lab's Vault port (it picks a free one): the VM's forward leads there only."""
    from unittest import mock

    from tests.lab import vaultutil

    with mock.patch.object(vaultutil, "free_port_pair", lambda: vm_lab.vault_port):
        server = vaultutil.start_for_lab(vm_lab, base, edit)
    assert server["port"] == vm_lab.vault_port
    return server


def _on_vm(vm_lab, vm_host, command: str, stdin: str | None = None):
    from tests.lab.sshutil import ssh

    return ssh(vm_lab, vm_host, command, check=False, timeout=300, stdin=stdin)


def _volume_key(store_volume, vm_lab, vm_host) -> str:
    """The volume key's passphrase (hex), unwrapped here with the root token from the host's wrapped file."""
    import base64

    wrapped = _on_vm(vm_lab, vm_host, "sudo cat /etc/citadel/models/store-volume.wrapped").stdout.strip()
    assert wrapped.startswith("vault:v1:"), wrapped[:12]
    plain = store_volume["root"].secrets.transit.decrypt_data("store-volume", wrapped,
                                                              mount_point="citadel-transit")["data"]["plaintext"]
    return base64.b64decode(plain).hex()


def _store_control():
    from hardening.controls.store_volume import STORE_VOLUME_ENCRYPTED

    return STORE_VOLUME_ENCRYPTED


def test_store_volume_is_luks2_mounted_nosuid_nodev_noexec_and_a_second_deploy_changes_nothing(store_volume, vm_lab,
                                                                                                vm_host):
    first, second = store_volume["deploys"]
    assert first.ok, (first.hosts[vm_host.name].errors, store_volume["log"].getvalue()[-3000:])
    assert second.ok and second.hosts[vm_host.name].changed == 0, second.as_dict()
    probe = _on_vm(vm_lab, vm_host, "sudo blkid -p -o export /var/lib/citadel/store-volume.img; "
                   "sudo cryptsetup status citadel-store").stdout
    assert "TYPE=crypto_LUKS" in probe and "VERSION=2" in probe, probe
    assert "type:    LUKS2" in probe and "is active and is in use" in probe, probe
    mount = _on_vm(vm_lab, vm_host, f"findmnt -n -o SOURCE,FSTYPE,OPTIONS --mountpoint {STORE}").stdout.split()
    assert mount[0] == "/dev/mapper/citadel-store", mount
    assert mount[1] == "ext4" and {"nosuid", "nodev", "noexec"} <= set(mount[2].split(",")), mount
    modes = _on_vm(vm_lab, vm_host, f"sudo stat -c '%a %U %s' {STORE} /var/lib/citadel/store-volume.img "
                   "/etc/citadel/models/store-volume.wrapped").stdout.splitlines()
    assert modes[0].startswith("700 root ") and modes[1] == f"600 root {96 << 20}" and modes[2].startswith("600 root "), modes


def test_store_volume_key_is_not_on_the_host_and_the_wrapped_key_alone_opens_nothing(store_volume, vm_lab, vm_host):
    import base64

    hex_key = _volume_key(store_volume, vm_lab, vm_host)
    image = "/var/lib/citadel/store-volume.img"
    # The real key opens it (so the key Vault holds is the volume's) ...
    assert _on_vm(vm_lab, vm_host, f"sudo cryptsetup open --test-passphrase --key-file=- --keyfile-size=64 {image}",
                  stdin=hex_key).returncode == 0
    # ... the wrapped key, all the host keeps, does not.
    wrapped = _on_vm(vm_lab, vm_host, "sudo cat /etc/citadel/models/store-volume.wrapped").stdout.strip()
    refused = _on_vm(vm_lab, vm_host, f"sudo cryptsetup open --test-passphrase --key-file=- {image}", stdin=wrapped)
    assert refused.returncode != 0
    # Neither spelling of the key in any file outside the image, nor in the journal (patterns on
    # stdin, so the key is in no command line here either).
    b64_key = base64.b64encode(bytes.fromhex(hex_key)).decode()
    found = _on_vm(vm_lab, vm_host, "sudo grep -rlsF -f - /etc /var /root /home /tmp /usr/local /run "
                   "--exclude=store-volume.img; true", stdin=f"{hex_key}\n{b64_key}\n")
    assert found.returncode == 0 and not found.stdout.strip(), found.stdout
    journal = _on_vm(vm_lab, vm_host, "sudo journalctl -o cat --no-pager").stdout
    assert journal and hex_key not in journal and b64_key not in journal
    assert hex_key not in store_volume["log"].getvalue()
    assert base64.b64encode(bytes.fromhex(hex_key)).decode() not in store_volume["log"].getvalue()


def test_store_volume_control_passes_fails_when_closed_and_a_redeploy_fixes_it(store_volume, vm_site, vm_lab, vm_host):
    control = _store_control()
    site = store_volume["site"]
    container = next(h for h in vm_lab.hosts if h.kind != "vm")
    results = {(r.host, r.control): r for r in run_audit(site, [control], limit=[vm_host.name, container.name])}
    assert results[(vm_host.name, control.id)].status == "pass", results[(vm_host.name, control.id)].evidence
    assert results[(container.name, control.id)].status == "notapplicable"  # no model_store.luks there
    done = run_as_root(vm_lab, vm_host, control.break_with)
    assert done.returncode == 0, done.stderr
    broken = run_audit(site, [control], limit=[vm_host.name])[0]
    assert broken.status == "fail" and "not mounted" in broken.evidence, broken.evidence
    again = store_volume["deploy"]()  # reopens: the key unwrapped here, piped in
    assert again.ok, again.hosts[vm_host.name].errors
    assert run_audit(site, [control], limit=[vm_host.name])[0].status == "pass"
    assert store_volume["deploy"]().hosts[vm_host.name].changed == 0


def test_store_volume_refuses_a_device_holding_a_filesystem(store_volume, vm_lab, vm_host, tmp_path):
    import yaml

    from inventory.loader import load_inventory

    made = _on_vm(vm_lab, vm_host, "sudo sh -c 'truncate -s 64M /root/other.img && mkfs.ext4 -q /root/other.img && "
                  "losetup --find --show /root/other.img'")
    assert made.returncode == 0, made.stderr
    loop = made.stdout.strip()
    try:
        data = yaml.safe_load(store_volume["inventory"].read_text())
        data["hosts"][vm_host.name]["model_store"] = {"luks": {"device": loop}}
        (tmp_path / "site.yaml").write_text(yaml.safe_dump(data))
        site = load_inventory(tmp_path / "site.yaml")
        from deploy.vault.client import Access, resolve

        access = Access(lambda: resolve(site.vault, env={"BAO_TOKEN": store_volume["token"]}))
        report = run_deploy(site, ["store-volume"], vault=access, limit=[vm_host.name])
        errors = " ".join(report.hosts[vm_host.name].errors)
        assert not report.ok and f"{vm_host.name}: {loop} holds a ext4, not a LUKS volume: refusing" in errors, errors
        assert _on_vm(vm_lab, vm_host, f"sudo blkid -p -o value -s TYPE {loop}").stdout.strip() == "ext4"
    finally:
        _on_vm(vm_lab, vm_host, f"sudo losetup -d {loop}; sudo rm -f /root/other.img")


# --- the store's unlock unit at boot, through Vault ---------------------------------------------
# The first end-to-end run of citadel-store-unlock.service: the host's agent logs in with its
# identity (cert auth) through the VM's forward, the unit unwraps the volume key with the agent's
# token and mounts the store. Nothing is done on the VM between the reboot and the checks.

UNLOCK_UNIT = "citadel-store-unlock.service"
UNLOCK_TIMEOUT_S = 600.0  # from the reboot request; the unit waits for the agent's token and Vault meanwhile
SYSTEMD_TIME = "%a %Y-%m-%d %H:%M:%S.%f UTC"  # systemctl show --timestamp=us+utc


def _vault_time(text: str) -> float:
    """Seconds since the epoch of an audit entry's time (RFC 3339, nanoseconds, UTC)."""
    whole, _, fraction = text.rstrip("Z").partition(".")
    return datetime.strptime(whole, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC).timestamp() + float(f"0.{fraction or 0}")


def _systemd_time(text: str) -> float | None:
    """Seconds since the epoch of a ``systemctl show --timestamp=us+utc`` value; None when empty."""
    return datetime.strptime(text, SYSTEMD_TIME).replace(tzinfo=UTC).timestamp() if text else None


def _vault_answers(audit_log: Path, offset: int, remote: str) -> list[tuple[float, str, str]]:
    """(time, path, error) of each request Vault answered from ``remote`` since byte ``offset`` of its audit log."""
    import json

    with audit_log.open("rb") as handle:
        handle.seek(offset)
        entries = [json.loads(line) for line in handle.read().splitlines() if line.strip()]
    return [(_vault_time(e["time"]), e["request"].get("path", ""), e.get("error") or "")
            for e in entries if e.get("type") == "response" and e.get("request", {}).get("remote_address") == remote]


def _unit_state(vm_lab, vm_host) -> dict[str, str]:
    shown = _on_vm(vm_lab, vm_host, f"systemctl show {UNLOCK_UNIT} --timestamp=us+utc -p ActiveState -p Result "
                   "-p ExecMainStatus -p ActiveEnterTimestamp -p ActiveEnterTimestampMonotonic").stdout
    return dict(line.split("=", 1) for line in shown.splitlines() if "=" in line)


@pytest.fixture(scope="module")
def rebooted(hardened, store_volume, vm_lab, vm_host):
    """The store's roles deployed with the lab's Vault, then a real reboot of the VM; what the boot did."""
    from deploy.vault.server import Layout

    site = store_volume["site"]
    report = run_deploy(site, ["base", "vault-agent", "store-volume"], vault=store_volume["access"],
                        limit=[vm_host.name], verbosity=2)
    assert report.ok, (report.hosts[vm_host.name].errors, store_volume["log"].getvalue()[-3000:])
    audit_log = Layout(Path(store_volume["dir"])).audit_log
    offset = audit_log.stat().st_size
    asked = time.time()
    ssh_seconds = deploy.lab.reboot(vm_host.name, name=LAB_NAME, progress=lambda t: print(f"[reboot] {t}"))
    while (unit := _unit_state(vm_lab, vm_host)).get("ActiveState") in ("activating", "inactive", None):
        assert time.time() - asked < UNLOCK_TIMEOUT_S, f"{UNLOCK_UNIT} still {unit} {UNLOCK_TIMEOUT_S:.0f} s after the reboot"
        time.sleep(2)
    journal = _on_vm(vm_lab, vm_host, f"sudo journalctl -b -o cat --no-pager -u {UNLOCK_UNIT}").stdout
    # The VM comes through the forward from 127.0.0.1 (its inventory address); the deploy from the lab's Vault address.
    answers = _vault_answers(audit_log, offset, "127.0.0.1")
    active_at = _systemd_time(unit.get("ActiveEnterTimestamp", ""))
    decrypts = [when for when, path, error in answers
                if path == f"{site.vault.transit_mount}/decrypt/store-volume" and not error]
    timing = {
        "reboot request to SSH": ssh_seconds,
        "reboot request to Vault's decrypt for the VM (this machine's clock)": decrypts[0] - asked if decrypts else None,
        "reboot request to the unit active (the VM's clock, from qemu's RTC)": active_at - asked if active_at else None,
        "kernel start to the unit active (the VM's monotonic clock)": int(unit.get("ActiveEnterTimestampMonotonic") or 0) / 1e6,
    }
    print(f"[reboot] {UNLOCK_UNIT}: {unit}")
    for what, seconds in timing.items():
        print(f"[reboot] {what}: {'-' if seconds is None else f'{seconds:.1f} s'}")
    print("[reboot] its journal this boot:\n" + "\n".join(f"    {line}" for line in journal.splitlines()))
    paths = sorted({path for _, path, _ in answers if not path.startswith("sys/internal/ui/mounts/")})
    print("[reboot] Vault's answers to the VM since the reboot request: " + ", ".join(paths))
    return {"unit": unit, "journal": journal, "answers": answers, "decrypts": decrypts, "timing": timing, "site": site}


def test_store_unlock_unit_opens_the_volume_at_boot_through_vault(rebooted, store_volume, vm_lab, vm_host):
    unit, journal, site = rebooted["unit"], rebooted["journal"], rebooted["site"]
    assert (unit["ActiveState"], unit["Result"], unit["ExecMainStatus"]) == ("active", "success", "0"), (unit, journal)
    vault_address = str(site.vault.address).rstrip("/")
    lines = journal.splitlines()
    assert f"store volume: volume key unwrapped through Vault at {vault_address} (transit key store-volume)" in lines, journal
    assert f"store volume: /dev/mapper/citadel-store mounted at {STORE} (nosuid,nodev,noexec)" in lines, journal
    # Anything else it said is a wait (for the agent's token, or for Vault), one line each.
    said = [line for line in lines if line.startswith("store volume: ")]
    others = [line for line in said if not line.startswith(("store volume: volume key unwrapped",
                                                             "store volume: /dev/mapper/", "store volume: waiting for "))]
    assert not others and "Traceback" not in journal, journal
    # Vault unwrapped it for the VM after the reboot, once the VM's agent had logged in with its identity (cert
    # auth), from 127.0.0.1: the address the VM's identity binds its tokens to, as Vault sees the forward.
    from deploy.vault.identity import CERT_MOUNT, identity_role

    decrypts, answers = rebooted["decrypts"], rebooted["answers"]
    assert decrypts, answers
    assert any(path == f"auth/{CERT_MOUNT}/login" and not error and when <= decrypts[0] for when, path, error in answers), answers
    role = store_volume["root"].read(f"auth/{CERT_MOUNT}/certs/{identity_role('gpu', vm_host.name)}")["data"]
    assert {cidr.removesuffix("/32") for cidr in role["token_bound_cidrs"]} == {vm_host.address} == {"127.0.0.1"}, role
    mount = _on_vm(vm_lab, vm_host, f"findmnt -n -o SOURCE,FSTYPE,OPTIONS --mountpoint {STORE}").stdout.split()
    assert mount[:2] == ["/dev/mapper/citadel-store", "ext4"] and {"nosuid", "nodev", "noexec"} <= set(mount[2].split(",")), mount
    # Through the hardened firewall (default-deny outbound): its output chain lets the VM reach the lab's Vault.
    address, port = vault_address.removeprefix("https://").rsplit(":", 1)
    chain = _on_vm(vm_lab, vm_host, "sudo nft list chain inet citadel output").stdout
    assert re.search(rf"ip daddr {re.escape(address)} tcp dport {port} accept", chain), chain
    assert all(seconds is None or seconds < UNLOCK_TIMEOUT_S for seconds in rebooted["timing"].values())
    # The key Vault gave back is in this boot's journal in neither spelling.
    import base64

    hex_key = _volume_key(store_volume, vm_lab, vm_host)
    everything = _on_vm(vm_lab, vm_host, "sudo journalctl -b -o cat --no-pager").stdout
    assert everything and hex_key not in everything and base64.b64encode(bytes.fromhex(hex_key)).decode() not in everything
