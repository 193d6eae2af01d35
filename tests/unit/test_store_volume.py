"""The optional LUKS2 store volume: inventory, the role's decisions, the host code's pure parts, the control.

What needs a kernel (cryptsetup, dm-crypt, mounts) is tested on the VM host
(tests/vm/test_vm_hardening.py); the boot-time unwrap with a host's own token against a
real OpenBao in tests/lab/test_store_volume_vault.py.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from pyinfra.api.exceptions import OperationError

from citadel_runtime import layout, store_unlock
from hardening.controls.store_volume import STORE_VOLUME_ENCRYPTED
from inventory.loader import InventoryError, parse_inventory
from roles import registry
from roles.facts import StoreVolumeState
from roles.store_volume import judge, volume_settings

KEY = bytes(range(32))
HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHk1kKmvSbq3oL0tmNxMq7eE8lRk9l0nqYy4m1qVw2aa"


def site(luks=None, groups=("gpu",)):
    host = {"address": "10.20.1.11", "groups": list(groups), "ssh": {"host_key": HOST_KEY}}
    if luks is not None:
        host["model_store"] = {"luks": luks}
    return parse_inventory({"site": "t", "vault": {"address": "https://vault.example.org:8200"},
                            "hosts": {"gpu-01": host}}, Path("site.yaml"))


# --- inventory -------------------------------------------------------------------------------


def test_luks_is_off_by_default_and_takes_a_device_or_an_image():
    assert site().hosts["gpu-01"].model_store.luks is None
    assert site({"device": "/dev/disk/by-id/nvme-X_123"}).hosts["gpu-01"].model_store.luks.device == "/dev/disk/by-id/nvme-X_123"
    luks = site({"image_size": "2G"}).hosts["gpu-01"].model_store.luks
    assert luks.image_bytes == 2 << 30 and luks.device is None


@pytest.mark.parametrize("luks, message", [
    ({}, "hosts.gpu-01.model_store.luks: give either device"),
    ({"device": "/dev/sdb", "image_size": "1G"}, "not both"),
    ({"device": "sdb"}, "hosts.gpu-01.model_store.luks.device: String should match pattern"),
    ({"device": "/dev/sdb/../sda"}, "no '..' in a device path"),
    ({"image_size": "10M"}, "hosts.gpu-01.model_store.luks: image_size 10M is below the 64M"),
    ({"image_size": "1.5G"}, "hosts.gpu-01.model_store.luks.image_size"),
    ({"image_size": "1G", "cipher": "null"}, "hosts.gpu-01.model_store.luks.cipher: unknown key"),
])
def test_bad_luks_settings_name_the_field(luks, message):
    with pytest.raises(InventoryError) as caught:
        site(luks)
    assert message in str(caught.value) and "site.yaml" in str(caught.value)


def test_only_gpu_hosts_keep_a_store():
    with pytest.raises(InventoryError, match="hosts.gpu-01.model_store.luks: only hosts in the 'gpu' group"):
        site({"image_size": "1G"}, groups=("gateway",))


# --- the role's decisions --------------------------------------------------------------------


def test_registered_for_gpu_hosts_before_model_store():
    names = list(registry())
    assert names.index("store-volume") < names.index("model-store")
    assert registry()["store-volume"].groups == ("gpu",)


def test_settings_are_what_the_host_code_needs_and_hold_no_secret():
    settings = volume_settings(site({"image_size": "1G"}), "gpu-01")
    assert store_unlock.REQUIRED <= set(settings)
    assert settings["backing"] == layout.STORE_VOLUME_IMAGE and settings["image_size"] == 1 << 30
    assert settings["mount"] == layout.MODEL_STORE and settings["transit_key"] == "store-volume"
    assert str(store_unlock.SETTINGS) == layout.STORE_VOLUME_SETTINGS
    assert not layout.STORE_VOLUME_SETTINGS.endswith(".json")  # MODEL_CONFIG_DIR/*.json are models' unseal settings
    assert volume_settings(site({"device": "/dev/vdb"}), "gpu-01")["backing"] == "/dev/vdb"


MOUNTED = "mount=/dev/mapper/citadel-store rw,nosuid,nodev,noexec,relatime\nmode=700 root\nopen=yes\nwrapped=yes\n"


@pytest.mark.parametrize("state, backing, needs", [
    ("backing=absent\nmount=\nmode=\n", layout.STORE_VOLUME_IMAGE, {"format": True, "open": True, "mount": True}),
    ("backing=present\nmount=\nmode=700 root\n", "/dev/vdb", {"format": True, "open": True, "mount": True}),
    ("backing=present\nTYPE=crypto_LUKS\nVERSION=2\nmount=\nmode=700 root\n", "/dev/vdb",
     {"format": False, "open": True, "mount": True}),
    ("backing=present\nTYPE=crypto_LUKS\nVERSION=2\n" + MOUNTED, "/dev/vdb", {"format": False, "open": False, "mount": False}),
    ("backing=present\nTYPE=crypto_LUKS\nVERSION=2\n" + MOUNTED.replace("noexec,", ""), "/dev/vdb",
     {"format": False, "open": False, "mount": True}),
    ("backing=present\nTYPE=crypto_LUKS\nVERSION=2\n" + MOUNTED.replace("700 root", "755 root"), "/dev/vdb",
     {"format": False, "open": False, "mount": True}),
])
def test_what_the_volume_needs(state, backing, needs):
    assert judge(StoreVolumeState().process(state.splitlines()), backing, "gpu-01") == needs


@pytest.mark.parametrize("state, message", [
    ("backing=present\nTYPE=ext4\n", "gpu-01: /dev/vdb holds a ext4, not a LUKS volume: refusing to format it"),
    ("backing=present\nPTTYPE=gpt\n", "gpu-01: /dev/vdb holds a gpt partition table"),
    ("backing=present\nTYPE=crypto_LUKS\nVERSION=1\n", "gpu-01: /dev/vdb is a LUKS1 volume, not LUKS2"),
    ("backing=absent\n", "gpu-01: /dev/vdb does not exist (hosts.gpu-01.model_store.luks.device)"),
])
def test_a_device_it_must_not_touch_is_refused_naming_host_and_device(state, message):
    with pytest.raises(OperationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        judge(StoreVolumeState().process(state.splitlines()), "/dev/vdb", "gpu-01")


# --- the host code ---------------------------------------------------------------------------


def test_the_key_reaches_cryptsetup_on_stdin_as_exactly_64_hex_digits():
    phrase = store_unlock.passphrase(KEY)
    assert phrase == KEY.hex().encode() and len(phrase) == store_unlock.KEY_HEX_LENGTH
    for argv in (store_unlock.open_command("/dev/vdb", "citadel-store"), store_unlock.format_command("/dev/vdb")):
        assert "--key-file=-" in argv and "--keyfile-size=64" in argv and "luks2" in argv
        assert not any(KEY.hex() in a for a in argv)
    assert store_unlock.mount_command("citadel-store", "/var/lib/citadel/models") == [
        "mount", "-t", "ext4", "-o", "nosuid,nodev,noexec", "/dev/mapper/citadel-store", "/var/lib/citadel/models"]
    with pytest.raises(store_unlock.StoreError, match="not 32 bytes"):
        store_unlock.passphrase(b"short")


def test_the_piped_key_is_checked_and_a_trailing_newline_dropped():
    assert store_unlock.read_key_stdin(io.BytesIO(KEY.hex().encode() + b"\n")) == KEY.hex().encode()
    for bad in (b"", b"zz" * 32, KEY.hex().upper().encode(), KEY.hex()[:-2].encode() + b"\n"):
        with pytest.raises(store_unlock.StoreError, match="64 hex digits") as caught:
            store_unlock.read_key_stdin(io.BytesIO(bad))
        assert KEY.hex() not in str(caught.value)


MOUNTINFO = """\
22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
61 22 253:0 / /var/lib/citadel/models rw,nosuid,nodev,noexec,relatime shared:33 - ext4 /dev/mapper/citadel-store rw
70 61 0:50 / /var/lib/citadel/models/x rw - tmpfs none rw
"""


def test_mount_entry_reads_mountinfo():
    source, options = store_unlock.mount_entry("/var/lib/citadel/models", MOUNTINFO)
    assert source == "/dev/mapper/citadel-store" and {"nosuid", "nodev", "noexec"} <= options
    assert store_unlock.mount_entry("/srv", MOUNTINFO) is None
    # A later mount on the same point is the one on top.
    over = MOUNTINFO + "80 61 0:51 / /var/lib/citadel/models rw,relatime - tmpfs other rw\n"
    assert store_unlock.mount_entry("/var/lib/citadel/models", over)[0] == "other"


def test_only_an_empty_device_may_be_formatted():
    store_unlock.refuse_unless_empty("/dev/vdb", {})
    with pytest.raises(store_unlock.StoreError, match="/dev/vdb holds a xfs"):
        store_unlock.refuse_unless_empty("/dev/vdb", {"TYPE": "xfs"})
    with pytest.raises(store_unlock.StoreError, match="dos partition table"):
        store_unlock.refuse_unless_empty("/dev/vdb", {"PTTYPE": "dos"})


def test_settings_errors_are_one_clear_line(tmp_path):
    with pytest.raises(store_unlock.StoreError, match="deploy the store-volume role"):
        store_unlock.load_settings(tmp_path / "none")
    (tmp_path / "s").write_text("{not json")
    with pytest.raises(store_unlock.StoreError, match="unreadable"):
        store_unlock.load_settings(tmp_path / "s")
    (tmp_path / "s").write_text('{"backing": "/dev/vdb"}')
    with pytest.raises(store_unlock.StoreError, match="lacks mapper, mount, token_file"):
        store_unlock.load_settings(tmp_path / "s")


def test_usage(capsys):
    assert store_unlock.main(["--format"]) == 2  # formatting needs the key on stdin
    assert store_unlock.main(["--stop", "--key-stdin"]) == 2
    assert store_unlock.main(["--bogus"]) == 2
    assert "usage:" in capsys.readouterr().err


def test_a_missing_wrapped_key_is_a_clear_refusal(tmp_path):
    settings = {"wrapped_file": str(tmp_path / "none"), "transit_key": "store-volume"}
    with pytest.raises(store_unlock.StoreError, match="no wrapped volume key at"):
        store_unlock.unwrap_key(settings)


# --- the control -----------------------------------------------------------------------------


def test_control_is_not_applicable_without_luks_and_judges_the_mount():
    check = STORE_VOLUME_ENCRYPTED.check
    assert check.evaluate("no LUKS volume for the model store (hosts.NAME.model_store.luks unset)", 0).status == \
        "notapplicable"
    good = "/dev/mapper/citadel-store (CRYPT-LUKS2-abc-citadel-store) rw,nosuid,nodev,noexec; 700 root"
    assert check.evaluate(good, 0).status == "pass"
    assert check.evaluate("/var/lib/citadel/models is not mounted (the volume is closed or unmounted)", 1).status == "fail"
    assert STORE_VOLUME_ENCRYPTED.remediation == "store-volume"
    assert "164.312(a)(2)(iv)" in STORE_VOLUME_ENCRYPTED.refs.hipaa and "SC-28(1)" in STORE_VOLUME_ENCRYPTED.refs.nist
