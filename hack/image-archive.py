"""Writes the aixds image as an OCI image-layout tar archive, with the Python standard library
only: one gzipped layer holding ROOTFS (made by hack/image-rootfs.sh), the config from the
Dockerfile's final stage (ARG, LABEL, USER, EXPOSE, ENTRYPOINT, CMD), the version from
Cargo.toml and the revision and source from git.

Reproducible: every entry has the mtime SOURCE_DATE_EPOCH (default: the last commit's time),
owner 0:0 and no owner names, entries are sorted, gzip records no name or time and JSON is
written with sorted keys, so the same commit and binary give the same digests.

Usage: python3 hack/image-archive.py ROOTFS OUT
Prints the image name, the manifest digest and OUT."""

import gzip
import hashlib
import io
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
import urllib.parse
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO / "Dockerfile"
# The final stage's root filesystem comes from hack/image-rootfs.sh in the build stage; this
# script packages the same directory.
ROOTFS_COPY = ["--from=build", "/rootfs", "/"]
ARCHITECTURES = {"x86_64": "amd64", "aarch64": "arm64"}
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
INDEX = "application/vnd.oci.image.index.v1+json"


class DockerfileError(Exception):
    pass


def instructions(text):
    """(INSTRUCTION, arguments) per instruction, continuation lines joined, comments dropped."""
    logical, current = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        logical.append(current + stripped)
        current = ""
    if current:
        raise DockerfileError("the Dockerfile ends inside a continued line")
    parsed = []
    for line in logical:
        instruction, *arguments = line.split(None, 1)
        parsed.append((instruction.upper(), arguments[0] if arguments else ""))
    return parsed


def substitute(value, args):
    def arg(match):
        name = match.group(1) or match.group(2)
        if name not in args:
            raise DockerfileError(f"${name} is used but not declared with ARG in the final stage")
        return args[name]
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", arg, value)


def exec_form(instruction, arguments):
    try:
        value = json.loads(arguments)
    except json.JSONDecodeError:
        value = None
    if not (isinstance(value, list) and value and all(isinstance(v, str) for v in value)):
        raise DockerfileError(f"{instruction} must be a JSON array of strings (exec form): "
                              f"there is no shell in the image")
    return value


def image_config(dockerfile_text, build_args):
    """The `config` object of the OCI image config from the Dockerfile's final stage, with
    `build_args` for its ARGs. Labels that come out empty are left out."""
    stages, stage = [], None
    for instruction, arguments in instructions(dockerfile_text):
        if instruction == "FROM":
            stage = []
            stages.append((arguments, stage))
        elif stage is None:
            if instruction != "ARG":
                raise DockerfileError(f"{instruction} before the first FROM")
        else:
            stage.append((instruction, arguments))
    if not stages or stages[-1][0] != "scratch":
        raise DockerfileError("the final stage must be FROM scratch")
    args, config, labels = {}, {}, {}
    for instruction, arguments in stages[-1][1]:
        if instruction == "COPY":
            if arguments.split() != ROOTFS_COPY:
                raise DockerfileError(f"the final stage's only COPY must be "
                                      f"`COPY {' '.join(ROOTFS_COPY)}`, not `COPY {arguments}`")
        elif instruction == "ARG":
            name = arguments.strip()
            if name not in build_args:
                raise DockerfileError(f"ARG {name}: hack/image-archive.py has no value for it")
            args[name] = build_args[name]
        elif instruction == "LABEL":
            for pair in shlex.split(arguments):
                key, sep, value = pair.partition("=")
                if not sep:
                    raise DockerfileError(f"LABEL {pair}: expected key=value")
                value = substitute(value, args)
                if value:
                    labels[key] = value
        elif instruction == "USER":
            config["User"] = substitute(arguments.strip(), args)
        elif instruction == "EXPOSE":
            ports = config.setdefault("ExposedPorts", {})
            for port in arguments.split():
                ports[port if "/" in port else f"{port}/tcp"] = {}
        elif instruction in ("ENTRYPOINT", "CMD"):
            config[instruction.title()] = exec_form(instruction, arguments)
        else:
            raise DockerfileError(f"{instruction} in the final stage: hack/image-archive.py "
                                  f"cannot build it; keep it to COPY, ARG, LABEL, USER, EXPOSE, "
                                  f"ENTRYPOINT and CMD")
    if labels:
        config["Labels"] = labels
    return config


def source_url(remote):
    """The web URL of a git remote, without credentials: an https (or http) remote as it is, an
    ssh one (`git@host:path`, `ssh://git@host/path`) as https; None for a local path."""
    scp = re.fullmatch(r"[\w.-]+@([\w.-]+):(?!//)(.+)", remote)
    if scp:
        scheme, host, path = "https", *scp.groups()
    else:
        url = urllib.parse.urlsplit(remote)
        if url.scheme not in ("https", "http", "ssh", "git") or not url.hostname:
            return None
        scheme = url.scheme if url.scheme in ("https", "http") else "https"
        host = url.hostname if url.port is None or scheme != url.scheme else \
            f"{url.hostname}:{url.port}"
        path = url.path
    return f"{scheme}://{host}/{path.strip('/').removesuffix('.git')}"


def git(*args):
    return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True,
                          check=True).stdout.strip()


def build_args(version):
    revision = git("rev-parse", "HEAD")
    if git("status", "--porcelain", "--untracked-files=no"):
        print(f"warning: uncommitted changes; the image is labelled with revision {revision}",
              file=sys.stderr)
    remote = subprocess.run(["git", "-C", str(REPO), "remote", "get-url", "origin"],
                            capture_output=True, text=True).stdout.strip()
    source = source_url(remote) if remote else None
    if source is None:
        print("warning: no git remote `origin` with a URL: the image has no "
              "org.opencontainers.image.source label", file=sys.stderr)
    return {"VERSION": version, "REVISION": revision, "SOURCE": source or ""}


class Hashing(io.RawIOBase):
    """A write-only file that hashes and counts what passes through it to `inner`."""

    def __init__(self, inner):
        self.inner, self.sha256, self.size = inner, hashlib.sha256(), 0

    def writable(self):
        return True

    def write(self, data):
        self.sha256.update(data)
        self.size += len(data)
        self.inner.write(data)
        return len(data)

    def digest(self):
        return f"sha256:{self.sha256.hexdigest()}"


def entry(name, mode, epoch, kind=tarfile.REGTYPE, size=0):
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime, info.size = kind, mode, epoch, size
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def write_layer(rootfs, epoch, out):
    """Writes the gzipped layer of `rootfs` to `out`; returns (diff_id, digest, size)."""
    compressed = Hashing(out)
    with gzip.GzipFile(filename="", mode="wb", fileobj=compressed, mtime=0,
                       compresslevel=6) as gz:
        uncompressed = Hashing(gz)
        with tarfile.open(fileobj=uncompressed, mode="w|", format=tarfile.USTAR_FORMAT) as tar:
            for path in sorted(p for p in rootfs.rglob("*")):
                name = path.relative_to(rootfs).as_posix()
                st = path.lstat()
                mode = st.st_mode & 0o7777
                if path.is_symlink():
                    raise SystemExit(f"{path}: the root filesystem holds no symlinks")
                if path.is_dir():
                    tar.addfile(entry(name, mode, epoch, tarfile.DIRTYPE))
                else:
                    with path.open("rb") as f:
                        tar.addfile(entry(name, mode, epoch, size=st.st_size), f)
    return uncompressed.digest(), compressed.digest(), compressed.size


def canonical(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def descriptor(media_type, data):
    return {"mediaType": media_type, "digest": f"sha256:{hashlib.sha256(data).hexdigest()}",
            "size": len(data)}


def main():
    if len(sys.argv) != 3:
        raise SystemExit(__doc__.split("\n\n")[-1])
    rootfs, out = Path(sys.argv[1]), Path(sys.argv[2])
    epoch = int(os.environ.get("SOURCE_DATE_EPOCH") or git("log", "-1", "--format=%ct"))
    machine = platform.machine()
    if machine not in ARCHITECTURES:
        raise SystemExit(f"no OCI architecture name for {machine}")
    package = tomllib.loads((REPO / "Cargo.toml").read_text())["package"]
    try:
        config = image_config(DOCKERFILE.read_text(), build_args(package["version"]))
    except DockerfileError as e:
        raise SystemExit(f"{DOCKERFILE}: {e}")
    name = f"{package['name']}:{package['version']}"

    with tempfile.TemporaryFile() as layer:
        diff_id, layer_digest, layer_size = write_layer(rootfs, epoch, layer)
        platform_ = {"architecture": ARCHITECTURES[machine], "os": "linux"}
        image_config_blob = canonical({
            **platform_,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch)),
            "config": config,
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        })
        manifest = canonical({
            "schemaVersion": 2,
            "mediaType": MANIFEST,
            "config": descriptor(CONFIG, image_config_blob),
            "layers": [{"mediaType": LAYER, "digest": layer_digest, "size": layer_size}],
        })
        index = canonical({
            "schemaVersion": 2,
            "mediaType": INDEX,
            "manifests": [{
                **descriptor(MANIFEST, manifest),
                "platform": platform_,
                # The tag for OCI tools (podman, skopeo), the full name for containerd's
                # importers; both what the chart's default image resolves to.
                "annotations": {"org.opencontainers.image.ref.name": name,
                                "io.containerd.image.name": f"docker.io/library/{name}"},
            }],
        })
        blobs = sorted([(descriptor("", image_config_blob)["digest"], image_config_blob),
                        (descriptor("", manifest)["digest"], manifest),
                        (layer_digest, layer)], key=lambda blob: blob[0])
        partial = out.with_name(f".{out.name}.partial")
        try:
            write_archive(partial, epoch, blobs, layer_size, index)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        partial.replace(out)
    print(name, descriptor("", manifest)["digest"], out)


def write_archive(path, epoch, blobs, layer_size, index):
    """The outer tar: oci-layout, index.json and blobs/sha256/, sorted."""
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for directory in ("blobs", "blobs/sha256"):
            tar.addfile(entry(directory, 0o755, epoch, tarfile.DIRTYPE))
        for digest, blob in blobs:
            name = f"blobs/sha256/{digest.removeprefix('sha256:')}"
            if isinstance(blob, bytes):
                tar.addfile(entry(name, 0o644, epoch, size=len(blob)), io.BytesIO(blob))
            else:
                blob.seek(0)
                tar.addfile(entry(name, 0o644, epoch, size=layer_size), blob)
        for name, data in [("index.json", index),
                           ("oci-layout", canonical({"imageLayoutVersion": "1.0.0"}))]:
            tar.addfile(entry(name, 0o644, epoch, size=len(data)), io.BytesIO(data))


if __name__ == "__main__":
    main()
