"""The keyguard on GPU hosts: it drains when it stops, so a restart fails no request.

The check reads the unit systemd has loaded (``systemctl cat``: the file and its drop-ins)
through ``citadel_runtime.drain audit keyguard``, installed by role keyguard. A host without
the keyguard's unit passes. The break is a real misconfiguration of the unit file, which the
role's redeploy writes back.
"""

from __future__ import annotations

from citadel_runtime.layout import RUN_MODULE
from hardening.checks import Command
from hardening.model import Control, References

UNIT_FILE = "/etc/systemd/system/citadel-keyguard.service"  # as roles.keyguard installs it
INSTALLED = f"[ -e {UNIT_FILE} ] || {{ echo 'no keyguard on this host'; exit 0; }}; "
# Availability: a restart must not cut a clinician's request (threat T5), nor leave it half answered.
AVAILABILITY = ["SC-5", "SC-24", "SI-17"]

DRAINS_ON_STOP = Control(
    id="keyguard-drains-on-stop",
    title="The keyguard drains when stopped: a drain deadline, and a TimeoutStopSec above it",
    rationale="A keyguard restarted (an update, a new unit) must finish the requests under way and refuse new "
    "ones with a 503 the gateway takes to another replica; if systemd kills it before its drain deadline, every "
    "answer still being generated through it is cut, and the clinician gets a 502.",
    severity="medium",
    refs=References(nist=AVAILABILITY, threats=["T5"]),
    check=Command(command=f"{INSTALLED}{RUN_MODULE} citadel_runtime.drain audit keyguard",
                  describe="citadel-keyguard.service has --drain-seconds > 0 and TimeoutStopSec= above it"),
    remediation="keyguard",
    break_with=f"sed -i 's/^TimeoutStopSec=.*/TimeoutStopSec=5/' {UNIT_FILE} && systemctl daemon-reload",
)

CONTROLS = [DRAINS_ON_STOP]
