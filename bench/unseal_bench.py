"""Benchmark: unsealing a model against reading its bytes (`cat`) and against `age -d`.

Goal (issue 5): unseal with all cores at >= 0.9x the throughput of `cat` of the same
sealed bytes, and faster than `age -d`. In one run this generates a model-like file set
(shards of random bytes, `--size` in total, default 2 GiB), seals it with a local P-256
key and a random data key (no Vault: the format's cost only), encrypts the same files
with `age` (skipped, with a message, when `age` is not installed), then times:

  (a) unseal: signatures, every tag and every file's sha256, plaintext written to disk
      (and, for reference, the same checks without writing: `verify_sealed` with the key);
  (b) `cat` of every sealed file to /dev/null: the raw read limit;
  (c) `age -d` of every age file to /dev/null, one process per file, all cores (and, like
      for like with unseal, `age -d -o FILE`).

Every input is read once before it is timed, so all three read from the page cache
(memory permitting); unseal also writes its plaintext (into the page cache) as a host does.

Run:  .venv/bin/python bench/unseal_bench.py [--size 2G] [--shards 8] [--repeat 3] [--workers N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402

from citadel_runtime import sealed  # noqa: E402
from citadel_runtime.sealed_sign import LocalSigner  # noqa: E402
from timing import timed  # noqa: E402  (bench/timing.py: this script's own folder is on sys.path)


def size_arg(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(float(text[:-1]) * units[text[-1].upper()]) if text[-1].upper() in units else int(text)


def parallel(commands: list[list[str]], workers: int) -> None:
    def one(command):
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, commands))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=size_arg, default=2 << 30, help="total plaintext size (e.g. 512M, 2G)")
    parser.add_argument("--shards", type=int, default=8, help="number of weight files (models ship in shards)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--dir", type=Path, default=None, help="work directory (default: a temporary one)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="unseal-bench-", dir=args.dir))
    try:
        source = work / "model"
        source.mkdir()
        shard = args.size // args.shards
        block = os.urandom(1 << 20)
        for index in range(args.shards):
            with open(source / f"model-{index + 1:05d}-of-{args.shards:05d}.safetensors", "wb") as handle:
                for _ in range(shard >> 20):
                    handle.write(block[index:] + block[:index])  # distinct per shard, cheap to make
        (source / "config.json").write_text('{"architectures": ["LlamaForCausalLM"]}')
        total = sum(p.stat().st_size for p in source.iterdir())
        mib = total / (1 << 20)
        signer, key = LocalSigner(ec.generate_private_key(ec.SECP256R1())), os.urandom(32)
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
        shutil.rmtree(source)  # free the page cache for what is timed

        def unseal():
            out = work / "out"
            shutil.rmtree(out, ignore_errors=True)
            sealed.unseal(work / "sealed", out, key, signer.public_key_pem, workers=args.workers)

        def cat():
            parallel([["cat", f] for f in sealed_files], args.workers)

        def age_d():
            parallel([[age, "-d", "-i", str(work / "age.key"), f] for f in age_files], args.workers)

        def age_d_files():  # like for like with unseal, which writes its plaintext
            shutil.rmtree(work / "age-out", ignore_errors=True)
            (work / "age-out").mkdir()
            parallel([[age, "-d", "-i", str(work / "age.key"), "-o", str(work / "age-out" / Path(f).stem), f]
                      for f in age_files], args.workers)

        cat()  # warm-up reads: everything timed below comes from the page cache
        results = {"unseal": timed(unseal, args.repeat), "cat": timed(cat, args.repeat),
                   # The same checks without writing plaintext: like for like with age -d > /dev/null.
                   "verify (no write)": timed(lambda: sealed.verify_sealed(work / "sealed", signer.public_key_pem, key,
                                                                           args.workers), args.repeat)}
        if age:
            age_d()
            results["age -d"] = timed(age_d, args.repeat)
            results["age -d (to files)"] = timed(age_d_files, args.repeat)
        print(f"{mib:.0f} MiB in {args.shards + 1} files, {args.workers} worker(s), {os.cpu_count()} cores, "
              f"median of {args.repeat}; inputs read once before timing (page cache)")
        print(f"  seal (for reference)  {seal_s:7.2f} s  {mib / seal_s:8.0f} MiB/s")
        for name, seconds in results.items():
            print(f"  {name:<21} {seconds:7.2f} s  {mib / seconds:8.0f} MiB/s")
        speed = {name: mib / seconds for name, seconds in results.items()}
        print(f"unseal/cat = {speed['unseal'] / speed['cat']:.2f} (goal >= 0.9)")
        if age:
            print(f"unseal/age = {speed['unseal'] / speed['age -d']:.2f} (goal > 1; age to /dev/null)")
            print(f"unseal/age writing files = {speed['unseal'] / speed['age -d (to files)']:.2f}; "
                  f"verify (no write)/age = {speed['verify (no write)'] / speed['age -d']:.2f}")
        else:
            print("age is not installed (apt-get install age): the comparison with age -d was skipped")
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
