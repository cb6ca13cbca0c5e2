"""Shared pieces of the daemon process tests: files rewritten with a
chosen modification time, operators' logging files, reading stack dumps."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path


def rewrite(path: Path, text: str, keep_mtime: bool = False) -> None:
    """Rewrite a file in place: with a new modification time (later than
    the old one even within the clock's granularity), or the old one."""
    before = path.stat()
    path.write_text(text)
    if keep_mtime:
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    else:
        mtime = max(time.time_ns(), before.st_mtime_ns + 1_000_000)
        os.utime(path, ns=(mtime, mtime))


def logging_file(tmp_path: Path, kind: str, logfile: Path, marker: str = "CUSTOM") -> Path:
    """A minimal logging configuration that writes to ``logfile``, in the
    way most operators write one: it does not mention
    disable_existing_loggers."""
    if kind == "ini":
        path = tmp_path / "logging.conf"
        path.write_text(f"""\
[loggers]
keys=root

[handlers]
keys=file

[formatters]
keys=simple

[logger_root]
level=INFO
handlers=file

[handler_file]
class=FileHandler
args=({str(logfile)!r},)
formatter=simple

[formatter_simple]
format={marker} %(name)s %(message)s
""")
        return path
    conf = {
        "version": 1,
        "formatters": {"simple": {"format": f"{marker} %(name)s %(message)s"}},
        "handlers": {"file": {"class": "logging.FileHandler", "filename": str(logfile),
                              "formatter": "simple"}},
        "root": {"level": "INFO", "handlers": ["file"]},
    }
    if kind == "json":
        path = tmp_path / "logging.json"
        path.write_text(json.dumps(conf))
        return path
    path = tmp_path / "logging.yaml"
    path.write_text(f"""\
version: 1
formatters:
  simple:
    format: '{marker} %(name)s %(message)s'
handlers:
  file:
    class: logging.FileHandler
    filename: {logfile}
    formatter: simple
root:
  level: INFO
  handlers: [file]
""")
    return path


def read(path: Path) -> str:
    return path.read_text() if path.exists() else ""


def stack_dump(text: str) -> dict[str, str] | None:
    """The last complete stack dump in a log: {thread name: its stack}
    (whether or not the formatter repeats the line prefix); None until
    every thread the dump announces is in the log."""
    starts = list(re.finditer(r"Thread stack dump \((\d+) threads\):", text))
    if not starts:
        return None
    expected = int(starts[-1].group(1))
    sections: list[tuple[str, list[str]]] = []
    for line in text[starts[-1].end():].splitlines():
        header = re.search(r"Thread: (.+) \(\d+, daemon: [^)]*\)$", line)
        if header:
            sections.append((header.group(1), []))
        elif sections:
            sections[-1][1].append(line)
    if len(sections) < expected:
        return None
    return {name: "\n".join(lines) for name, lines in sections[:expected]}


def stop_daemon(proc: subprocess.Popen, sig: int = signal.SIGINT, timeout: float = 30) -> None:
    """Stop a daemon the test started, in order (``sig``); killed if it
    has not exited within ``timeout``."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
