"""The hardening role's services part: packages, updates, time, AppArmor and GPU devices.

Applies the fixes for hardening/controls/services.py from the same tables and constants
(UNWANTED, PERIODIC, INSECURE_APT_KEYS, chrony_conf(), gpu_rules(), ...), idempotently: a
second deploy changes nothing. Order matters: unsigned apt sources are dropped before any
apt operation, unwanted packages are removed before the wanted ones are installed, and the
configuration files are written after the packages that own them.

What a container cannot do (chronyd needs CAP_SYS_TIME, AppArmor needs the kernel's LSM,
udev does not run in systemd-nspawn) is still configured for boot, and reported as
written-but-not-applied, never silently skipped and never failing the deploy.
"""

from __future__ import annotations

import io
import logging

from pyinfra import host
from pyinfra.operations import apt, files, server, systemd

from hardening.controls.services import (
    APPARMOR_DIR,
    APT_POLICY_FILE,
    AUTO_UPGRADES_FILE,
    CHRONY_CONF,
    COMPLAIN_FLAG,
    DEFAULT_TIME_SOURCES,
    GPU_DEVICE_GLOBS,
    GPU_GROUP,
    GPU_RULES_FILE,
    INSECURE_APT_KEYS,
    LOCAL_REPOSITORY,
    ORIGINS_FILE,
    PERIODIC,
    SECURITY_ORIGIN,
    SOURCES,
    TRUSTED_YES,
    UNWANTED,
    UNWANTED_PACKAGES,
    UPDATE_TIMERS,
    chrony_conf,
    gpu_rules,
)
from roles.facts import (
    AppArmorComplaining,
    CharacterDevices,
    ContainerKind,
    DirectoryEntries,
    FilesMatching,
    GrepLines,
    InstalledPackages,
    UnitMasked,
)

logger = logging.getLogger("citadel.hardening.services")

WANTED_PACKAGES = ["chrony", "apparmor", "apparmor-utils"]
UPDATE_PACKAGES = ["unattended-upgrades", "apt-listchanges"]
MANAGED = "// Managed by Citadel (role hardening); see hardening/controls/services.py."
# The control each of apt's UPDATE_TIMERS serves: apt-daily refreshes the package lists,
# apt-daily-upgrade runs unattended-upgrade.
TIMER_CONTROLS = {
    "apt-daily.timer": "svc-apt-periodic-update-lists",
    "apt-daily-upgrade.timer": "svc-apt-daily-upgrade-timer",
}
INSECURE_APT_LINE = (
    r"(AllowUnauthenticated|AllowInsecureRepositories|AllowDowngradeToInsecureRepositories)"
    r"[[:space:]]*\"?(true|yes|1|on)"
)


def auto_upgrades() -> str:
    return "\n".join([MANAGED, *(f'{key} "{value}";' for key, value in PERIODIC.items())]) + "\n"


def origins() -> str:
    return "\n".join([MANAGED, "Unattended-Upgrade::Origins-Pattern {", f'        "{SECURITY_ORIGIN}";', "};"]) + "\n"


def apt_policy() -> str:
    return "\n".join([MANAGED, *(f'{key} "{value}";' for key, value in INSECURE_APT_KEYS.items())]) + "\n"


def time_sources(site) -> list[str]:
    """`server NAME iburst` lines from the inventory when it names time servers, else Debian's pool."""
    servers = getattr(site.settings, "time_servers", None) or []
    return [f"server {name} iburst" for name in servers] or list(DEFAULT_TIME_SOURCES)


def not_applied(what: str) -> None:
    """Say that a setting was written for boot but cannot take effect on this host."""
    message = f"{host.name}: {what}"
    logger.warning(message)
    host.noop(message)


def apply(site, entry) -> None:
    container = host.get_fact(ContainerKind, _sudo=True)
    in_container = container is not None

    # apt: drop unsigned ([trusted=yes]) sources other than the local repository, before any
    # apt operation could use them, and any setting that lets apt accept unsigned packages.
    unsigned = host.get_fact(GrepLines, pattern=TRUSTED_YES, paths=SOURCES, exclude=LOCAL_REPOSITORY, _sudo=True)
    for path, line in unsigned:
        files.line(name=f"svc-apt-sources-signed: drop unsigned apt source in {path}", path=path, line=line,
                   present=False, escape_regex_characters=True)
    insecure = host.get_fact(GrepLines, pattern=INSECURE_APT_LINE, paths=["/etc/apt/apt.conf", "/etc/apt/apt.conf.d"],
                             ignore_case=True, _sudo=True)
    for path, line in insecure:
        files.line(name=f"svc-apt-no-unauthenticated, svc-apt-no-insecure-repositories: drop insecure apt setting "
                        f"in {path}", path=path, line=line, present=False, escape_regex_characters=True)
    # One file sets every INSECURE_APT_KEYS key: svc-apt-no-unauthenticated, svc-apt-no-insecure-repositories.
    files.put(name="svc-apt-no-unauthenticated, svc-apt-no-insecure-repositories: apt refuses unauthenticated packages",
              src=io.StringIO(apt_policy()), dest=APT_POLICY_FILE, user="root", group="root", mode="0644")

    # Packages: the unneeded and insecure ones out, the needed ones in.
    # dpkg's own view, so half-installed and unpacked packages count too (apt.packages sees only "ii").
    unwanted = host.get_fact(InstalledPackages, packages=UNWANTED_PACKAGES, _sudo=True)
    if unwanted:
        # One purge for every UNWANTED row (svc-no-*) with a package installed; its name lists those rows' ids.
        ids = [row.id for row in UNWANTED if set(row.packages) & set(unwanted)]
        server.shell(
            name=f"{', '.join(ids)}: remove unneeded and insecure packages: {', '.join(unwanted)}",
            commands=[f"DEBIAN_FRONTEND=noninteractive apt-get purge -y -q {' '.join(unwanted)}"],
        )
    updates = site.settings.automatic_security_updates
    apt.packages(
        name="svc-chrony-enabled, svc-apparmor-enabled, svc-unattended-upgrades-installed: time, AppArmor and update "
        "packages",
        packages=WANTED_PACKAGES + (UPDATE_PACKAGES if updates else []),
        no_recommends=True,
        update=True,
        cache_time=86400,
    )

    # Automatic security updates.
    if updates:
        # One file sets every PERIODIC key: svc-apt-periodic-update-lists, svc-apt-periodic-unattended-upgrade.
        files.put(name="svc-apt-periodic-update-lists, svc-apt-periodic-unattended-upgrade: apt refreshes lists and "
                  "runs unattended-upgrade daily", src=io.StringIO(auto_upgrades()),
                  dest=AUTO_UPGRADES_FILE, user="root", group="root", mode="0644")
        files.put(name="svc-unattended-upgrades-security-origin: unattended-upgrades installs from the security "
                       "archive", src=io.StringIO(origins()), dest=ORIGINS_FILE, user="root", group="root", mode="0644")
        for timer in UPDATE_TIMERS:
            # A masked timer cannot be enabled, and would silently stop security updates
            # (images masked them to boot faster, seen on the lab VM): unmask it first.
            if host.get_fact(UnitMasked, unit=timer, _sudo=True):
                server.shell(name=f"{TIMER_CONTROLS[timer]}: {timer} unmasked (automatic security updates are on)",
                             commands=[f"systemctl unmask {timer}"])
            systemd.service(name=f"{TIMER_CONTROLS[timer]}: {timer} enabled and active", service=timer,
                            running=True, enabled=True)
    else:
        not_applied("automatic_security_updates is off in the inventory: unattended-upgrades is not configured "
                    "(the svc-*upgrade* controls will fail until this is waived or turned back on)")

    # Time: Citadel owns chrony.conf; chronyd needs CAP_SYS_TIME, which a container lacks.
    conf = files.put(name="svc-chrony-sources: chrony time sources", src=io.StringIO(chrony_conf(time_sources(site))),
                     dest=CHRONY_CONF, user="root", group="root", mode="0644")
    if in_container:
        systemd.service(name="svc-chrony-enabled: chrony starts at boot", service="chrony.service", running=None,
                        enabled=True)
        not_applied(f"chronyd cannot adjust the clock in a {container} container (no CAP_SYS_TIME): enabled for boot, not started")
    else:
        systemd.service(name="svc-chrony-enabled, svc-chrony-synchronised: chrony enabled and running",
                        service="chrony.service", running=True, enabled=True)
        systemd.service(name="svc-chrony-synchronised: chrony restarted with its new sources", service="chrony.service",
                        running=True, restarted=True, _if=conf.did_change)

    # AppArmor: loaded at boot, every profile configured to enforce.
    for path in host.get_fact(FilesMatching, pattern=COMPLAIN_FLAG, paths=f"{APPARMOR_DIR}/*", _sudo=True):
        server.shell(
            name=f"svc-apparmor-profiles-enforce: AppArmor profile {path} enforces",
            commands=[f"sed -i -E 's/ flags=\\(complain\\)//; s/flags=\\(complain, */flags=(/; s/, *complain\\)/)/; s/, *complain,/,/' {path}"]
            + ([] if in_container else [f"apparmor_parser -r -W {path}"]),
        )
    for name in host.get_fact(DirectoryEntries, path=f"{APPARMOR_DIR}/force-complain", hidden=True, _sudo=True):
        server.shell(name=f"svc-apparmor-profiles-enforce: AppArmor profile {name} is not forced to complain",
                     commands=[f"rm -f {APPARMOR_DIR}/force-complain/{name}"]
                     + ([] if in_container else [f"apparmor_parser -r -W {APPARMOR_DIR}/{name}"]))
    if in_container:
        systemd.service(name="svc-apparmor-enabled: AppArmor loads profiles at boot", service="apparmor.service",
                        running=None, enabled=True)
        not_applied(f"AppArmor profiles are configured but not enforced: a {container} container shares a kernel it cannot load them into")
    else:
        systemd.service(name="svc-apparmor-enabled: AppArmor loads profiles at boot", service="apparmor.service",
                        running=True, enabled=True)
        # A profile loaded in complain mode by hand (apparmor_parser -C, aa-complain undone in
        # the file only) complains until reloaded from its enforcing file.
        complaining = host.get_fact(AppArmorComplaining, _sudo=True)
        if complaining not in ("", "0"):
            server.shell(name=f"svc-apparmor-enforcing: {complaining} profile(s) complaining in the kernel reloaded "
                              "to enforce",
                         commands=["systemctl reload apparmor.service"])

    # GPU device nodes: only the model service's group may open them.
    server.group(name=f"svc-gpu-model-group: model service group {GPU_GROUP}", group=GPU_GROUP, system=True)
    rule = files.put(name="svc-gpu-udev-rule: GPU device nodes 0660, model service group", src=io.StringIO(gpu_rules()),
                     dest=GPU_RULES_FILE, user="root", group="root", mode="0644")
    if in_container:
        not_applied(f"udev does not run in a {container} container: the GPU device rule is written for a real host's boot")
    else:
        server.shell(name="svc-gpu-device-nodes: reload udev rules",
                     commands=["udevadm control --reload-rules", "udevadm trigger --subsystem-match=drm --action=change"],
                     _if=rule.did_change)
    for path, mode, owner, group in host.get_fact(CharacterDevices, globs=GPU_DEVICE_GLOBS, _sudo=True):
        if int(mode, 8) & ~0o660 & 0o7777 or owner != "root" or group != GPU_GROUP:
            server.shell(name=f"svc-gpu-device-nodes: GPU device {path} 0660 root:{GPU_GROUP}",
                         commands=[f"chown root:{GPU_GROUP} {path}", f"chmod 0660 {path}"])
