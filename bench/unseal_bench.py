"""Benchmark: unsealing a model against reading its bytes (`cat`) and against `age -d`.

Goal (issue 5): unseal with all cores at >= 0.9x the throughput of `cat` of the same
sealed bytes, and faster than `age -d`. In one run this generates a model-like file set
(shards of random bytes, `--size` in total, default 2 GiB), seals it with a local P-256
key and a random data key (no Vault: the format's cost only), encrypts the same files
with `age` (skipped, with a message, when `age` is not installed), then times, in
interleaved rounds so that drift in the machine hits every step alike:

  unseal             signatures, every tag and every file's sha256, plaintext written
                     into a tmpfs (`--out`, default /dev/shm), as a GPU host does;
  verify (no write)  the same checks, plaintext dropped: like for like with age -d;
  cat                every sealed file to /dev/null, all cores: the raw read rate;
  age -d             every age file to /dev/null, one process per file, all cores;
  age -d (to tmpfs)  the same, writing into the tmpfs: like for like with unseal.

It does so twice: "warm", every input in the page cache (the CPU-bound case), and,
when run as root, "cold", the page cache dropped before every step, so every step
reads the sealed bytes from disk as a host's unseal does at boot.

Unseal and verify run in the interpreter a GPU host runs them with: Debian's python3
and python3-cryptography (`--python`, default /usr/bin/python3 when it has
cryptography); the time is taken inside that process, without its start-up.

Run:  .venv/bin/python bench/unseal_bench.py [--size 2G] [--shards 8] [--repeat 3] [--workers N]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from citadel_runtime import sealed  # noqa: E402

STEPS = ("unseal", "verify (no write)", "cat", "age -d", "age -d (to tmpfs)")


def size_arg(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(float(text[:-1]) * units[text[-1].upper()]) if text[-1].upper() in units else int(text)


def parallel(commands: list[list[str]], workers: int) -> None:
    def one(command):
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, commands))


def child(args: list[str]) -> int:
    """`--child unseal|verify SEALED OUT WORK WORKERS`: one timed run, printed as JSON."""
    import cryptography

    operation, sealed_dir, out, work, workers = args
    key, public = (Path(work) / "data.key").read_bytes(), (Path(work) / "signing.pub").read_bytes()
    start = time.perf_counter()
    if operation == "unseal":
        sealed.unseal(sealed_dir, out, key, public, workers=int(workers))
    else:
        sealed.verify_sealed(sealed_dir, public, key, workers=int(workers))
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "cryptography": cryptography.__version__}))
    return 0


def host_python() -> str:
    """Debian's python3 when it has python3-cryptography (what GPU hosts run); else this one."""
    candidate = "/usr/bin/python3"
    found = subprocess.run([candidate, "-c", "import cryptography"], capture_output=True) if Path(candidate).exists() else None
    return candidate if found is not None and found.returncode == 0 else sys.executable


def drop_caches() -> None:
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def make_model(source: Path, size: int, shards: int) -> None:
    source.mkdir()
    block = os.urandom(1 << 20)
    for index in range(shards):
        with open(source / f"model-{index + 1:05d}-of-{shards:05d}.safetensors", "wb") as handle:
            for _ in range((size // shards) >> 20):
                handle.write(block[index:] + block[:index])  # distinct per shard, cheap to make
    (source / "config.json").write_text('{"architectures": ["LlamaForCausalLM"]}')


def main() -> int:
    if sys.argv[1:2] == ["--child"]:
        return child(sys.argv[2:])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=size_arg, default=2 << 30, help="total plaintext size (e.g. 512M, 2G)")
    parser.add_argument("--shards", type=int, default=8, help="number of weight files (models ship in shards)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds per mode; the median is reported")
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--python", default=None, help="interpreter for unseal and verify (default: a host's)")
    parser.add_argument("--dir", type=Path, default=None, help="work directory on disk (default: a temporary one)")
    parser.add_argument("--out", type=Path, default=Path("/dev/shm"), help="a tmpfs for the plaintext")
    parser.add_argument("--no-cold", action="store_true", help="skip the cold-cache rounds")
    args = parser.parse_args()
    from cryptography.hazmat.primitives.asymmetric import ec

    from citadel_runtime.sealed_sign import LocalSigner

    python = args.python or host_python()
    cold = not args.no_cold and os.geteuid() == 0
    work = Path(tempfile.mkdtemp(prefix="unseal-bench-", dir=args.dir))
    out = Path(tempfile.mkdtemp(prefix="unseal-bench-out-", dir=args.out))
    try:
        source = work / "model"
        make_model(source, args.size, args.shards)
        mib = sum(p.stat().st_size for p in source.iterdir()) / (1 << 20)
        signer, key = LocalSigner(ec.generate_private_key(ec.SECP256R1())), os.urandom(32)
        (work / "data.key").write_bytes(key)  # a throwaway key, read by the child from a file, never argv
        (work / "signing.pub").write_bytes(signer.public_key_pem)
        start = time.perf_counter()
        sealed.seal(source, work / "sealed", model="bench", revision="1", data_key=key, wrapped_key="vault:v1:AAAA",
                    signer=signer, workers=args.workers)
        seal_s = time.perf_counter() - start
        sealed_files = sorted(str(p) for p in (work / "sealed" / "files").iterdir())

        age = shutil.which("age")
        age_files = []
        if age:
            identity = work / "age.key"
            subprocess.run(["age-keygen", "-o", str(identity)], check=True, capture_output=True)
            recipient = subprocess.run(["age-keygen", "-y", str(identity)], check=True, capture_output=True,
                                       text=True).stdout.strip()
            (work / "age").mkdir()
            for path in sorted(source.iterdir()):
                target = work / "age" / (path.name + ".age")
                subprocess.run([age, "-r", recipient, "-o", str(target), str(path)], check=True)
                age_files.append(str(target))
        shutil.rmtree(source)  # frees the page cache for what is timed
        versions = set()

        def in_host_python(operation: str) -> float:
            shutil.rmtree(out / "model", ignore_errors=True)
            done = subprocess.run([python, __file__, "--child", operation, str(work / "sealed"), str(out / "model"),
                                   str(work), str(args.workers)], check=True, capture_output=True, text=True)
            result = json.loads(done.stdout)
            versions.add(result["cryptography"])
            shutil.rmtree(out / "model", ignore_errors=True)
            return result["seconds"]

        def wall(function) -> float:
            start = time.perf_counter()
            function()
            return time.perf_counter() - start

        def age_to_tmpfs() -> float:
            (out / "age").mkdir()
            try:
                return wall(lambda: parallel([[age, "-d", "-i", str(work / "age.key"), "-o",
                                               str(out / "age" / Path(f).stem), f] for f in age_files], args.workers))
            finally:
                shutil.rmtree(out / "age")

        steps = {
            "unseal": lambda: in_host_python("unseal"),
            "verify (no write)": lambda: in_host_python("verify"),
            "cat": lambda: wall(lambda: parallel([["cat", f] for f in sealed_files], args.workers)),
        }
        if age:
            steps["age -d"] = lambda: wall(lambda: parallel([[age, "-d", "-i", str(work / "age.key"), f]
                                                             for f in age_files], args.workers))
            steps["age -d (to tmpfs)"] = age_to_tmpfs
        inputs = sealed_files + age_files
        modes = ["warm"] + (["cold"] if cold else [])
        results: dict[str, dict[str, float]] = {}
        for mode in modes:
            samples: dict[str, list[float]] = {name: [] for name in steps}
            for _ in range(args.repeat):
                for name, step in steps.items():
                    if mode == "cold":
                        drop_caches()
                    else:
                        parallel([["cat", f] for f in inputs], args.workers)  # every input in the page cache
                    samples[name].append(step())
            results[mode] = {name: mib / statistics.median(values) for name, values in samples.items()}

        print(f"{mib:.0f} MiB in {args.shards + 1} files, {args.workers} worker(s), {os.cpu_count()} cores, "
              f"median of {args.repeat} interleaved rounds; plaintext into {args.out}")
        print(f"unseal and verify: {python} with cryptography {', '.join(sorted(versions))}")
        print(f"seal (for reference, this interpreter): {mib / seal_s:.0f} MiB/s")
        print(f"{'MiB/s':<20}" + "".join(f"{mode:>10}" for mode in modes))
        for name in steps:
            print(f"{name:<20}" + "".join(f"{results[mode][name]:>10.0f}" for mode in modes))
        for mode in modes:
            speed = results[mode]
            line = f"{mode}: unseal/cat = {speed['unseal'] / speed['cat']:.2f} (goal >= 0.9)"
            if age:
                line += (f"; unseal/age writing to tmpfs = {speed['unseal'] / speed['age -d (to tmpfs)']:.2f}"
                         f", verify/age to /dev/null = {speed['verify (no write)'] / speed['age -d']:.2f} (goal > 1)")
            print(line)
        if not age:
            print("age is not installed (apt-get install age): the comparison with age -d was skipped")
        if not cold:
            print("cold-cache rounds skipped (" + ("--no-cold" if args.no_cold else "dropping the page cache needs root") + ")")
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
