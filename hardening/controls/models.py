"""Sealed models on GPU hosts: ciphertext on disk, plaintext only in RAM, and it is the signed one.

The models a host serves are those with unseal settings in ``/etc/citadel/models/NAME.json``
(written by the model-store role from the inventory); a host with none passes. Fixed by the
model-store role (roles/model_store), whose paths these checks share; the optional LUKS2
volume under the store by the store-volume role (roles/store_volume).
"""

from __future__ import annotations

from hardening.checks import Command
from hardening.model import Control, References
from roles.model_store.paths import CONFIG_DIR, HOST_STORE as STORE, MODEL_USER, MOUNT_ROOT
from roles.model_store.paths import VOLUME_MAPPER, VOLUME_SETTINGS

RUNTIME_DIR = "/usr/local/lib/citadel/runtime"  # roles.ops.runtime.RUNTIME_DIR, without importing pyinfra
SEALED_NAMES = ("manifest.json", "manifest.sig", "model.sig", "*.seal")  # citadel_runtime.sealed's layout
INTEGRITY = ["164.312(c)(1)", "164.312(c)(2)"]
AT_REST = ["164.312(a)(2)(iv)", "164.312(e)(2)(ii)"]
# Every model with settings: $m its name, $mount its unseal mount (from the settings file).
EACH_MODEL = (
    f'bad=0; for c in {CONFIG_DIR}/*.json; do [ -e "$c" ] || continue; m=$(basename "$c" .json); '
    "mount=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[\"mount\"])' \"$c\") || "
    '{ echo "$c unreadable"; bad=1; continue; }; '
)
UNSEAL = f"PYTHONPATH={RUNTIME_DIR} PYTHONDONTWRITEBYTECODE=1 python3 -m citadel_runtime.unseal"

NO_PLAINTEXT_ON_DISK = Control(
    id="models-no-plaintext-on-disk",
    title="Model stores on disk hold only sealed files, signatures and manifests",
    rationale="Weights copied off a disk or a backup must be useless: on persistent storage a model exists only "
    "encrypted (AES-256-GCM, data key wrapped by Vault), never as plaintext safetensors, configs or tokenizers.",
    severity="high",
    refs=References(hipaa=AT_REST, nist=["SC-28", "SC-28(1)", "MP-4"], owasp_llm=["LLM02", "LLM03"],
                    threats=["T1", "T10"]),
    check=Command(
        command=(
            f"[ -d {STORE} ] || {{ echo 'no model store'; exit 0; }}; "
            f"found=$(find {STORE} -path '*/.citadel-partial' -prune -o -type f "
            + " ".join(f"! -name '{n}'" for n in SEALED_NAMES)
            + " -print | head -20); "
            '[ -z "$found" ] && { echo "only sealed files"; exit 0; }; echo "not sealed: $found"; exit 1'
        ),
        describe=f"every file under {STORE} is a sealed file, a signature or a manifest",
    ),
    remediation="model-store",
    break_with=f"mkdir -p {STORE}/leak && cp /etc/os-release {STORE}/leak/model.safetensors",
)

UNSEAL_MOUNT = Control(
    id="models-unseal-mount",
    title="Unsealed models live in a private tmpfs: 0700, the model server's user, nosuid, nodev, noexec",
    rationale="Decrypted weights must stay in RAM, readable by the model server alone, and the mount must not "
    "let anything planted there execute or act as a device.",
    severity="high",
    refs=References(hipaa=["164.312(a)(1)"] + AT_REST, nist=["AC-3", "AC-6", "SC-28", "CM-7"],
                    owasp_llm=["LLM03"], threats=["T6", "T10"]),
    check=Command(
        command=EACH_MODEL + (
            'line=$(findmnt -n -o FSTYPE,OPTIONS --mountpoint "$mount" 2>/dev/null); '
            's=$(stat -c "%a %U" "$mount" 2>/dev/null); echo "$m $mount: ${line:-not mounted} ($s)"; '
            f'[ "$s" = "700 {MODEL_USER}" ] || bad=1; '
            'case "$line" in tmpfs\\ *) ;; *) bad=1;; esac; '
            'for o in nosuid nodev noexec; do case ",${line#* }," in *,$o,*) ;; *) bad=1;; esac; done; '
            "done; exit $bad"
        ),
        describe="every unseal mount a tmpfs, 0700, owned by the model user, nosuid,nodev,noexec",
    ),
    remediation="model-store",
    break_with=f"mount -o remount,exec {MOUNT_ROOT}/$(basename $(ls {CONFIG_DIR}/*.json | head -1) .json)",
)

SERVED_MODEL_SIGNED = Control(
    id="models-served-signed",
    title="The model served is the one its signed manifest describes",
    rationale="A poisoned or swapped model changes what clinicians are told: every served file must match the "
    "manifest signed by Vault's model-signing key, checked offline with the pinned public keys.",
    severity="critical",
    refs=References(hipaa=INTEGRITY, nist=["SI-7", "SI-7(6)", "SR-4"], owasp_llm=["LLM03", "LLM04"],
                    threats=["T1", "T2", "T8"]),
    check=Command(
        command=EACH_MODEL + f'{UNSEAL} --check "$m" || bad=1; done; exit $bad',
        describe="signature valid and every unsealed file's SHA-256 as signed",
    ),
    remediation="model-store",
    break_with=f"f=$(find {MOUNT_ROOT} -type f | head -1) && chmod u+w $f && echo poisoned >> $f",
)

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
            f"[ -e {VOLUME_SETTINGS} ] || {{ echo '{NO_LUKS} (hosts.NAME.model_store.luks unset)'; exit 0; }}; "
            f"line=$(findmnt -n -o SOURCE,OPTIONS --mountpoint {STORE} 2>/dev/null) || "
            f"{{ echo '{STORE} is not mounted (the volume is closed or unmounted)'; exit 1; }}; "
            'src=${line%% *}; opts=${line#* }; dm=$(basename "$(readlink -f "$src")"); '
            'uuid=$(cat "/sys/block/$dm/dm/uuid" 2>/dev/null); '
            f"mode=$(stat -c '%a %U' {STORE}); "
            'echo "$src (${uuid:-not a device-mapper device}) $opts; $mode"; bad=0; '
            'case "$uuid" in CRYPT-LUKS2-*) ;; *) bad=1;; esac; '
            'for o in nosuid nodev noexec; do case ",$opts," in *,$o,*) ;; *) bad=1;; esac; done; '
            '[ "$mode" = "700 root" ] || bad=1; exit $bad'
        ),
        not_applicable_output=f"^{NO_LUKS}",
        describe=f"{STORE} a mount of a dm-crypt LUKS2 device, nosuid,nodev,noexec, 0700 root",
    ),
    remediation="store-volume",
    break_with=f"umount {STORE} && cryptsetup close {VOLUME_MAPPER}",
)

CONTROLS = [NO_PLAINTEXT_ON_DISK, UNSEAL_MOUNT, SERVED_MODEL_SIGNED, STORE_VOLUME_ENCRYPTED]
