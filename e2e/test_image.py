"""The container image hack/image.sh builds (an OCI image-layout tar archive, no daemon): its
layout and digests, its config against the Dockerfile and the chart, its root filesystem (only
aixds and what it links, no shell), that it builds byte for byte the same twice, and that aixds
runs from the unpacked root filesystem alone, as user 65532, serving a real Envoy.

The archive packages $AIXDS_BIN (`--binary`, the debug build the other tests use) rather than
making a release build: the files and config are the same, only the binary differs."""

import gzip
import hashlib
import importlib.util
import json
import os
import shlex
import subprocess
import tarfile
import time
import tomllib

import pytest
import requests
import yaml

from conftest import REPO, aixds_bin, envoy_bin, free_port, openai_backend, route
from test_chart import render

CARGO = tomllib.loads((REPO / "Cargo.toml").read_text())["package"]
CHART_VALUES = REPO / "charts" / "aixds" / "values.yaml"
LOADER = "lib64/ld-linux-x86-64.so.2"


def git(*args):
    return subprocess.run(["git", "-C", REPO, *args], capture_output=True, text=True,
                          check=True).stdout.strip()


def build(out):
    result = subprocess.run(["bash", REPO / "hack" / "image.sh", out, "--binary", aixds_bin()],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def digest_of(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Image:
    """The archive unpacked: `layout` holds the OCI layout, `rootfs` the unpacked layer."""

    def __init__(self, archive, printed, workdir):
        self.archive, self.printed = archive, printed
        self.layout, self.rootfs = workdir / "layout", workdir / "rootfs"
        self.layout.mkdir()
        self.rootfs.mkdir()
        with tarfile.open(archive) as tar:
            self.names = tar.getnames()
            tar.extractall(self.layout, filter="data")
        self.index = json.loads((self.layout / "index.json").read_text())
        self.manifest_descriptor = self.index["manifests"][0]
        self.manifest = json.loads(self.blob(self.manifest_descriptor["digest"]))
        self.config = json.loads(self.blob(self.manifest["config"]["digest"]))
        self.layer_path = self.blob_path(self.manifest["layers"][0]["digest"])
        with tarfile.open(self.layer_path) as tar:
            self.entries = {m.name: m for m in tar.getmembers()}
        # GNU tar as root, as a container runtime unpacks: owners, modes and /tmp's sticky bit.
        subprocess.run(["tar", "-xzf", self.layer_path, "-C", self.rootfs, "--same-owner",
                        "--same-permissions"], check=True)

    def blob_path(self, digest):
        algorithm, hex_ = digest.split(":")
        return self.layout / "blobs" / algorithm / hex_

    def blob(self, digest):
        return self.blob_path(digest).read_bytes()


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("image")
    archive = workdir / "aixds.tar"
    return Image(archive, build(archive), workdir)


def chart_image():
    deployment = next(o for o in render({}) if o["kind"] == "Deployment")
    return deployment["spec"]["template"]["spec"]["containers"][0]["image"]


def test_layout_digests_and_sizes_match_the_blobs(image):
    assert json.loads((image.layout / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    assert image.index["schemaVersion"] == 2
    assert image.index["mediaType"] == "application/vnd.oci.image.index.v1+json"
    assert len(image.index["manifests"]) == 1
    descriptors = [image.manifest_descriptor, image.manifest["config"], *image.manifest["layers"]]
    for descriptor in descriptors:
        data = image.blob(descriptor["digest"])
        assert digest_of(data) == descriptor["digest"]
        assert len(data) == descriptor["size"]
    assert [d["mediaType"] for d in descriptors] == [
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.config.v1+json",
        "application/vnd.oci.image.layer.v1.tar+gzip"]
    # Nothing in blobs/ that the manifest does not name.
    blobs = sorted(p.name for p in (image.layout / "blobs" / "sha256").iterdir())
    assert blobs == sorted(d["digest"].removeprefix("sha256:") for d in descriptors)
    # The config names the uncompressed layer.
    uncompressed = gzip.decompress(image.layer_path.read_bytes())
    assert image.config["rootfs"] == {"type": "layers", "diff_ids": [digest_of(uncompressed)]}


def test_name_is_the_charts_default_image(image):
    name = f"aixds:{CARGO['version']}"
    assert image.printed == f"{name} {image.manifest_descriptor['digest']} {image.archive}"
    assert image.manifest_descriptor["annotations"] == {
        "org.opencontainers.image.ref.name": name,
        "io.containerd.image.name": f"docker.io/library/{name}"}
    assert chart_image() == name


def test_config_runs_aixds_serve_as_nonroot_on_the_charts_ports(image):
    config = image.config["config"]
    assert (image.config["os"], image.config["architecture"]) == ("linux", "amd64")
    assert config["User"] == "65532:65532"
    assert config["Entrypoint"] == ["/aixds"]
    assert config["Cmd"] == ["serve"]
    values = yaml.safe_load(CHART_VALUES.read_text())
    security = values["podSecurityContext"]
    assert config["User"] == f"{security['runAsUser']}:{security['runAsGroup']}"
    assert set(config["ExposedPorts"]) == {f"{p}/tcp" for p in values["ports"].values()}
    labels = config["Labels"]
    assert labels["org.opencontainers.image.title"] == "aixds"
    assert labels["org.opencontainers.image.version"] == CARGO["version"]
    assert labels["org.opencontainers.image.licenses"] == CARGO["license"]
    assert labels["org.opencontainers.image.revision"] == git("rev-parse", "HEAD")
    archive = image_archive_module()
    remote = subprocess.run(["git", "-C", REPO, "remote", "get-url", "origin"],
                            capture_output=True, text=True).stdout.strip()
    source = archive.source_url(remote) if remote else None
    assert labels.get("org.opencontainers.image.source") == source
    epoch = int(os.environ.get("SOURCE_DATE_EPOCH") or git("log", "-1", "--format=%ct"))
    assert image.config["created"] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def dockerfile_final_stage():
    """The final stage's instructions as (INSTRUCTION, arguments), read apart from
    hack/image-archive.py's own parser."""
    text = (REPO / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()
             if line.strip() and not line.strip().startswith("#")]
    last_from = max(i for i, line in enumerate(lines) if line.upper().startswith("FROM "))
    return [tuple(line.split(None, 1)) for line in lines[last_from:]]


def test_dockerfile_says_what_the_config_says(image):
    config = image.config["config"]
    labels = config["Labels"]
    args = {"VERSION": labels["org.opencontainers.image.version"],
            "REVISION": labels["org.opencontainers.image.revision"],
            "SOURCE": labels.get("org.opencontainers.image.source", "")}
    stage = dockerfile_final_stage()
    assert stage[0] == ("FROM", "scratch")
    assert ("COPY", "--from=build /rootfs /") in stage
    declared = {a for i, a in stage if i == "ARG"}
    assert declared == set(args)
    dockerfile_labels = {}
    for instruction, arguments in stage:
        if instruction == "USER":
            assert arguments == config["User"]
        elif instruction == "EXPOSE":
            assert set(arguments.split()) == set(config["ExposedPorts"])
        elif instruction == "ENTRYPOINT":
            assert json.loads(arguments) == config["Entrypoint"]
        elif instruction == "CMD":
            assert json.loads(arguments) == config["Cmd"]
        elif instruction == "LABEL":
            for pair in shlex.split(arguments):
                key, value = pair.split("=", 1)
                for arg, arg_value in args.items():
                    value = value.replace(f"${{{arg}}}", arg_value)
                dockerfile_labels[key] = value
    assert {k: v for k, v in dockerfile_labels.items() if v} == labels
    assert {"USER", "EXPOSE", "ENTRYPOINT", "CMD", "LABEL"} <= {i for i, _ in stage}
    # The build stage fills /rootfs with the script hack/image.sh uses.
    assert "bash hack/image-rootfs.sh target/release/aixds /rootfs" in \
        (REPO / "Dockerfile").read_text().replace("\\\n", " ")


def linked_libraries(binary):
    libraries = set()
    for line in subprocess.run(["ldd", binary], capture_output=True, text=True,
                               check=True).stdout.splitlines():
        words = line.split()
        if len(words) >= 3 and words[1] == "=>":
            libraries.add(words[2].lstrip("/"))
        elif words and words[0].startswith("/"):
            libraries.add(words[0].lstrip("/"))
    return libraries


def test_root_filesystem_is_aixds_its_libraries_users_and_certificates(image):
    files = {name for name, m in image.entries.items() if not m.isdir()}
    libraries = linked_libraries(aixds_bin())
    assert {"lib/x86_64-linux-gnu/libc.so.6", LOADER} <= libraries
    assert files == {"aixds", "etc/passwd", "etc/group", "etc/ssl/certs/ca-certificates.crt",
                     *libraries}
    assert not any(m.issym() or m.islnk() for m in image.entries.values())
    assert not (image.rootfs / "bin").exists() and not (image.rootfs / "usr").exists()
    assert (image.rootfs / "aixds").read_bytes() == open(aixds_bin(), "rb").read()
    epoch = {m.mtime for m in image.entries.values()}
    assert len(epoch) == 1
    assert {(m.uid, m.gid, m.uname, m.gname) for m in image.entries.values()} == {(0, 0, "", "")}
    assert image.entries["tmp"].isdir() and image.entries["tmp"].mode == 0o1777
    assert "nonroot:x:65532:65532:" in (image.rootfs / "etc" / "passwd").read_text()
    assert "nonroot:x:65532:" in (image.rootfs / "etc" / "group").read_text()
    certificates = (image.rootfs / "etc/ssl/certs/ca-certificates.crt").read_text()
    assert certificates.count("BEGIN CERTIFICATE") > 10


def test_builds_the_same_archive_twice(image, tmp_path):
    again = tmp_path / "again.tar"
    printed = build(again)
    assert printed.split()[:2] == image.printed.split()[:2]
    assert again.read_bytes() == image.archive.read_bytes()


def chroot(image, *args):
    """aixds from the unpacked root filesystem alone, as user 65532."""
    return ["chroot", "--userspec=65532:65532", image.rootfs, "/aixds", *args]


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chroot needs root")


@needs_root
def test_aixds_runs_from_the_root_filesystem_alone(image, tmp_path):
    version = subprocess.run(chroot(image, "--version"), capture_output=True, text=True)
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == f"aixds {CARGO['version']}"
    # A manifest the nonroot user reads from the image's /tmp.
    manifests = image.rootfs / "tmp" / "validate"
    manifests.mkdir()
    (manifests / "quickstart.yaml").write_text((REPO / "examples" / "quickstart.yaml").read_text())
    report = subprocess.run(chroot(image, "validate", "/tmp/validate"), capture_output=True,
                            text=True)
    assert report.returncode == 0, report.stdout + report.stderr
    assert "AIGatewayRoute/default/quickstart (/tmp/validate/quickstart.yaml:" in report.stdout
    assert "Accepted=False" not in report.stdout


@needs_root
def test_aixds_from_the_image_serves_a_real_envoy(image, tmp_path, upstreams):
    upstream = upstreams("upstream-image")
    manifests = image.rootfs / "tmp" / "serve"
    manifests.mkdir()
    (manifests / "gateway.yaml").write_text(
        openai_backend("b", upstream) + route([("model-a", "b")]))
    xds, admin, listener, envoy_admin = free_port(), free_port(), free_port(), free_port()
    with open(tmp_path / "aixds.log", "w") as log:
        aixds = subprocess.Popen(
            chroot(image, "run", "/tmp/serve", "--no-envoy", "--insecure-grpc",
                   "--xds-address", f"127.0.0.1:{xds}", "--admin-address", f"127.0.0.1:{admin}",
                   "--picker-address", "127.0.0.1:0", "--listener-address", "127.0.0.1",
                   "--default-port", str(listener), "--drain-delay", "0"),
            stdout=log, stderr=subprocess.STDOUT)
    bootstrap = tmp_path / "bootstrap.yaml"
    bootstrap.write_text(subprocess.run(
        [aixds_bin(), "bootstrap", "--xds-address", f"127.0.0.1:{xds}",
         "--envoy-admin-port", str(envoy_admin), "--node-id", "image"],
        capture_output=True, text=True, check=True).stdout)
    with open(tmp_path / "envoy.log", "w") as log:
        envoy = subprocess.Popen([envoy_bin(), "-c", bootstrap, "--disable-hot-restart"],
                                 stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert aixds.poll() is None, (tmp_path / "aixds.log").read_text()
            assert envoy.poll() is None, (tmp_path / "envoy.log").read_text()
            assert time.monotonic() < deadline, "model-a not served within 60 s"
            try:
                response = requests.post(
                    f"http://127.0.0.1:{listener}/v1/chat/completions",
                    headers={"x-ai-eg-model": "model-a"},
                    json={"model": "model-a", "messages": [{"role": "user", "content": "hi"}]},
                    timeout=5)
                if response.status_code != 404:
                    break
            except requests.ConnectionError:
                pass
            time.sleep(0.05)
        assert response.status_code == 200, response.text
        assert response.json()["choices"][0]["message"]["content"] == "Hello from upstream-image"
    finally:
        envoy.terminate()
        aixds.terminate()
        envoy.wait(timeout=15)
        aixds.wait(timeout=40)


def image_archive_module():
    spec = importlib.util.spec_from_file_location("image_archive",
                                                  REPO / "hack" / "image-archive.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("remote,source", [
    ("https://github.com/example/aixds.git", "https://github.com/example/aixds"),
    ("https://ci-bot:s3cret@git.example.com:8443/team/aixds.git",
     "https://git.example.com:8443/team/aixds"),
    ("git@github.com:example/aixds.git", "https://github.com/example/aixds"),
    ("ssh://git@git.example.com:2222/team/aixds", "https://git.example.com/team/aixds"),
    ("/srv/git/aixds.git", None),
    ("file:///srv/git/aixds.git", None),
])
def test_source_label_never_carries_credentials(remote, source):
    assert image_archive_module().source_url(remote) == source


@pytest.mark.parametrize("final_stage,error", [
    ("FROM debian:bookworm\nCOPY --from=build /rootfs /\n", "FROM scratch"),
    ("FROM scratch\nCOPY --from=build /rootfs /\nRUN true\n", "RUN in the final stage"),
    ("FROM scratch\nCOPY . /\n", "only COPY"),
    ("FROM scratch\nCOPY --from=build /rootfs /\nCMD serve\n", "exec form"),
    ("FROM scratch\nCOPY --from=build /rootfs /\nLABEL a=${NOPE}\n", "$NOPE"),
    ("FROM scratch\nCOPY --from=build /rootfs /\nARG OTHER\n", "ARG OTHER"),
])
def test_dockerfile_the_script_cannot_build_is_refused(final_stage, error):
    archive = image_archive_module()
    with pytest.raises(archive.DockerfileError, match=error.replace("$", r"\$")):
        archive.image_config("FROM rust AS build\n" + final_stage,
                             {"VERSION": "1", "REVISION": "r", "SOURCE": ""})
