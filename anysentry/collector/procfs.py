"""Reading one process's entries under a proc directory (the host's `/proc`, or a copy in tests).

Every reader tolerates the process vanishing mid-read and files it may not read: it answers None
(or an empty value) instead of raising, because on a busy node both happen every second."""

from __future__ import annotations

import ipaddress
import os
import re
import sys
from dataclasses import dataclass

CMDLINE_LIMIT = 32 * 1024  # bytes of argv kept; longer command lines are marked argv_truncated
TCP_ESTABLISHED = "01"
_POD_UID = re.compile(r"pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})")
_SOCKET = re.compile(r"socket:\[(\d+)\]")


@dataclass(frozen=True, slots=True)
class Stat:
    """The fields of /proc/<pid>/stat the observer uses."""

    comm: str
    state: str
    ppid: int
    start_ticks: int  # field 22: start time after boot, in clock ticks; with the pid, the process's identity
    exit_code: int | None  # field 52: the wait status, readable only while a zombie (Linux ≥ 3.5)
    kernel_thread: bool = False  # field 9 (flags) has PF_KTHREAD


@dataclass(frozen=True, slots=True)
class Connection:
    """Where an ESTABLISHED TCP socket leads: a peer off the host."""

    peer: str
    port: int


def _read_bytes(path: str, limit: int = 65536) -> bytes | None:
    try:
        with open(path, "rb") as handle:
            return handle.read(limit)
    except (OSError, ValueError):
        return None


def _read_text(path: str, limit: int = 65536) -> str | None:
    data = _read_bytes(path, limit)
    return None if data is None else data.decode("utf-8", "replace")


def readlink(path: str) -> str | None:
    try:
        return os.readlink(path)
    except OSError:
        return None


def list_pids(proc: str) -> list[int]:
    try:
        return sorted(int(name) for name in os.listdir(proc) if name.isdigit())
    except OSError:
        return []


_PF_KTHREAD = 0x00200000


def parse_stat(text: str) -> Stat | None:
    """`pid (comm) state ppid ...`; comm may hold spaces and parentheses, so split at the last `)`."""
    try:
        open_paren, close_paren = text.index("("), text.rindex(")")
        int(text[:open_paren])  # the pid: a line that does not start with one is not a stat line
        rest = text[close_paren + 2:].split()
        exit_code = int(rest[49]) if len(rest) > 49 else None
        return Stat(text[open_paren + 1:close_paren], rest[0], int(rest[1]), int(rest[19]), exit_code,
                    bool(int(rest[6]) & _PF_KTHREAD))
    except (ValueError, IndexError):
        return None


def read_stat(proc: str, pid: int) -> Stat | None:
    text = _read_text(f"{proc}/{pid}/stat", 4096)
    return parse_stat(text) if text else None


def read_uid(proc: str, pid: int) -> int | None:
    """The real uid from /proc/<pid>/status (`Uid:\treal\teffective\tsaved\tfs`)."""
    text = _read_text(f"{proc}/{pid}/status", 16384) or ""
    for line in text.splitlines():
        if line.startswith("Uid:"):
            try:
                return int(line.split()[1])
            except (IndexError, ValueError):
                return None
    return None


def read_cmdline(proc: str, pid: int) -> tuple[list[str], bool]:
    """(argv, truncated). Empty for kernel threads, zombies, and a process inside execve (its new
    arguments are not set up yet)."""
    data = _read_bytes(f"{proc}/{pid}/cmdline", CMDLINE_LIMIT + 1)
    if not data:
        return [], False
    truncated = len(data) > CMDLINE_LIMIT
    parts = data[:CMDLINE_LIMIT].split(b"\0")
    if parts and parts[-1] == b"":
        parts.pop()
    return [part.decode("utf-8", "replace") for part in parts], truncated


def read_cgroup(proc: str, pid: int) -> str:
    """The process's cgroup path: the unified (v2) one, else the first non-root v1 hierarchy's."""
    text = _read_text(f"{proc}/{pid}/cgroup", 16384) or ""
    fallback = ""
    for line in text.splitlines():
        hierarchy, _, rest = line.partition(":")
        _, _, path = rest.partition(":")
        if hierarchy == "0" and path not in ("", "/"):
            return path
        if not fallback and path not in ("", "/"):
            fallback = path
    return fallback


def pod_uid(cgroup: str) -> str | None:
    """The Kubernetes pod UID in a kubepods cgroup path (systemd driver writes `_` for `-`)."""
    match = _POD_UID.search(cgroup)
    return match.group(1).replace("_", "-") if match else None


def socket_inodes(proc: str, pid: int) -> set[int]:
    fd_dir = f"{proc}/{pid}/fd"
    try:
        names = os.listdir(fd_dir)
    except OSError:
        return set()
    inodes = set()
    for name in names:
        match = _SOCKET.fullmatch(readlink(f"{fd_dir}/{name}") or "")
        if match:
            inodes.add(int(match.group(1)))
    return inodes


def _address(hex_address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    raw = bytes.fromhex(hex_address)
    if sys.byteorder == "little":  # the kernel prints each 32-bit word in host byte order
        raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    address = ipaddress.ip_address(raw)
    mapped = getattr(address, "ipv4_mapped", None)
    return mapped or address


def parse_tcp_table(text: str) -> dict[int, str]:
    """inode → `remote_hex:port_hex` of the ESTABLISHED sockets of a /proc/net/tcp or tcp6 table
    (addresses are decoded later, and only for sockets not seen before: tables can be long)."""
    out = {}
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 10 and fields[3] == TCP_ESTABLISHED and fields[9].isdigit() and fields[9] != "0":
            out[int(fields[9])] = fields[2]
    return out


def peer(remote: str) -> Connection | None:
    """The connection to `remote` (`hex:port` as the table prints it); None for a peer on this host."""
    try:
        address_hex, _, port_hex = remote.partition(":")
        address, port = _address(address_hex), int(port_hex, 16)
    except ValueError:
        return None
    if address.is_loopback or address.is_unspecified:
        return None
    return Connection(str(address), port)


def read_established(proc: str, pid: int) -> dict[int, str] | None:
    """The ESTABLISHED TCP sockets of the network namespace `pid` lives in (see parse_tcp_table);
    None when neither table could be read (the process went away)."""
    tables = [_read_text(f"{proc}/{pid}/net/{name}", 1 << 24) for name in ("tcp", "tcp6")]
    if all(table is None for table in tables):
        return None
    return {inode: remote for table in tables if table for inode, remote in parse_tcp_table(table).items()}


def net_namespace(proc: str, pid: int) -> str:
    """`net:[inode]` of the process, or a per-process key where the link is unreadable."""
    return readlink(f"{proc}/{pid}/ns/net") or f"pid:{pid}"


def boot_id(proc: str) -> str | None:
    return (_read_text(f"{proc}/sys/kernel/random/boot_id", 128) or "").strip() or None


def boot_time(proc: str) -> int | None:
    """Epoch seconds the host booted (`btime` in /proc/stat)."""
    for line in (_read_text(f"{proc}/stat", 1 << 20) or "").splitlines():
        if line.startswith("btime "):
            try:
                return int(line.split()[1])
            except (IndexError, ValueError):
                return None
    return None
