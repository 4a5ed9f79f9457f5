"""The procfs observer: polls the host's proc directory and reports what agent processes do as
a3s-observer NDJSON lines (SPEC §6) — `ToolExec` when a process of interest starts or execs,
`ProcessExit` when it ends, `Egress` for each new ESTABLISHED TCP connection it holds to a peer off
the host. Polling sees what lives at least one interval; eBPF would see everything, but needs far
more privilege than the two capabilities the DaemonSet grants.

Processes of interest: those in a Kubernetes pod cgroup (path contains `kubepods`) whose name
matches the agent pattern — checked against the script's base name (`node /usr/bin/claude` →
`claude`), then the program's, then `comm` — and every descendant of such a process (the tools an
agent runs are the point). `all_processes` widens this to every process with a command line (not
kernel threads). identity.agent is the matched name (inherited by descendants), identity.task the
pid, identity.session the pod UID from the cgroup path (the api turns pod UIDs into workloads,
SPEC §7.6). A fork that has not exec'd yet (same program and arguments as its parent) is not an
exec and is not reported until it execs."""

from __future__ import annotations

import hashlib
import os
import re
import time
from dataclasses import dataclass, field

import orjson

from anysentry.collector import procfs

# common agent runtimes and agent CLIs; override with --agent-pattern / ANYSENTRY_AGENT_PATTERN
DEFAULT_AGENT_PATTERN = (r"^(python[0-9.]*|node|nodejs|deno|bun|claude|claude-code|codex|aider|goose|gemini|"
                         r"opencode|openhands|cursor-agent|copilot|a3s|a3s-code)$")
_MAX_ANCESTRY = 64
_UNREAD_POLLS = 3  # a process whose argv stays unreadable this many polls is left alone


@dataclass(frozen=True)
class ObserverSettings:
    proc: str = "/proc"
    agent_pattern: str = DEFAULT_AGENT_PATTERN
    all_processes: bool = False
    exclude_pids: frozenset[int] = frozenset()  # the collector itself
    host_id: str = ""  # the node name, put on every line's process


@dataclass(frozen=True, slots=True)
class Observation:
    """One observer line to forward; `key` names the logical event stably (pid, start time, what)."""

    kind: str
    line: str
    at: int  # epoch ms the event happened (as near as polling can tell)
    key: str


@dataclass(slots=True)
class _Proc:
    pid: int
    start: int
    comm: str
    ppid: int
    in_scope: bool
    cgroup: str
    exe: str | None = None
    argv: list[str] | None = None
    agent: str | None = None  # set while the process is of interest
    lineage: bool = False  # the agent name came from the pattern (here or above), so children inherit it
    reported: bool = False  # a ToolExec went out, so the exit will too
    unread: int = 0  # polls that found no argv
    exited: bool = False
    netns: str = ""
    identity: dict = field(default_factory=dict)
    process: dict = field(default_factory=dict)


def _line(identity: dict, process: dict, kind: str, payload: dict) -> str:
    return orjson.dumps({"identity": identity, "process": process, "provider": None, "event": {kind: payload}}).decode()


class ProcObserver:
    """Call `poll()` once per interval; it returns the new observations since the last call."""

    def __init__(self, settings: ObserverSettings):
        self.settings = settings
        self.proc = settings.proc
        self._pattern = re.compile(settings.agent_pattern, re.IGNORECASE)
        self._procs: dict[int, _Proc] = {}
        self._examined: dict[str, set[int]] = {}  # per network namespace: socket inodes already looked at
        self._agents = 0  # observed_agents() as of the last poll
        self._unread: dict[int, bool] = {}  # pid → newly seen, for processes whose argv could not be read
        self._boot_id = procfs.boot_id(self.proc)
        self._boot_time = procfs.boot_time(self.proc)
        self._ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    @property
    def instance(self) -> str:
        """What makes (pid, start time) unique: the host's boot."""
        return f"procfs:{self._boot_id or self.settings.host_id}"

    def observed_agents(self) -> int:
        """Distinct (agent, pod) with a live reported process, as of the last poll. Counted by poll()
        itself: it runs in a worker thread and changes `_procs`, so other threads must not iterate it."""
        return self._agents

    # -- one poll -------------------------------------------------------------------------------

    def poll(self, now_ms: int | None = None) -> list[Observation]:
        now = now_ms if now_ms is not None else int(time.time() * 1000)
        out: list[Observation] = []
        alive: set[int] = set()
        fresh: dict[int, bool] = {}  # pid → newly seen (else: it exec'd)
        for pid in procfs.list_pids(self.proc):
            if pid in self.settings.exclude_pids:
                continue
            known = self._procs.get(pid)
            if known is not None and not known.in_scope:
                alive.add(pid)  # never of interest: not worth a read per poll (a reused pid shows up as new
                continue        # once the old one has left the listing, which takes longer than a poll)
            stat = procfs.read_stat(self.proc, pid)
            if stat is None:
                continue
            alive.add(pid)
            if known is None or known.start != stat.start_ticks:
                if known is not None:  # the pid was reused: the old process ended between polls
                    out.extend(self._exit(known, now))
                cgroup = procfs.read_cgroup(self.proc, pid)
                in_scope = ((self.settings.all_processes or "kubepods" in cgroup)
                            and not stat.kernel_thread and stat.state != "Z")  # neither will ever exec
                self._procs[pid] = _Proc(pid, stat.start_ticks, stat.comm, stat.ppid, in_scope, cgroup)
                fresh[pid] = True
                continue
            known.ppid = stat.ppid
            if stat.state == "Z":
                out.extend(self._exit(known, now, stat.exit_code))
            elif stat.comm != known.comm or (known.agent and procfs.readlink(f"{self.proc}/{pid}/exe") != known.exe):
                known.comm = stat.comm
                fresh[pid] = False
        for pid, is_new in self._unread.items():  # argv unreadable last time: look again
            if pid in alive and pid not in fresh:
                fresh[pid] = is_new
        self._unread = {}
        for pid in list(fresh):
            if pid in fresh:
                out.extend(self._classify(self._procs[pid], fresh, now))
        for pid in [pid for pid in self._procs if pid not in alive]:
            out.extend(self._exit(self._procs.pop(pid), now))
        out.extend(self._egress(now))
        self._agents = len({(p.agent, p.identity.get("session")) for p in self._procs.values()
                            if p.reported and not p.exited})
        return out

    def _classify(self, proc: _Proc, pending: dict[int, bool], now: int, depth: int = 0) -> list[Observation]:
        """Decide whether a new (or just exec'd) process is of interest; report its exec if so."""
        is_new = pending.pop(proc.pid)
        out: list[Observation] = []
        parent = self._procs.get(proc.ppid)
        if parent is not None and parent.pid in pending and depth < _MAX_ANCESTRY:
            out.extend(self._classify(parent, pending, now, depth + 1))  # parents first
        if not proc.in_scope:
            return out
        argv, truncated = procfs.read_cmdline(self.proc, proc.pid)
        if not argv:  # gone, or caught inside execve (its pid is listed before its arguments are set)
            proc.unread += 1
            if proc.unread < _UNREAD_POLLS:
                self._unread[proc.pid] = is_new
            else:
                proc.in_scope = False
            return out
        proc.unread = 0
        exe = procfs.readlink(f"{self.proc}/{proc.pid}/exe")
        if proc.agent is None or not proc.lineage:
            if parent is not None and parent.agent and parent.lineage:
                proc.agent, proc.lineage = parent.agent, True
            elif (name := self._agent_name(proc.comm, argv)) is not None:
                proc.agent, proc.lineage = name, True
            elif self.settings.all_processes:
                proc.agent, proc.lineage = proc.comm, False
        if proc.agent is None:
            return out
        forked_only = (is_new and parent is not None and parent.argv == argv and parent.exe == exe
                       and parent.comm == proc.comm)
        proc.exe, proc.argv = exe, argv
        if not proc.netns:
            proc.netns = procfs.net_namespace(self.proc, proc.pid)
        uid, cwd = self._describe(proc)
        if not forked_only:
            out.append(self._exec(proc, uid, cwd, truncated, self._start_ms(proc) if is_new else now))
        return out

    def _agent_name(self, comm: str, argv: list[str]) -> str | None:
        candidates = []
        if len(argv) > 1 and not argv[1].startswith("-"):
            candidates.append(os.path.basename(argv[1]))
        candidates += [os.path.basename(argv[0]), comm]
        return next((name for name in candidates if name and self._pattern.search(name)), None)

    def _start_ms(self, proc: _Proc) -> int:
        if self._boot_time is None:
            return int(time.time() * 1000)
        return self._boot_time * 1000 + proc.start * 1000 // self._ticks

    # -- lines ----------------------------------------------------------------------------------

    def _describe(self, proc: _Proc) -> tuple[int | None, str | None]:
        """Set the identity and process objects every line about `proc` carries; (uid, cwd)."""
        pid = proc.pid
        uid = procfs.read_uid(self.proc, pid)
        cwd = procfs.readlink(f"{self.proc}/{pid}/cwd")
        proc.identity = {"agent": proc.agent, "task": str(pid), "session": procfs.pod_uid(proc.cgroup)}
        process = {"pid": pid, "ppid": proc.ppid, "uid": uid, "comm": proc.comm, "exe": proc.exe, "cwd": cwd,
                   "cgroup": proc.cgroup or None, "start_time_ticks": proc.start, "boot_id": self._boot_id,
                   "host_id": self.settings.host_id or None}
        proc.process = {k: v for k, v in process.items() if v is not None}
        return uid, cwd

    def _exec(self, proc: _Proc, uid: int | None, cwd: str | None, truncated: bool, at: int) -> Observation:
        pid, argv = proc.pid, proc.argv
        payload = {"pid": pid, "ppid": proc.ppid, "uid": uid, "argv": argv, "cwd": cwd, "argv_source": "proc_cmdline"}
        if truncated:
            payload["argv_truncated"] = True
        payload = {k: v for k, v in payload.items() if v is not None}
        proc.reported, proc.exited = True, False
        digest = hashlib.sha256(orjson.dumps([proc.exe, argv])).hexdigest()[:16]
        return Observation("ToolExec", _line(proc.identity, proc.process, "ToolExec", payload), at,
                           f"{pid}:{proc.start}:exec:{digest}")

    def _exit(self, proc: _Proc, now: int, status: int | None = None) -> list[Observation]:
        if proc.exited:
            return []
        proc.exited = True
        if not proc.reported:
            return []
        payload: dict = {"pid": proc.pid}
        if status is not None:  # a wait status: low 7 bits the signal, else the exit code above them
            if status & 0x7F:
                payload["signal"] = status & 0x7F
            else:
                payload["exit_code"] = (status >> 8) & 0xFF
        return [Observation("ProcessExit", _line(proc.identity, proc.process, "ProcessExit", payload), now,
                            f"{proc.pid}:{proc.start}:exit")]

    def _egress(self, now: int) -> list[Observation]:
        """New connections, found by namespace: read each namespace's TCP tables once, and look at
        the fds of its processes only when an unexamined connection shows up."""
        groups: dict[str, list[_Proc]] = {}
        for proc in self._procs.values():
            if proc.agent and proc.identity and not proc.exited:
                groups.setdefault(proc.netns, []).append(proc)
        out: list[Observation] = []
        for netns, procs in groups.items():
            established = None
            for proc in procs:
                established = procfs.read_established(self.proc, proc.pid)
                if established is not None:
                    break
            established = established or {}
            unexamined = established.keys() - self._examined.get(netns, set())
            wanted = {inode: conn for inode in unexamined if (conn := procfs.peer(established[inode]))}
            for proc in procs if wanted else ():
                for inode in sorted(procfs.socket_inodes(self.proc, proc.pid) & wanted.keys()):
                    conn = wanted.pop(inode)
                    payload = {"pid": proc.pid, "peer": conn.peer, "port": conn.port}
                    out.append(Observation("Egress", _line(proc.identity, proc.process, "Egress", payload), now,
                                           f"{proc.pid}:{proc.start}:egress:{inode}"))
                if not wanted:
                    break
            self._examined[netns] = set(established)
        for netns in set(self._examined) - set(groups):
            del self._examined[netns]
        return out
