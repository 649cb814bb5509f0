"""Build the `orchestry-testapp` image locally: Debian's static busybox on `FROM scratch`, no registry needed.

`ensure_image()` assembles the build context in a temporary folder (Dockerfile, and a rootfs/ holding busybox, a
symlink per applet, /tmp and the two shell scripts), hashes it, and builds only when the image under the tag does
not already carry that hash in its `org.orchestry.testapp.hash` label. A file lock keeps parallel test workers
from building at the same time. Run `python testapp/build.py` to build (or reuse) it by hand.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors

TAG = "orchestry-testapp:latest"
HASH_LABEL = "org.orchestry.testapp.hash"
HERE = Path(__file__).resolve().parent
BUSYBOX_CANDIDATES = (Path("/bin/busybox"), Path("/usr/bin/busybox"))
LOCK_PATH = Path(tempfile.gettempdir()) / "orchestry-testapp-build.lock"


class ImageBuildError(RuntimeError):
    """The test image cannot be built (no static busybox, or the build failed)."""


def is_static(path: Path) -> bool:
    """True when the ELF file at `path` has no program interpreter, i.e. is statically linked."""
    data = path.read_bytes()
    if data[:4] != b"\x7fELF":
        return False
    file_out = shutil.which("file")
    if file_out:
        out = subprocess.run([file_out, "-L", str(path)], capture_output=True, text=True, check=False).stdout
        if "statically linked" in out or "static-pie linked" in out:
            return True
        if "dynamically linked" in out:
            return False
    return b"/lib64/ld-linux" not in data and b"/lib/ld-linux" not in data and b"/lib/ld-musl" not in data


def find_busybox() -> Path:
    """The static busybox binary of the host (Debian's busybox-static puts it at /bin/busybox)."""
    for path in BUSYBOX_CANDIDATES:
        if path.is_file() and is_static(path.resolve()):
            return path.resolve()
    raise ImageBuildError(
        "no static busybox found (looked for a statically linked /bin/busybox or /usr/bin/busybox); "
        "install one with: apt-get install -y busybox-static"
    )


def applets(busybox: Path) -> list[str]:
    out = subprocess.run([str(busybox), "--list"], capture_output=True, text=True, check=True, timeout=30).stdout
    return sorted({name for name in out.split() if name and "/" not in name and name != "busybox"})


def assemble_context(dest: Path, busybox: Path) -> None:
    """Write the build context into the empty folder `dest`."""
    shutil.copyfile(HERE / "Dockerfile", dest / "Dockerfile")
    root = dest / "rootfs"
    for folder in ("bin", "app", "tmp", "etc"):
        (root / folder).mkdir(parents=True)
    (root / "tmp").chmod(0o1777)
    shutil.copyfile(busybox, root / "bin" / "busybox")
    (root / "bin" / "busybox").chmod(0o755)
    for name in applets(busybox):
        (root / "bin" / name).symlink_to("busybox")
    for script in ("entrypoint.sh", "handler.sh"):
        shutil.copyfile(HERE / script, root / "app" / script)
        (root / "app" / script).chmod(0o755)
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")
    (root / "etc" / "group").write_text("root:x:0:\nnogroup:x:65534:\n")


def context_hash(context: Path) -> str:
    """sha256 over every entry of the build context: its path, type, permission bits and content."""
    digest = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(context):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            path = Path(dirpath) / name
            info = path.lstat()
            rel = path.relative_to(context).as_posix()
            if stat.S_ISLNK(info.st_mode):
                entry = f"L {rel} -> {os.readlink(path)}".encode()
            elif stat.S_ISDIR(info.st_mode):
                entry = f"D {rel} {stat.S_IMODE(info.st_mode):o}".encode()
            else:
                content = hashlib.sha256(path.read_bytes()).hexdigest()
                entry = f"F {rel} {stat.S_IMODE(info.st_mode):o} {content}".encode()
            digest.update(entry + b"\n")
    return digest.hexdigest()


@contextlib.contextmanager
def build_lock() -> Iterator[None]:
    with open(LOCK_PATH, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _existing(client: docker.DockerClient, tag: str) -> docker.models.images.Image | None:
    try:
        return client.images.get(tag)
    except docker.errors.ImageNotFound:
        return None


def ensure_image(tag: str = TAG, *, verbose: bool = False) -> str:
    """Build the test image under `tag` unless an image with the same context hash is there; return its id.
    The image is also tagged `<repository>:<first 12 hex digits of its hash>` (see `pinned_image`)."""
    busybox = find_busybox()
    client = docker.from_env()
    try:
        with tempfile.TemporaryDirectory(prefix="orchestry-testapp-") as tmp:
            context = Path(tmp)
            assemble_context(context, busybox)
            wanted = context_hash(context)
            with build_lock():
                old = _existing(client, tag)
                if old is not None and (old.labels or {}).get(HASH_LABEL) == wanted:
                    old.tag(tag.rsplit(":", 1)[0], wanted[:12])
                    if verbose:
                        print(f"{tag}: reused {old.id} (hash {wanted[:12]})")
                    return str(old.id)
                started = time.monotonic()
                try:
                    image, _logs = client.images.build(
                        path=str(context),
                        tag=tag,
                        labels={HASH_LABEL: wanted},
                        pull=False,
                        rm=True,
                        forcerm=True,
                        nocache=False,
                    )
                except docker.errors.BuildError as exc:
                    log = "".join(str(chunk.get("stream", chunk.get("error", ""))) for chunk in exc.build_log)
                    raise ImageBuildError(f"building {tag} failed: {exc.msg}\n{log[-3000:]}") from exc
                image.tag(tag.rsplit(":", 1)[0], wanted[:12])
                if old is not None and old.id != image.id:
                    with contextlib.suppress(docker.errors.APIError):
                        client.images.remove(old.id)  # the superseded build, unless a container still uses it
                if verbose:
                    print(f"{tag}: built {image.id} in {time.monotonic() - started:.1f}s (hash {wanted[:12]})")
                return str(image.id)
    finally:
        client.close()


def pinned_image() -> str:
    """The test image of this checkout by its content tag (`orchestry-testapp:<hash>`), built if needed: a test
    that needs this checkout's handler (e.g. /ws, /events) names it so, because `latest` is shared by every
    checkout on the machine and a parallel build of another one may retag it between two of its steps."""
    image_id = ensure_image()
    client = docker.from_env()
    try:
        image = client.images.get(image_id)
        return f"{TAG.rsplit(':', 1)[0]}:{(image.labels or {})[HASH_LABEL][:12]}"
    finally:
        client.close()


def main() -> int:
    try:
        ensure_image(sys.argv[1] if len(sys.argv) > 1 else TAG, verbose=True)
    except (ImageBuildError, docker.errors.DockerException) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
