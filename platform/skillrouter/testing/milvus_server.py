"""A real Milvus standalone server (PyPI's `milvus` 2.3.5) for tests and benchmarks, reachable on 127.0.0.1 only.

    python -m skillrouter.testing.milvus_server --data DIR [--auth]      # prints the URI, runs until Ctrl+C

`milvus` ships the standalone binary with an embedded etcd and local storage. Its gRPC servers listen on every
interface whatever `*.ip` says (2.3 binds `:port`), so the binary never runs in this machine's network: a
supervisor process binds one free port on the host's 127.0.0.1, enters a network namespace of its own (an
unprivileged user namespace, `unshare(CLONE_NEWUSER | CLONE_NEWNET)`, holding only a loopback device) and starts
Milvus there on its default ports, which therefore never collide with another run's, then relays the host port to
the proxy's port inside. No Milvus port exists outside the namespace.

The supervisor leads its own process group (Milvus is in it, and dies with it: PR_SET_PDEATHSIG), and stops the
group when its parent closes its stdin, i.e. when the test session ends or is killed. `MilvusServer.stop` kills the
whole group. The binary, 246 MB unpacked, is unpacked once per machine under `.cache/milvus-server/`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import fcntl
import os
import platform
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

DEFAULT_CACHE = Path(__file__).resolve().parents[3] / ".cache" / "milvus-server"
ROOT_TOKEN = "root:Milvus"  # the default superuser when authorization is on
PROXY_PORT, METRICS_PORT = 19530, 9091  # inside the namespace
_CLONE_NEWUSER, _CLONE_NEWNET = 0x10000000, 0x40000000
_PR_SET_PDEATHSIG = 1


class MilvusServerError(RuntimeError):
    pass


def unsupported_reason() -> str | None:
    """Why the bundled binary cannot run on this machine, or None."""
    if sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"):
        return f"PyPI's milvus 2.3.5 bundles a Linux x86_64 binary; this is {sys.platform} {platform.machine()}"
    try:
        import milvus  # noqa: F401
    except ImportError:
        return "the `milvus` package is not installed (`pip install -e '.[test]'`)"
    return None


def unpack_binary(cache: Path = DEFAULT_CACHE) -> Path:
    """The folder holding `milvus` and its libraries, unpacked from the wheel once (under a lock)."""
    import milvus

    cache = cache / milvus.__version__
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        milvus._initialize_data_files(str(cache))  # skips files whose md5 stamp matches
    return cache / "bin"


# -- inside the supervisor ---------------------------------------------------------------------------------------


def _enter_private_network() -> None:
    """A user and network namespace of this (single-threaded) process, with its loopback up."""
    uid, gid = os.getuid(), os.getgid()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(_CLONE_NEWUSER | _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise MilvusServerError(f"cannot create a private network namespace ({os.strerror(err)}): "
                                f"unprivileged user namespaces are off on this machine")
    Path("/proc/self/setgroups").write_text("deny")
    Path("/proc/self/uid_map").write_text(f"0 {uid} 1")
    Path("/proc/self/gid_map").write_text(f"0 {gid} 1")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:  # ip link set lo up, without iproute2
        req = struct.pack("16sH", b"lo", 0)
        flags = struct.unpack("16sH", fcntl.ioctl(s, 0x8913, req)[:18])[1]  # SIOCGIFFLAGS
        fcntl.ioctl(s, 0x8914, struct.pack("16sH", b"lo", flags | 1))  # SIOCSIFFLAGS, IFF_UP


def _write_config(data: Path, auth: bool) -> None:
    from milvus import MilvusServerConfig

    config = MilvusServerConfig(data_dir=str(data), proxy_port=PROXY_PORT)
    config.set("authorization_enabled", auth)  # common.security.authorizationEnabled
    for component in ("rootCoord", "proxy", "queryCoord", "queryNode", "indexNode", "dataCoord", "dataNode"):
        config.set(f"{component}.ip", "127.0.0.1")
    config.resolve()  # checks the ports inside the namespace, writes configs/milvus.yaml


def _start_milvus(binary: Path, data: Path) -> subprocess.Popen:
    env = dict(os.environ, DEPLOY_MODE="STANDALONE", METRICS_PORT=str(METRICS_PORT), MILVUS_RUN_DIR=str(data / "run"),
               LD_LIBRARY_PATH=f"{binary}:{os.environ.get('LD_LIBRARY_PATH', '')}")
    log = open(data / "logs" / "milvus.log", "ab")

    def die_with_parent() -> None:
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)

    return subprocess.Popen([str(binary / "milvus"), "run", "standalone"], cwd=data, env=env, stdout=log,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, preexec_fn=die_with_parent)


def _healthy() -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through an HTTP proxy
    try:
        with opener.open(f"http://127.0.0.1:{METRICS_PORT}/healthz", timeout=2) as resp:
            return b"OK" in resp.read()
    except OSError:
        return False


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(1 << 16):
            writer.write(chunk)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


async def _relay(listener: socket.socket, proc: subprocess.Popen, start_timeout_s: float) -> None:
    async def handle(reader, writer):
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", PROXY_PORT)
        except OSError:
            writer.close()
            return
        up_writer.transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        writer.transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    loop = asyncio.get_running_loop()
    deadline = time.monotonic() + start_timeout_s
    while not await loop.run_in_executor(None, _healthy):
        if proc.poll() is not None:
            raise MilvusServerError(f"milvus exited with code {proc.returncode} while starting")
        if time.monotonic() > deadline:
            raise MilvusServerError(f"milvus did not answer /healthz within {start_timeout_s:.0f} s")
        await asyncio.sleep(0.5)
    server = await asyncio.start_server(handle, sock=listener)
    print(f"READY http://127.0.0.1:{listener.getsockname()[1]}", flush=True)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    stdin_closed = loop.run_in_executor(None, sys.stdin.buffer.read)  # EOF: whoever started us is gone
    exited = loop.run_in_executor(None, proc.wait)
    await asyncio.wait([stdin_closed, exited, asyncio.ensure_future(stop.wait())], return_when=asyncio.FIRST_COMPLETED)
    server.close()  # open connections are left to the process' exit


def supervise(data: Path, port: int, auth: bool, start_timeout_s: float = 180.0) -> int:
    """Run Milvus in a private network namespace, relayed from 127.0.0.1:`port` (0: a free one); the
    first stdout line is `READY <uri>`, or `FAILED <reason>`."""
    data.mkdir(parents=True, exist_ok=True)
    proc = None
    try:
        binary = unpack_binary()
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", port))  # in the host's network, before leaving it
        listener.listen(128)
        listener.setblocking(False)
        _enter_private_network()
        _write_config(data, auth)
        proc = _start_milvus(binary, data)
        asyncio.new_event_loop().run_until_complete(_relay(listener, proc, start_timeout_s))
        return 0
    except Exception as err:  # the parent reads the reason from stdout
        print(f"FAILED {type(err).__name__}: {err}", flush=True)
        return 1
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()  # a disposable server: no graceful stop (Milvus takes seconds over it)
            proc.wait()


# -- the caller's side -------------------------------------------------------------------------------------------


class MilvusServer:
    """A running server: `uri`, `token` (the root user's when `auth`), `stop()` (also on `with` exit)."""

    def __init__(self, data: str | Path, *, auth: bool = True, port: int = 0, start_timeout_s: float = 180.0):
        self.data, self.auth = Path(data), auth
        self.token = ROOT_TOKEN if auth else ""
        self.log = self.data / "logs" / "milvus.log"
        started = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "skillrouter.testing.milvus_server", "--supervise", "--data", str(self.data),
             "--port", str(port), *(["--auth"] if auth else []), "--start-timeout", str(start_timeout_s)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True)
        line = self.proc.stdout.readline().strip()  # the supervisor gives up by itself after start_timeout_s
        if not line.startswith("READY "):
            tail = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            self.stop()
            raise MilvusServerError(f"the Milvus server did not start: {line or 'no answer'}"
                                    + (f"\n--- {self.log} (tail) ---\n{tail}" if tail else ""))
        self.uri = line.split(" ", 1)[1]
        self.start_s = round(time.monotonic() - started, 1)

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        """Kill the supervisor's whole process group, Milvus included (a disposable server: no graceful stop)."""
        with contextlib.suppress(OSError):
            self.proc.stdin.close()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        with contextlib.suppress(OSError):
            self.proc.stdout.close()

    def __enter__(self) -> MilvusServer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="the server's folder: config, logs, data")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: a free one)")
    parser.add_argument("--auth", action="store_true", help=f"authorization on (token {ROOT_TOKEN})")
    parser.add_argument("--start-timeout", type=float, default=180.0)
    parser.add_argument("--supervise", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.supervise:
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # while starting; then the relay's handler
        code = 1
        try:
            code = supervise(Path(args.data), args.port, args.auth, args.start_timeout)
        except SystemExit:  # SIGTERM, after supervise's finally clause stopped Milvus
            code = 0
        finally:
            sys.stdout.flush()
            os._exit(code)  # not waiting for the thread that still reads stdin
    if (reason := unsupported_reason()) is not None:
        print(reason, file=sys.stderr)
        return 2
    with MilvusServer(args.data, auth=args.auth, port=args.port, start_timeout_s=args.start_timeout) as server:
        print(f"{server.uri} (token {server.token or 'none'}), started in {server.start_s} s; Ctrl+C stops it",
              flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            server.proc.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
