"""Reusing an etcd auth token across plugin processes.

With a username and password every fresh process has to authenticate, and etcd checks
the password with bcrypt (cost 10) and puts the new token through raft: about 100 ms of
a call (docs/benchmarks.md, E5). The cheaper secure path etcd offers for other clients,
a client certificate whose common name is the user (`--client-cert-auth`), does not
work through the JSON gateway this client speaks: etcd 3.4 refuses such a request with
"CommonName of client sending a request against gateway will be ignored". So a token,
once issued, is kept in a file beside the host's writers' lock (`lockDir`, default
/run/cnipam, a tmpfs: gone at reboot) and reused until etcd rejects it; then the process
authenticates again and replaces it.

No weaker than the password file it comes from: the file is written 0600 by the process's
user in a folder only it can write, and read only if it is a regular file of that user
that nobody else can read or write (anything else is ignored, never trusted). A token
grants what the password grants, but only until it expires (`--auth-token-ttl`, 300 s by
default for etcd's simple tokens, reset by use; a JWT's own expiry), and a file of
another password (a rotated one) is ignored: each file also holds a digest binding the
token to the password it was issued for. The file is named by a digest of the endpoints
and the user, so stores of one cluster share it.
"""

from __future__ import annotations

import os
import stat

from ..core.errors import CnipamError
from ..core.json_codec import dumps, loads

_LIMIT = 8192


def token_file(lock_dir: str, endpoints: tuple[str, ...], username: str) -> str:
    return os.path.join(lock_dir, f"etcd-token-{_digest(chr(10).join(endpoints), username)[:16]}")


def load_token(path: str, password: str) -> str | None:
    """The token in `path` if the file can be trusted and was issued for `password`."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o077:
            return None
        document = loads(os.read(fd, _LIMIT), path)
    except (OSError, CnipamError):  # unreadable or not ours: authenticate as if it were not there
        return None
    finally:
        os.close(fd)
    if not isinstance(document, dict):
        return None
    token = document.get("token")
    if not isinstance(token, str) or document.get("binding") != _digest(token, password):
        return None
    return token


def save_token(path: str, password: str, token: str) -> None:
    """Best effort: a folder that cannot take it only means the next process authenticates."""
    temporary = f"{path}.{os.getpid()}"
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    except OSError:
        return
    try:
        try:
            os.write(fd, dumps({"token": token, "binding": _digest(token, password)}).encode())
        finally:
            os.close(fd)
        os.replace(temporary, path)
    except OSError:
        try:
            os.unlink(temporary)
        except OSError:
            pass


def _digest(*parts: str) -> str:
    """SHA-256 from the C module itself: `hashlib` would load OpenSSL too, 3 ms of each call."""
    try:
        from _sha256 import sha256  # type: ignore[import-not-found,unused-ignore]  # Python 3.10, 3.11
    except ImportError:
        try:
            from _sha2 import sha256  # type: ignore[import-not-found,unused-ignore]  # 3.12 and later
        except ImportError:
            from hashlib import sha256
    digest: str = sha256("\0".join(parts).encode("utf-8", "surrogatepass")).hexdigest()
    return digest
