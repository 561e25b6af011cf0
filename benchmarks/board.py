"""``python -m benchmarks.board``: an emulated aarch64 Debian board with sshd on 127.0.0.1.

    sudo "$(which python)" -m benchmarks.board up --dir ~/.cache/nasnet-edge/board   # ~6 min first, then s
    python -m benchmarks.run model.tflite --board ~/.cache/nasnet-edge/board  # verified against this machine
    sudo "$(which python)" -m benchmarks.board down --dir ~/.cache/nasnet-edge/board

What ``up`` builds, each stage cached in the folder so a second start only mounts and starts sshd:

1. an arm64 Debian bookworm root filesystem (``debootstrap``, run through ``qemu-aarch64`` via binfmt_misc);
2. ``/opt/venv`` on the board with the aarch64 wheels of the runtime (ai-edge-litert, numpy);
3. a throw-away client key, a host key, and a ``known_hosts`` file pinning it;
4. ``/proc``, ``/sys`` and ``/dev`` mounted into it, with a fake ``/proc/cpuinfo`` of the emulated CPU;
5. ``sshd`` on ``127.0.0.1:PORT``, every session under ``QEMU_CPU`` (Cortex-A76 by default).

Two qemu traps (qemu 7.2, seen; ``docs/boards.md``) are why the last two stages exist: qemu-user passes
the host's x86 ``/proc/cpuinfo`` through and LiteRT's CPU detection (cpuinfo) crashes on it, so a cpuinfo
that matches the emulated CPU is bind-mounted over it; and qemu's default CPU model (``max``, with SME)
gives wrong int8 results in XNNPACK, so ``QEMU_CPU`` is pinned to a real core model.

Emulated timings are functional checks only: every record from this board says ``emulated``.
Needs root (debootstrap, chroot, mounts) and the host packages ``qemu-user-static binfmt-support
debootstrap openssh-client``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from edge.errors import UsageError, UserError

log = logging.getLogger(__name__)

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
PACKAGES = "python3,python3-venv,python3-pip,openssh-server,ca-certificates"
VENV = "/opt/venv"
HOST_PACKAGES = "qemu-user-static binfmt-support debootstrap openssh-client"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# /proc/cpuinfo of the emulated cores, as the Linux kernel prints it on those CPUs. Only models that qemu
# emulates with exact int8 results are offered (qemu 7.2: 'max' is wrong for XNNPACK's int8 kernels).
CPUS = {
    "cortex-a76": {"features": "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm "
                               "lrcpc dcpop asimddp", "variant": "0x4", "part": "0xd0b", "revision": "1",
                   "board": "Raspberry Pi 5 class (Cortex-A76)"},
    "cortex-a72": {"features": "fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid", "variant": "0x0",
                   "part": "0xd08", "revision": "3", "board": "Raspberry Pi 4 class (Cortex-A72)"},
}


class BoardError(UserError):
    """The emulated board cannot be built or started; the message says what to do."""


def cpuinfo_text(cpu: str, cores: int) -> str:
    c = CPUS[cpu]
    blocks = []
    for i in range(cores):
        blocks.append(f"processor\t: {i}\nBogoMIPS\t: 108.00\nFeatures\t: {c['features']}\n"
                      f"CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: {c['variant']}\n"
                      f"CPU part\t: {c['part']}\nCPU revision\t: {c['revision']}\n")
    return "\n".join(blocks) + "\n"


def mounts_under(folder: Path) -> list[str]:
    """Mount points at or below ``folder`` (from /proc/mounts, which escapes spaces as \\040), deepest first."""
    root = str(folder)
    with open("/proc/mounts") as f:
        points = [ln.split()[1].replace("\\040", " ") for ln in f]
    return sorted((m for m in points if m == root or m.startswith(root + "/")), key=len, reverse=True)


class Board:
    """One board folder: ``rootfs/``, keys, ``board.json`` (how to reach it), logs."""

    def __init__(self, folder: Path, port: int = 2222, cpu: str = "cortex-a76"):
        if cpu not in CPUS:
            raise UsageError(f"unknown --cpu '{cpu}' (choose from {', '.join(CPUS)})")
        self.dir = Path(folder).expanduser().resolve()
        self.root = self.dir / "rootfs"
        self.port = port
        self.cpu = cpu

    # ------------------------------------------------------------------ paths and state
    @property
    def key(self) -> Path:
        return self.dir / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.dir / "known_hosts"

    @property
    def state_file(self) -> Path:
        return self.dir / "board.json"

    @property
    def pid_file(self) -> Path:
        return self.dir / "sshd.pid"

    def spec(self) -> str:
        return f"ssh://root@127.0.0.1:{self.port}"

    def state(self) -> dict:
        return {"device": self.spec(), "ssh_key": str(self.key), "known_hosts": str(self.known_hosts),
                "remote_python": f"{VENV}/bin/python", "qemu_cpu": self.cpu, "emulated": True,
                "board_class": CPUS[self.cpu]["board"], "folder": str(self.dir), "port": self.port}

    # ------------------------------------------------------------------ helpers
    def chroot(self, *argv: str, log_to: Path | None = None, env: dict | None = None,
               timeout: float | None = None) -> subprocess.CompletedProcess:
        """Run ``argv`` inside the board: a clean environment (no host PIP_*), the pinned QEMU_CPU."""
        inner = {"PATH": PATH, "HOME": "/root", "LANG": "C.UTF-8", "QEMU_CPU": self.cpu, **(env or {})}
        cmd = ["chroot", str(self.root), "/usr/bin/env", "-i", *[f"{k}={v}" for k, v in inner.items()], *argv]
        out = open(log_to, "a") if log_to else subprocess.PIPE
        try:
            return subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, text=True, timeout=timeout,
                                  env={**os.environ, "QEMU_CPU": self.cpu})
        finally:
            if log_to:
                out.close()

    def mounted(self) -> list[str]:
        """Mount points inside this board's root filesystem, deepest first."""
        return mounts_under(self.root)

    def sshd_pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
            os.kill(pid, 0)
            return pid
        except (OSError, ValueError):
            return None

    # ------------------------------------------------------------------ stages
    def check_host(self) -> None:
        if os.geteuid() != 0:
            raise BoardError("the emulated board needs root (debootstrap, chroot and mounts): run it with sudo")
        missing = [t for t in ("debootstrap", "qemu-aarch64-static", "ssh", "ssh-keygen") if not shutil.which(t)]
        if missing:
            raise BoardError(f"missing {', '.join(missing)}: apt-get install {HOST_PACKAGES}")
        binfmt = Path("/proc/sys/fs/binfmt_misc")
        if not (binfmt / "register").exists():
            subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(binfmt)], capture_output=True)
        entry = binfmt / "qemu-aarch64"
        if not entry.exists() or "enabled" not in entry.read_text():
            if shutil.which("update-binfmts"):
                subprocess.run(["update-binfmts", "--enable", "qemu-aarch64"], capture_output=True)
        if not entry.exists() or "enabled" not in entry.read_text():
            raise BoardError("binfmt_misc has no enabled qemu-aarch64 entry: apt-get install qemu-user-static "
                             "binfmt-support, then `update-binfmts --enable qemu-aarch64`")
        if "F" not in next((ln.split()[1] for ln in entry.read_text().splitlines() if ln.startswith("flags:")),
                           ""):
            raise BoardError("qemu-aarch64 is registered without the F (fix binary) flag, so it is not found "
                             "inside a chroot: reinstall qemu-user-static from Debian bookworm")

    def build_rootfs(self, progress: bool) -> bool:
        if (self.root / ".nasnet-edge-complete").exists():
            return False
        partial = self.dir / "rootfs.partial"
        for m in mounts_under(partial):
            subprocess.run(["umount", "-l", m], capture_output=True)
        if partial.exists():
            shutil.rmtree(partial)
        logf = self.dir / "debootstrap.log"
        cmd = ["debootstrap", "--arch=arm64", "--variant=minbase", f"--include={PACKAGES}", SUITE, str(partial),
               MIRROR]
        self._stream(cmd, logf, "root filesystem (debootstrap arm64 bookworm, ~6 min)", progress)
        (partial / ".nasnet-edge-complete").write_text(f"{SUITE} arm64 {time.strftime('%Y-%m-%dT%H:%M:%S')}\n")
        if self.root.exists():
            shutil.rmtree(self.root)
        partial.rename(self.root)
        return True

    def _stream(self, cmd: list[str], logf: Path, what: str, progress: bool, env: dict | None = None) -> None:
        from tqdm import tqdm

        t0 = time.time()
        with open(logf, "w") as lf:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
            bar = tqdm(desc=what, unit=" steps", disable=not progress, leave=True, mininterval=2)
            for line in proc.stdout:
                lf.write(line)
                bar.update(1)
                bar.set_postfix_str(line.strip()[:48], refresh=False)
            bar.close()
            rc = proc.wait()
        if rc:
            tail = [ln for ln in logf.read_text().splitlines() if ln.strip()][-1:] or ["?"]
            raise BoardError(f"{what} failed (exit {rc}): {tail[0][:160]}; full log: {logf}")
        log.info("%s: %.0f s", what, time.time() - t0)

    def mount(self) -> None:
        have = set(self.mounted())
        r = str(self.root)
        todo = [(f"{r}/proc", ["mount", "-t", "proc", "proc", f"{r}/proc"]),
                (f"{r}/sys", ["mount", "-t", "sysfs", "-o", "ro", "sysfs", f"{r}/sys"]),
                (f"{r}/dev", ["mount", "--bind", "/dev", f"{r}/dev"])]
        for point, cmd in todo:
            if point not in have:
                self._mount(cmd)
        cpuinfo = self.dir / f"cpuinfo.{self.cpu}"
        cpuinfo.write_text(cpuinfo_text(self.cpu, os.cpu_count() or 1))
        if f"{r}/proc/cpuinfo" in have:
            subprocess.run(["umount", f"{r}/proc/cpuinfo"], capture_output=True)  # the CPU model may differ
        self._mount(["mount", "--bind", str(cpuinfo), f"{r}/proc/cpuinfo"])
        for name in ("resolv.conf", "hosts"):
            if Path("/etc", name).is_file():
                shutil.copyfile(Path("/etc", name), self.root / "etc" / name)
        # the board reaches the network as this machine does: a host behind a TLS-inspecting proxy trusts extra
        # CAs, so the board's pip (here and in `benchmarks.run --setup` over SSH) trusts this machine's bundle
        host_ca = Path("/etc/ssl/certs/ca-certificates.crt")
        if host_ca.is_file():
            shutil.copyfile(host_ca, self.root / "etc/ssl/certs/host-ca-certificates.crt")
            (self.root / "etc/pip.conf").write_text("[global]\ncert = /etc/ssl/certs/host-ca-certificates.crt\n")

    def _mount(self, cmd: list[str]) -> None:
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode:
            raise BoardError(f"{' '.join(cmd)} failed: {res.stderr.strip()[:160]}")

    def install_runtime(self, progress: bool) -> bool:
        from benchmarks.devices import runtime_requirements

        marker = self.root / "opt" / ".nasnet-edge-venv"
        wanted = " ".join(runtime_requirements())
        if marker.is_file() and marker.read_text().strip() == wanted:
            return False
        env = {k: os.environ[k] for k in ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY",
                                          "NO_PROXY") if os.environ.get(k)}
        logf = self.dir / "venv.log"
        logf.write_text("")
        steps = [("venv (python3 -m venv, ~1 min)", ["python3", "-m", "venv", VENV]),
                 (f"runtime ({wanted}, ~1 min)", [f"{VENV}/bin/pip", "install", "--no-input",
                                                  "--disable-pip-version-check", *runtime_requirements()])]
        for what, argv in steps:
            t0 = time.time()
            if progress:
                print(f"board: {what} ...", file=sys.stderr, flush=True)
            res = self.chroot(*argv, log_to=logf, env=env, timeout=1800)
            if res.returncode:
                tail = [ln for ln in logf.read_text().splitlines() if ln.strip()][-1:] or ["?"]
                raise BoardError(f"{what} failed on the board (exit {res.returncode}): {tail[0][:160]}; "
                                 f"full log: {logf}")
            log.info("%s: %.0f s", what, time.time() - t0)
        marker.write_text(wanted + "\n")
        return True

    def keys(self) -> bool:
        made = not self.key.is_file() or not (self.root / "etc/ssh/ssh_host_ed25519_key").is_file()
        if not self.key.is_file():
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "nasnet-edge-board",
                            "-f", str(self.key)], check=True)
        host_key = self.root / "etc/ssh/ssh_host_ed25519_key"
        if not host_key.is_file():  # made on the host: ssh-keygen under emulation is slow
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)], check=True)
        ssh_dir = self.root / "root/.ssh"
        ssh_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        auth = ssh_dir / "authorized_keys"
        auth.write_text(self.key.with_suffix(".pub").read_text())
        auth.chmod(0o600)
        host_pub = host_key.with_suffix(".pub").read_text().split()
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {host_pub[0]} {host_pub[1]}\n")
        (self.root / "run/sshd").mkdir(parents=True, exist_ok=True)
        return made

    def start_sshd(self, timeout: float = 120) -> None:
        if self.sshd_pid():
            if self._answers():
                return
            self.stop_sshd()
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", self.port)) == 0:
                raise BoardError(f"port {self.port} on 127.0.0.1 is taken by another program: choose --port")
        logf = open(self.dir / "sshd.log", "w")
        inner = [f"PATH={PATH}", "LANG=C.UTF-8", f"QEMU_CPU={self.cpu}"]
        cmd = ["chroot", str(self.root), "/usr/bin/env", "-i", *inner, "/usr/sbin/sshd", "-D", "-e",
               "-p", str(self.port), "-o", "ListenAddress=127.0.0.1", "-o", "PasswordAuthentication=no",
               "-o", "KbdInteractiveAuthentication=no", "-o", "PermitRootLogin=prohibit-password",
               "-o", "HostKey=/etc/ssh/ssh_host_ed25519_key", "-o", f"SetEnv=QEMU_CPU={self.cpu}",
               "-o", "MaxStartups=50", "-o", "MaxSessions=50"]
        proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, "QEMU_CPU": self.cpu})
        logf.close()
        self.pid_file.write_text(f"{proc.pid}\n")
        t0 = time.time()
        while time.time() - t0 < timeout:
            if proc.poll() is not None:
                tail = (self.dir / "sshd.log").read_text().strip().splitlines()[-1:] or ["?"]
                raise BoardError(f"sshd on the board exited ({proc.returncode}): {tail[0][:160]}; "
                                 f"log: {self.dir / 'sshd.log'}")
            if self._answers():
                return
            time.sleep(1)
        raise BoardError(f"sshd on the board did not answer within {timeout:.0f} s; log: {self.dir / 'sshd.log'}")

    def ssh(self, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess:
        cmd = ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5", "-o", f"UserKnownHostsFile={self.known_hosts}",
               "-o", "StrictHostKeyChecking=yes", "-o", "IdentitiesOnly=yes", "-i", str(self.key),
               "-p", str(self.port), "root@127.0.0.1", *argv]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)

    def _answers(self) -> bool:
        try:
            r = self.ssh("uname", "-m", timeout=30)
        except subprocess.TimeoutExpired:
            return False
        return r.returncode == 0 and r.stdout.strip() == "aarch64"

    def stop_sshd(self) -> None:
        pid = self.sshd_pid()
        if pid:
            try:
                os.killpg(pid, signal.SIGTERM)
            except OSError:
                pass
            for _ in range(50):
                try:
                    os.kill(pid, 0)
                except OSError:
                    break
                time.sleep(0.1)
        self.pid_file.unlink(missing_ok=True)

    def unmount(self) -> None:
        for m in self.mounted():
            r = subprocess.run(["umount", m], capture_output=True, text=True)
            if r.returncode:
                subprocess.run(["umount", "-l", m], capture_output=True)
        left = self.mounted()
        if left:
            raise BoardError(f"could not unmount {left[0]}: stop what uses it, then run `down` again")

    # ------------------------------------------------------------------ commands
    def up(self, progress: bool = True) -> dict:
        self.check_host()
        self.dir.mkdir(parents=True, exist_ok=True)
        t0 = time.time()
        stages, reused = {}, []
        for name, fn in (("rootfs", lambda: self.build_rootfs(progress)), ("mounts", self.mount),
                         ("runtime", lambda: self.install_runtime(progress)), ("keys", self.keys),
                         ("sshd", self.start_sshd)):
            t = time.time()
            if fn() is False:  # a cached stage: nothing was built
                reused.append(name)
            stages[name] = round(time.time() - t, 1)
        state = {**self.state(), "up_seconds": round(time.time() - t0, 1), "stage_seconds": stages,
                 "reused": reused}
        from converters.common import write_json_atomic

        write_json_atomic(self.state_file, state)
        self._give_to_sudo_user()
        return state

    def _give_to_sudo_user(self) -> None:
        """Under sudo, the user who asked must be able to use the key and state without root."""
        uid, gid = os.environ.get("SUDO_UID"), os.environ.get("SUDO_GID")
        if not uid or os.geteuid() != 0:
            return
        for p in (self.dir, self.key, self.key.with_suffix(".pub"), self.known_hosts, self.state_file):
            if p.exists():
                os.chown(p, int(uid), int(gid or uid))

    def down(self, purge: bool = False) -> None:
        if os.geteuid() != 0 and (self.mounted() or self.sshd_pid()):
            raise BoardError("stopping the emulated board needs root (it unmounts): run it with sudo")
        self.stop_sshd()
        self.unmount()
        if purge:
            if self.mounted():  # never delete through a bind mount of the host's /dev
                raise BoardError(f"{self.root} still has mounts; not deleting")
            shutil.rmtree(self.dir, ignore_errors=True)


def board_from_folder(folder: str | os.PathLike) -> dict:
    """``board.json`` of a board made by ``up``: how ``benchmarks.run --board DIR`` reaches it."""
    p = Path(folder).expanduser() / "board.json"
    if not p.is_file():
        raise UsageError(f"{folder}: no board there (no board.json): start one with "
                         f"`sudo python -m benchmarks.board up --dir {folder}`")
    return json.loads(p.read_text())


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.board", description=__doc__.split("\n\n")[0])
    p.add_argument("action", choices=["up", "down", "status"], help="start (building what is missing), stop, show")
    p.add_argument("--dir", type=Path, default=Path("~/.cache/nasnet-edge/board"),
                   help="the board's folder: root filesystem, keys, logs (default ~/.cache/nasnet-edge/board)")
    p.add_argument("--port", type=int, default=2222, help="sshd port on 127.0.0.1 (default 2222)")
    p.add_argument("--cpu", default="cortex-a76", help=f"emulated CPU: {', '.join(CPUS)} (default cortex-a76)")
    p.add_argument("--purge", action="store_true", help="with down: delete the folder as well")
    p.add_argument("--quiet", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    from edge.cli import run_cli

    args = build_parser().parse_args(argv)

    def go() -> int:
        logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="board: %(message)s")
        if args.action == "status":
            st = board_from_folder(args.dir)
            b = Board(args.dir, st["port"], st["qemu_cpu"])
            st["running"] = bool(b.sshd_pid()) and b._answers()
            print(json.dumps(st, indent=2))
            return 0 if st["running"] else 1
        if args.action == "down":
            port, cpu = args.port, args.cpu
            if (Path(args.dir).expanduser() / "board.json").is_file():
                st = board_from_folder(args.dir)
                port, cpu = st["port"], st["qemu_cpu"]
            Board(args.dir, port, cpu).down(args.purge)
            print(f"board in {args.dir} stopped" + (" and deleted" if args.purge else ""))
            return 0
        st = Board(args.dir, args.port, args.cpu).up(progress=not args.quiet)
        print(f"board up in {st['up_seconds']:.0f} s: {st['device']} (emulated {st['qemu_cpu']}, "
              f"{st['board_class']}; timings are functional checks, not a board's)")
        print(f"  python -m benchmarks.run MODEL.tflite --board {args.dir}")
        print(f"  ssh -i {st['ssh_key']} -o UserKnownHostsFile={st['known_hosts']} -p {st['port']} root@127.0.0.1")
        return 0

    return run_cli(go)


if __name__ == "__main__":
    sys.exit(main())
