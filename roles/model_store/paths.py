"""Where the model-store role puts things on a GPU host (shared with its audit checks)."""

CONFIG_DIR = "/etc/citadel/models"  # NAME.json: unseal settings; signing-keys.pem
PUBLIC_KEYS = f"{CONFIG_DIR}/signing-keys.pem"
HOST_STORE = "/var/lib/citadel/models"  # NAME/REVISION/: sealed copies, root only
MOUNT_ROOT = "/run/citadel/models"  # NAME/: the tmpfs each model is unsealed into
MODEL_USER = "citadel-vllm"  # the model server's user (it alone reads the unsealed files)
