"""The sealed store's optional LUKS2 volume on GPU hosts whose inventory asks for it.

A second layer under the sealed files (area model_store): the store is a mount of a dm-crypt
LUKS2 device whose key only Vault unwraps. Fixed by the store-volume role (roles/store_volume),
which leaves its settings file on the hosts it applies to; the paths both sides share are in
citadel_runtime.layout.
"""

from __future__ import annotations

from citadel_runtime.layout import MODEL_STORE, STORE_VOLUME_MAPPER, STORE_VOLUME_SETTINGS
from hardening.checks import Command
from hardening.model import Control, References

NO_LUKS = "no LUKS volume for the model store"
STORE_VOLUME_ENCRYPTED = Control(
    id="models-store-volume-encrypted",
    title="Where the inventory asks for it, the sealed store is a LUKS2 volume: nosuid, nodev, noexec, 0700 root",
    rationale="A second layer under the sealed files: a disk, an image or a backup of the store taken off the host "
    "is LUKS2 ciphertext whose key only Vault can unwrap. Applies to hosts with model_store.luks in the inventory "
    "(the role leaves its settings file on them); not applicable elsewhere.",
    severity="medium",
    refs=References(hipaa=["164.312(a)(2)(iv)"], nist=["SC-28", "SC-28(1)", "MP-4"], owasp_llm=["LLM02"],
                    threats=["T10"]),
    check=Command(
        command=(
            f"[ -e {STORE_VOLUME_SETTINGS} ] || {{ echo '{NO_LUKS} (hosts.NAME.model_store.luks unset)'; exit 0; }}; "
            f"line=$(findmnt -n -o SOURCE,OPTIONS --mountpoint {MODEL_STORE} 2>/dev/null) || "
            f"{{ echo '{MODEL_STORE} is not mounted (the volume is closed or unmounted)'; exit 1; }}; "
            'src=${line%% *}; opts=${line#* }; dm=$(basename "$(readlink -f "$src")"); '
            'uuid=$(cat "/sys/block/$dm/dm/uuid" 2>/dev/null); '
            f"mode=$(stat -c '%a %U' {MODEL_STORE}); "
            'echo "$src (${uuid:-not a device-mapper device}) $opts; $mode"; bad=0; '
            'case "$uuid" in CRYPT-LUKS2-*) ;; *) bad=1;; esac; '
            'for o in nosuid nodev noexec; do case ",$opts," in *,$o,*) ;; *) bad=1;; esac; done; '
            '[ "$mode" = "700 root" ] || bad=1; exit $bad'
        ),
        not_applicable_output=f"^{NO_LUKS}",
        describe=f"{MODEL_STORE} a mount of a dm-crypt LUKS2 device, nosuid,nodev,noexec, 0700 root",
    ),
    remediation="store-volume",
    break_with=f"umount {MODEL_STORE} && cryptsetup close {STORE_VOLUME_MAPPER}",
)

CONTROLS = [STORE_VOLUME_ENCRYPTED]
