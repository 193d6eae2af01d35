"""Where the model-store role puts things on a GPU host (shared with its audit checks)."""

CONFIG_DIR = "/etc/citadel/models"  # NAME.json: unseal settings; signing-keys.pem
PUBLIC_KEYS = f"{CONFIG_DIR}/signing-keys.pem"
HOST_STORE = "/var/lib/citadel/models"  # NAME/REVISION/: sealed copies, root only
MOUNT_ROOT = "/run/citadel/models"  # NAME/: the tmpfs each model is unsealed into
MODEL_USER = "citadel-vllm"  # the model server's user (it alone reads the unsealed files)
# The optional LUKS2 volume under HOST_STORE (roles/store_volume, citadel_runtime.store_unlock).
# Not *.json: every CONFIG_DIR/*.json is a model's unseal settings.
VOLUME_SETTINGS = f"{CONFIG_DIR}/store-volume.settings"  # JSON: backing, mapper, Vault
VOLUME_WRAPPED = f"{CONFIG_DIR}/store-volume.wrapped"  # the volume key, wrapped by transit (vault:vN:...)
VOLUME_MAPPER = "citadel-store"  # /dev/mapper/citadel-store
VOLUME_IMAGE = "/var/lib/citadel/store-volume.img"  # the file-backed volume (model_store.luks.image_size)
VOLUME_TRANSIT_KEY = "store-volume"  # deploy.vault.bootstrap.TRANSIT_KEYS
