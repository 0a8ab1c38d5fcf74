"""Throwaway OpenSSH server on loopback with its own keys and config; system sshd untouched.

It knows one login user of its own (password and key login) without touching the host's user
database: sshd runs in a private mount namespace (`unshare -m`) where a copy of /etc/passwd with
the user added, and a shadow file holding that user alone, are bind-mounted over the host's.
With `UsePAM no` sshd checks passwords against that shadow file (getspnam).
"""

from __future__ import annotations

import contextlib
import shlex
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.peers.ports import free_tcp_port
from tests.peers.procs import log_tail, stop_process

SSHD = "/usr/sbin/sshd"  # absolute: sshd re-executes itself and refuses a relative path
UNSHARE = "/usr/bin/unshare"
LOGIN_USER = "cfe-flowmon"
LOGIN_UID = 64_999  # inside the namespace only
LOGIN_PASSWORD = "S3CR3T-SSH-PW-6e0b"
KEY_PASSPHRASE = "S3CR3T-SSH-KEY-PASSPHRASE-19fa"
BANNER_PREFIX = "SSH-2.0-OpenSSH_"
START_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Sshd:
    """Where the test sshd listens and which host key fingerprints a client should see."""

    port: int
    directory: Path
    host_key_sha256_fingerprints: dict[str, str] = field(default_factory=dict)
    host: str = "127.0.0.1"
    banner_prefix: str = BANNER_PREFIX
    login_user: str = LOGIN_USER
    login_password: str = LOGIN_PASSWORD
    key_passphrase: str = KEY_PASSPHRASE

    @property
    def client_key(self) -> Path:
        """An unencrypted private key authorised for the login user."""
        return self.directory / "client_key"

    @property
    def encrypted_client_key(self) -> Path:
        """A private key encrypted with `key_passphrase`, authorised too."""
        return self.directory / "client_key_encrypted"

    @property
    def stranger_key(self) -> Path:
        """A private key that is not authorised."""
        return self.directory / "stranger_key"


def _fingerprint(pubkey: Path) -> tuple[str, str]:
    """Return (algorithm, "SHA256:...") exactly as ssh-keygen prints it, the reference format."""
    algorithm = pubkey.read_text().split()[0]
    out = subprocess.run(
        ["ssh-keygen", "-lf", str(pubkey), "-E", "sha256"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return algorithm, out.split()[1]


def _write_config(directory: Path, port: int, host_key: Path) -> Path:
    """Own sshd_config: loopback only, keys-only auth, every file inside `directory`."""
    config = directory / "sshd_config"
    config.write_text(
        "\n".join(
            [
                f"Port {port}",
                "ListenAddress 127.0.0.1",
                f"HostKey {host_key}",
                f"PidFile {directory / 'sshd.pid'}",
                "UsePAM no",
                "PasswordAuthentication yes",
                "KbdInteractiveAuthentication no",
                "PermitRootLogin no",
                f"AllowUsers {LOGIN_USER}",
                "PubkeyAuthentication yes",
                f"AuthorizedKeysFile {directory / 'authorized_keys'}",
                "StrictModes no",
                "LogLevel VERBOSE",
                "",
            ]
        )
    )
    return config


def read_banner(host: str, port: int, timeout_s: float = 2.0) -> str:
    """Read the server's identification line, the first thing an SSH server sends."""
    with socket.create_connection((host, port), timeout=timeout_s) as sock:
        data = b""
        while b"\n" not in data and len(data) < 255:
            chunk = sock.recv(255)
            if not chunk:
                break
            data += chunk
    return data.split(b"\n", 1)[0].decode("ascii", errors="replace").rstrip("\r")


def _wait_for_banner(proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
    """Poll until sshd sends a banner: a bare TCP accept is not proof that it serves SSH."""
    deadline = time.monotonic() + START_TIMEOUT_S
    last_error: str = "no attempt"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sshd exited with code {proc.returncode}:\n{log_tail(log)}")
        try:
            banner = read_banner("127.0.0.1", port)
            if banner.startswith("SSH-"):
                return
            last_error = f"unexpected banner {banner!r}"
        except OSError as exc:
            last_error = repr(exc)
        time.sleep(0.05)
    raise RuntimeError(
        f"sshd on 127.0.0.1:{port} sent no banner within {START_TIMEOUT_S} s "
        f"({last_error}):\n{log_tail(log)}"
    )


def _make_login_user(directory: Path) -> tuple[Path, Path]:
    """passwd (the host's users plus the login user) and shadow (the login user alone)."""
    hashed = subprocess.run(
        ["openssl", "passwd", "-6", LOGIN_PASSWORD], check=True, capture_output=True, text=True
    ).stdout.strip()
    passwd = directory / "passwd"
    host_users = Path("/etc/passwd").read_text()
    passwd.write_text(
        host_users.rstrip("\n")
        + f"\n{LOGIN_USER}:x:{LOGIN_UID}:{LOGIN_UID}::/nonexistent:/bin/sh\n"
    )
    passwd.chmod(0o644)
    shadow = directory / "shadow"
    shadow.write_text(f"{LOGIN_USER}:{hashed}:20000:0:99999:7:::\n")
    shadow.chmod(0o600)
    return passwd, shadow


def _make_client_keys(directory: Path) -> None:
    """Two authorised client keys (one encrypted) and one stranger key."""
    for name, passphrase in (
        ("client_key", ""),
        ("client_key_encrypted", KEY_PASSPHRASE),
        ("stranger_key", ""),
    ):
        key = str(directory / name)
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-C", name, "-f", key],
            check=True,
            capture_output=True,
        )
    (directory / "authorized_keys").write_text(
        (directory / "client_key.pub").read_text()
        + (directory / "client_key_encrypted.pub").read_text()
    )


@contextlib.contextmanager
def run_sshd(port: int | None = None) -> Iterator[Sshd]:
    """Start sshd on 127.0.0.1 (a free port unless given), yield it, and stop it on exit."""
    directory = Path(tempfile.mkdtemp(prefix="cfe-sshd-"))
    directory.chmod(0o755)  # sshd's privilege-separated child must traverse it
    proc: subprocess.Popen[bytes] | None = None
    try:
        host_key = directory / "ssh_host_ed25519_key"
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "cfe-test", "-f", str(host_key)],
            check=True,
            capture_output=True,
        )
        _make_client_keys(directory)
        passwd, shadow = _make_login_user(directory)
        algorithm, fingerprint = _fingerprint(host_key.with_name(host_key.name + ".pub"))
        actual_port = port if port is not None else free_tcp_port()
        config = _write_config(directory, actual_port, host_key)
        # privilege-separation dir; systemd normally creates it
        Path("/run/sshd").mkdir(mode=0o755, parents=True, exist_ok=True)
        test = subprocess.run(
            [SSHD, "-t", "-f", str(config)], check=False, capture_output=True, text=True
        )
        if test.returncode != 0:
            raise RuntimeError(f"sshd -t rejected {config}: {test.stderr.strip()}")
        log = directory / "sshd.log"
        with log.open("wb") as log_file:
            # unshare and sh exec into sshd: the PID stays sshd's own, for stop_process
            mounts = (
                f"mount --bind {shlex.quote(str(passwd))} /etc/passwd && "
                f"mount --bind {shlex.quote(str(shadow))} /etc/shadow && "
                f"exec {SSHD} -D -e -f {shlex.quote(str(config))}"
            )
            proc = subprocess.Popen(
                [UNSHARE, "--mount", "--propagation", "private", "/bin/sh", "-c", mounts],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        _wait_for_banner(proc, actual_port, log)
        yield Sshd(
            port=actual_port,
            directory=directory,
            host_key_sha256_fingerprints={algorithm: fingerprint},
        )
    finally:
        if proc is not None:
            stop_process(proc)
        shutil.rmtree(directory, ignore_errors=True)
