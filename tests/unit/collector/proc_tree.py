"""A fake host proc directory under tmp_path, written in the kernel's own file formats (stat,
status, cmdline, cgroup, cwd/exe symlinks, fd/ socket symlinks, ns/net, net/tcp and tcp6), as the
procfs observer's input data."""

from __future__ import annotations

import os
import shutil
import socket
import struct
from pathlib import Path

BOOT_ID = "4f2c5e0a-9d1b-4c3e-8f7a-6b5d4c3b2a19"
BTIME = 1_790_000_000
NETNS = "net:[4026532411]"
TCP_HEADER = ("  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n")
TCP6_HEADER = ("  sl  local_address                         remote_address                        st tx_queue rx_queue "
               "tr tm->when retrnsmt   uid  timeout inode\n")


def kube_cgroup(pod_uid: str, container: str = "3f9a" * 16) -> str:
    """A cgroup v2 line as the systemd cgroup driver writes it (pod UID dashes → underscores)."""
    return (f"0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{pod_uid.replace('-', '_')}.slice/"
            f"cri-containerd-{container}.scope\n")


def hex4(address: str) -> str:
    """An IPv4 address as /proc/net/tcp prints it (the 32-bit word in little-endian host order)."""
    return "%08X" % struct.unpack("<I", socket.inet_aton(address))[0]


def hex6(address: str) -> str:
    raw = socket.inet_pton(socket.AF_INET6, address)
    return "".join("%08X" % struct.unpack("<I", raw[i:i + 4])[0] for i in range(0, 16, 4))


def tcp_row(index: int, local: str, remote: str, state: str, inode: int, v6: bool = False) -> str:
    (lip, lport), (rip, rport) = (a.rsplit(":", 1) for a in (local, remote))
    enc = hex6 if v6 else hex4
    return (f"  {index:>3}: {enc(lip)}:{int(lport):04X} {enc(rip)}:{int(rport):04X} {state} 00000000:00000000 "
            f"00:00000000 00000000  1000        0 {inode} 1 0000000000000000 20 4 30 10 -1\n")


class ProcTree:
    def __init__(self, root: Path):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        (root / "stat").write_text(f"cpu  1 2 3 4 5 6 7 0 0 0\nbtime {BTIME}\nprocesses 4242\n")
        (root / "sys/kernel/random").mkdir(parents=True)
        (root / "sys/kernel/random/boot_id").write_text(BOOT_ID + "\n")

    def add(self, pid: int, comm: str, argv: list[str], *, ppid: int = 1, start: int = 1000, uid: int = 1000,
            cgroup: str = "0::/system.slice/cron.service\n", exe: str | None = None, cwd: str = "/",
            state: str = "S", exit_code: int = 0, netns: str = NETNS) -> Path:
        d = self.root / str(pid)
        if d.exists():
            shutil.rmtree(d)
        (d / "fd").mkdir(parents=True)
        (d / "ns").mkdir()
        (d / "net").mkdir()
        self.set_stat(pid, comm, state=state, ppid=ppid, start=start, exit_code=exit_code)
        (d / "status").write_text(f"Name:\t{comm}\nUmask:\t0022\nState:\t{state} (sleeping)\nTgid:\t{pid}\nNgid:\t0\n"
                                  f"Pid:\t{pid}\nPPid:\t{ppid}\nTracerPid:\t0\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\n"
                                  f"Gid:\t{uid}\t{uid}\t{uid}\t{uid}\nFDSize:\t64\n")
        (d / "cmdline").write_bytes(b"".join(a.encode() + b"\0" for a in argv))
        (d / "cgroup").write_text(cgroup)
        os.symlink(cwd, d / "cwd")
        os.symlink(exe or f"/usr/bin/{comm}", d / "exe")
        os.symlink(netns, d / "ns" / "net")
        (d / "fd" / "0").symlink_to("/dev/null")
        (d / "net" / "tcp").write_text(TCP_HEADER)
        (d / "net" / "tcp6").write_text(TCP6_HEADER)
        return d

    def set_stat(self, pid: int, comm: str, *, state: str = "S", ppid: int = 1, start: int = 1000,
                 exit_code: int = 0) -> None:
        # fields 4..52 of proc(5): ppid pgrp session tty_nr tpgid flags minflt cminflt majflt cmajflt utime
        # stime cutime cstime priority nice num_threads itrealvalue starttime vsize rss ... exit_code
        fields = [ppid, ppid, ppid, 0, -1, 4194560, 120, 0, 0, 0, 3, 1, 0, 0, 20, 0, 1, 0, start, 12_000_000, 900]
        fields += [0] * (49 - len(fields) - 1) + [exit_code]
        (self.root / str(pid) / "stat").write_text(f"{pid} ({comm}) {state} " + " ".join(map(str, fields)) + "\n")

    def exec(self, pid: int, comm: str, argv: list[str], exe: str | None = None) -> None:
        d = self.root / str(pid)
        stat = (d / "stat").read_text()
        rest = stat[stat.rindex(")") + 2:].split()
        self.set_stat(pid, comm, state=rest[0], ppid=int(rest[1]), start=int(rest[19]))
        (d / "cmdline").write_bytes(b"".join(a.encode() + b"\0" for a in argv))
        (d / "exe").unlink()
        os.symlink(exe or f"/usr/bin/{comm}", d / "exe")

    def socket(self, pid: int, fd: int, inode: int) -> None:
        (self.root / str(pid) / "fd" / str(fd)).symlink_to(f"socket:[{inode}]")

    def tcp(self, pid: int, rows: list[str], v6_rows: list[str] = ()) -> None:
        d = self.root / str(pid) / "net"
        (d / "tcp").write_text(TCP_HEADER + "".join(rows))
        (d / "tcp6").write_text(TCP6_HEADER + "".join(v6_rows))

    def remove(self, pid: int) -> None:
        shutil.rmtree(self.root / str(pid))
