"""Sealed models on GPU hosts: ciphertext on disk, plaintext only in RAM, and it is the signed one.

The models a host serves are those with unseal settings in ``/etc/citadel/models/NAME.json``
(written by the model-store role from the inventory); a host with none passes. Fixed by the
model-store role (roles/model_store); the paths both sides share are in citadel_runtime.layout.
The optional LUKS2 volume under the store is area store_volume.
"""

from __future__ import annotations

from citadel_runtime.layout import MODEL_CONFIG_DIR, MODEL_MOUNT_ROOT, MODEL_STORE, MODEL_USER, RUN_MODULE
from hardening.checks import Command
from hardening.model import Control, References

SEALED_NAMES = ("manifest.json", "manifest.sig", "model.sig", "*.seal")  # citadel_runtime.sealed's layout
INTEGRITY = ["164.312(c)(1)", "164.312(c)(2)"]
AT_REST = ["164.312(a)(2)(iv)", "164.312(e)(2)(ii)"]
# Every model with settings: $m its name, $mount its unseal mount (from the settings file).
EACH_MODEL = (
    f'bad=0; for c in {MODEL_CONFIG_DIR}/*.json; do [ -e "$c" ] || continue; m=$(basename "$c" .json); '
    "mount=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[\"mount\"])' \"$c\") || "
    '{ echo "$c unreadable"; bad=1; continue; }; '
)
UNSEAL = f"{RUN_MODULE} citadel_runtime.unseal"

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
            f"[ -d {MODEL_STORE} ] || {{ echo 'no model store'; exit 0; }}; "
            f"found=$(find {MODEL_STORE} -path '*/.citadel-partial' -prune -o -type f "
            + " ".join(f"! -name '{n}'" for n in SEALED_NAMES)
            + " -print | head -20); "
            '[ -z "$found" ] && { echo "only sealed files"; exit 0; }; echo "not sealed: $found"; exit 1'
        ),
        describe=f"every file under {MODEL_STORE} is a sealed file, a signature or a manifest",
    ),
    remediation="model-store",
    break_with=f"mkdir -p {MODEL_STORE}/leak && cp /etc/os-release {MODEL_STORE}/leak/model.safetensors",
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
    break_with=f"mount -o remount,exec {MODEL_MOUNT_ROOT}/$(basename $(ls {MODEL_CONFIG_DIR}/*.json | head -1) .json)",
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
    break_with=f"f=$(find {MODEL_MOUNT_ROOT} -type f | head -1) && chmod u+w $f && echo poisoned >> $f",
)

CONTROLS = [NO_PLAINTEXT_ON_DISK, UNSEAL_MOUNT, SERVED_MODEL_SIGNED]
