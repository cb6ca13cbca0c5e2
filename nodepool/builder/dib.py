"""Running diskimage-builder (or the configured ``dib-cmd``) for one build.

The command line and environment are upstream's, so element sets written
for upstream Nodepool behave the same.  The process runs in its own
process group: a timeout, a stop or a lost ZooKeeper session kills DIB and
everything it started (sudo, chroot tools, qemu-img), not just the
top-level script.  Its output is streamed to the build log as it comes, so
``tail -f`` on the log shows a build's progress.
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import IO, Any

from nodepool.exceptions import BuilderError

log = logging.getLogger("nodepool.builder.dib")

# qcow2 images readable by old qemu releases, as upstream asks for.
QEMU_IMG_OPTIONS = ["--qemu-img-options", "compat=0.10"]
# How long DIB gets to clean up (unmount, detach loop devices) after
# SIGTERM before the whole process group is killed.
KILL_GRACE = 10.0


def dib_command(diskimage: Any, formats: list[str], output_base: str) -> list[str]:
    """``<dib-cmd> -x -t <formats> --checksum --no-tmpfs [--qemu-img-options
    compat=0.10] -o <output base> <elements...>`` as an argument list."""
    cmd = shlex.split(diskimage.dib_cmd)
    cmd += ["-x", "-t", ",".join(formats), "--checksum", "--no-tmpfs"]
    if "qcow2" in formats:
        cmd += QEMU_IMG_OPTIONS
    cmd += ["-o", output_base]
    # Upstream joins the elements with spaces and splits the result like a
    # shell would, so one list item may name several elements.
    for element in diskimage.elements:
        cmd += shlex.split(element)
    return cmd


def dib_environment(diskimage: Any, output_base: str, elements_dir: str | None,
                    base_env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The builder's environment plus what DIB needs to know about the
    image; the diskimage's ``env-vars`` win over everything else."""
    env = dict(os.environ if base_env is None else base_env)
    if diskimage.release is not None:
        env["DIB_RELEASE"] = str(diskimage.release)
    env["DIB_IMAGE_NAME"] = diskimage.name
    env["DIB_IMAGE_FILENAME"] = output_base
    if elements_dir:
        env["ELEMENTS_PATH"] = elements_dir
    env.update({k: str(v) for k, v in diskimage.env_vars.items()})
    return env


@dataclass
class DibResult:
    """How a DIB run ended."""

    returncode: int | None
    duration: float
    timed_out: bool = False
    cancelled: bool = False

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out and not self.cancelled


def run_dib(cmd: list[str], env: Mapping[str, str], log_path: str, timeout: float,
            cancel: threading.Event | None = None) -> DibResult:
    """Run ``cmd``, streaming its output to ``log_path``; kill its process
    group after ``timeout`` seconds or when ``cancel`` is set.

    The log ends with ``Exit code: N`` (a negative N is the signal that
    ended the process).  Raises BuilderError if the command cannot start.
    """
    cancel = cancel or threading.Event()
    start = time.monotonic()
    with open(log_path, "wb") as logf:
        logf.write(f"Running: {shlex.join(cmd)}\n".encode())
        logf.flush()
        try:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=dict(env),
                                    start_new_session=True)
        except OSError as e:
            logf.write(f"Could not start the build command: {e}\nExit code: 127\n".encode())
            raise BuilderError(
                f"cannot run {cmd[0]!r}: {e.strerror}; check the diskimage's dib-cmd "
                "and that diskimage-builder is installed where the builder runs") from e
        assert proc.stdout is not None
        reader = threading.Thread(target=_copy_output, args=(proc.stdout, logf),
                                  name=f"DibOutput.{proc.pid}", daemon=True)
        reader.start()
        timed_out = cancelled = False
        while True:
            try:
                proc.wait(timeout=0.2)
                break
            except subprocess.TimeoutExpired:
                pass
            if time.monotonic() - start > timeout:
                timed_out = True
            elif cancel.is_set():
                cancelled = True
            else:
                continue
            _kill_group(proc)
            break
        if timed_out or cancelled:
            # Anything the build left behind in its group goes too.
            _signal_group(proc.pid, signal.SIGKILL)
        reader.join(30)
        rc = proc.returncode
        if timed_out:
            logf.write(f"Build timed out after {int(timeout)} seconds; "
                       "killed its process group\n".encode())
        elif cancelled:
            logf.write(b"Build cancelled (builder stopping or ZooKeeper session lost); "
                       b"killed its process group\n")
        logf.write(f"Exit code: {rc}\n".encode())
    return DibResult(rc, time.monotonic() - start, timed_out, cancelled)


def _copy_output(stream: IO[bytes], logf: IO[bytes]) -> None:
    try:
        for chunk in iter(lambda: stream.read1(65536), b""):  # type: ignore[attr-defined]
            logf.write(chunk)
            logf.flush()
    except (OSError, ValueError):
        log.exception("Error copying build output to its log")
    finally:
        stream.close()


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGTERM the group so DIB can unmount its chroot, then SIGKILL."""
    _signal_group(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=KILL_GRACE)
    except subprocess.TimeoutExpired:
        _signal_group(proc.pid, signal.SIGKILL)
        proc.wait()
