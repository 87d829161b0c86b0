"""``stream-guard systemd-unit``: a systemd template unit that runs this installation, one instance per stream."""
from __future__ import annotations

import shlex
import stat
import sys
from pathlib import Path
from typing import TextIO

DEFAULT_ARGS_DIR = Path("/etc/stream-guard")

UNIT_TEMPLATE = """\
# stream_guard as a systemd service, one instance per camera or stream (written by `stream-guard systemd-unit`).
# Needs systemd 248 or newer (%d, the credentials folder).
#   {args_dir}/NAME.args   the options of one run, as for `stream-guard @FILE`, e.g.
#                          watch rtsp://user:pass@camera.local/stream --clips clips --serve 8080
#   systemctl daemon-reload && systemctl enable --now stream-guard@NAME
#   systemctl status stream-guard@NAME    (its status line: fps, faces, reconnect attempts)
#   journalctl -u stream-guard@NAME -f    (its log)
[Unit]
Description=stream_guard deepfake monitor: %i
Wants=network-online.target
After=network-online.target

[Service]
Type=notify
ExecStart={exec_start} @%d/args
# systemd reads the options file and hands the service a private copy, so the file can stay
# readable by root only (chmod 600): it may hold a camera's password.
LoadCredential=args:{args_dir}/%i.args
# Relative paths in the options file (recordings, clips, snapshots) land in /var/lib/stream-guard/NAME.
StateDirectory=stream-guard/%i
WorkingDirectory=%S/stream-guard/%i
# The run pings the watchdog only while frames or reconnect attempts come through, so a hung run
# (a reader stuck in the network, a blocked output) is killed and restarted; a camera that is down is not.
WatchdogSec=30
Restart=on-failure
RestartSec=10
# 130: stopped by SIGTERM with every output finalised. 2 and 4: the options or the model are wrong,
# and restarting cannot fix that. A source that cannot be opened (3) is retried every RestartSec.
SuccessExitStatus=130
RestartPreventExitStatus=2 4
TimeoutStopSec=60
DynamicUser=yes
# webcams (/dev/video*) and a v4l2loopback virtual camera; devices stay open to it for GPUs too
SupplementaryGroups=video
UMask=0027
CapabilityBoundingSet=
AmbientCapabilities=
NoNewPrivileges=yes
PrivateTmp=yes
PrivateMounts=yes
ProtectProc=invisible
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictNamespaces=yes
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK
SystemCallArchitectures=native
# systemd's set for ordinary services; a call outside it fails with EPERM rather than killing the run
SystemCallFilter=@system-service
SystemCallErrorNumber=EPERM
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes

[Install]
WantedBy=multi-user.target
"""


def unit_text(python: Path, args_dir: Path = DEFAULT_ARGS_DIR) -> str:
    """The template unit (``stream-guard@.service``) that runs ``python -m stream_guard``."""
    exec_start = f"{_literal(shlex.quote(str(python)))} -m stream_guard"
    # the template puts a / after it: the root folder is "" there, not "/" (LoadCredential=args://%i.args)
    return UNIT_TEMPLATE.format(exec_start=exec_start, args_dir=_literal(str(args_dir)).rstrip("/"))


def _literal(text: str) -> str:
    """``text`` with systemd's % specifiers and $ variables kept literal (doubled)."""
    return text.replace("%", "%%").replace("$", "$$")


def unreadable_by_others(path: Path) -> Path | None:
    """The first folder above ``path`` that other users cannot enter, if any: the service runs as
    its own user (``DynamicUser=yes``), which must be able to read the installation."""
    folders = [*reversed(Path(path).absolute().parents), *reversed(Path(path).resolve().parents)]
    for folder in dict.fromkeys(folders):  # the path as given (a venv), then where its link points
        try:
            mode = folder.stat().st_mode
        except OSError:
            return folder
        if not mode & stat.S_IXOTH:
            return folder
    return None


def write_unit(out: TextIO, args_dir: Path = DEFAULT_ARGS_DIR, warn: TextIO = sys.stderr,
               python: Path = Path(sys.executable)) -> None:
    """Write the unit for ``python``: by default the one running this command (its virtual environment, if any)."""
    out.write(unit_text(python, args_dir))
    blocked = unreadable_by_others(python)
    if blocked is not None:
        target = python.resolve()
        runs = python if blocked in python.absolute().parents else f"{python} (a link to {target})"
        print(f"stream-guard: warning: {blocked} is closed to other users, so the service's own user cannot "
              f"run {runs}: install stream_guard and its Python somewhere readable, such as /opt/stream-guard",
              file=warn)
