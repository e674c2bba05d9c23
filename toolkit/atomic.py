"""The toolkit's one way to write an artifact: files and directories that readers see old or new, never half.

* :func:`atomic_write_text` / :func:`atomic_write_bytes`: write a unique temporary sibling, fsync it, then
  ``os.replace`` it onto the target (one atomic rename, POSIX).
* :func:`atomic_dir`: build a directory in a unique temporary sibling, fsync it, then install it in one step:
  ``rename`` when the target does not exist, ``renameat2(RENAME_EXCHANGE)`` when it does (Linux >= 3.15, on
  filesystems that support it: ext4, xfs, btrfs, tmpfs, ...), after which the old tree sits at the temporary
  name and is deleted. Where the exchange is unavailable (not Linux, an old libc or kernel, or a filesystem that
  answers EINVAL, such as some network/FUSE mounts) it falls back to two renames (target -> ``.old-`` sibling,
  temporary -> target): between them there is briefly no target, and a run killed there leaves the old tree at
  the ``.old-`` name, which the next run on that target renames back before doing anything else.

Temporary siblings are named ``.<name>.tmp-<pid>-<hex8>`` (``.old-`` for the fallback's parked tree), so a run
killed at any point (SIGKILL included) leaves only names that the next write to the same target recognises and
removes once their pid is dead. A pid reused by an unrelated process only delays that cleanup; the names never
collide with a new write, so nothing a killed run leaves can block the next one. Only stdlib imports: the
serving environment (``toolkit.engine.offline``) uses this module too.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import re
import secrets
import shutil
import sys
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path

from toolkit.errors import ToolkitError

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
# None: not tried yet; False: unavailable here (then the two-rename fallback is used for the whole process).
_exchange_ok: bool | None = None if sys.platform.startswith("linux") else False


@cache
def _renameat2() -> Callable[..., int] | None:
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2  # glibc >= 2.28, musl >= 1.2.3
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


def _exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths atomically; False when the exchange is unavailable here, OSError otherwise."""
    global _exchange_ok
    fn = _renameat2() if _exchange_ok is not False else None
    if fn is None:
        _exchange_ok = False
        return False
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        _exchange_ok = True
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):  # old kernel / filesystem without the flag
        _exchange_ok = False
        return False
    raise OSError(err, os.strerror(err), str(b))


def _temp_sibling(final: Path, kind: str = "tmp") -> Path:
    return final.parent / f".{final.name}.{kind}-{os.getpid()}-{secrets.token_hex(4)}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    return True


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


def clean_stale(final: str | Path) -> list[Path]:
    """Remove the temporary siblings of ``final`` left by dead writers; return what was removed.

    A fallback run killed between its two renames left no ``final`` and the old tree at ``.old-``: that tree is
    renamed back first, so the previous artifact is restored rather than deleted.
    """
    final = Path(final)
    # Names without a pid (``.tmp-<hex8>``) were left by the toolkit's earlier two-rename scheme: always stale.
    pattern = re.compile(rf"\.{re.escape(final.name)}\.(tmp|old)-(?:(\d+)-)?[0-9a-f]{{8}}")
    try:
        entries = list(os.scandir(final.parent))
    except FileNotFoundError:
        return []
    stale = []
    for e in entries:
        m = pattern.fullmatch(e.name)
        pid = int(m.group(2) or 0) if m else None
        if m and (pid == 0 or pid != os.getpid() and not _pid_alive(pid)):
            stale.append((m.group(1), Path(e.path)))
    removed = []
    for kind, p in sorted(stale):  # "old" before "tmp"
        if kind == "old" and not os.path.lexists(final):
            with contextlib.suppress(OSError):
                os.rename(p, final)
                continue
        _remove(p)
        removed.append(p)
    return removed


def _fsync_path(p: str, directory: bool = False) -> None:
    fd = os.open(p, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    except OSError as exc:  # some filesystems refuse fsync on directories; the data is what matters
        if not directory or exc.errno not in (errno.EINVAL, errno.EBADF):
            raise
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    """Flush a built tree before it is installed, so a power cut cannot leave the new name on empty files."""
    for dirpath, _, files in os.walk(root):
        for f in files:
            fp = os.path.join(dirpath, f)
            if not os.path.islink(fp):
                with contextlib.suppress(PermissionError):  # an unreadable file: cannot open it to flush it
                    _fsync_path(fp)
        _fsync_path(dirpath, directory=True)


def _ensure_parent(parent: Path) -> None:
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ToolkitError(f"{parent}: cannot create output directory ({exc.strerror})") from None
    if not os.access(parent, os.W_OK):
        raise ToolkitError(f"{parent}: output directory is not writable")


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Replace ``path`` with ``data`` in one rename; on any failure ``path`` is left as it was."""
    path = Path(path)
    _ensure_parent(path.parent)
    clean_stale(path)
    tmp = _temp_sibling(path)
    try:
        # os.open rather than mkstemp: the file gets the usual umask-derived mode, as write_text would give it.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with open(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        raise ToolkitError(f"{path}: cannot write ({exc.strerror or exc})") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    with contextlib.suppress(OSError):
        _fsync_path(str(path.parent), directory=True)  # make the rename itself durable
    return path


def atomic_write_text(path: str | Path, text: str, encoding: str = "utf-8") -> Path:
    """Replace ``path`` with ``text`` in one rename (see :func:`atomic_write_bytes`)."""
    return atomic_write_bytes(path, text.encode(encoding))


def _install(tmp: Path, final: Path) -> Path | None:
    """Put ``tmp`` at ``final`` in one step; return where the old tree now is (to delete), or None."""
    for _ in range(5):  # retried only when another writer creates or removes ``final`` between our steps
        if os.path.lexists(final):
            try:
                if _exchange(tmp, final):
                    return tmp
            except FileNotFoundError:
                continue  # removed meanwhile: rename below on the next pass
            # Fallback: two renames, with a moment without ``final`` (see the module docstring).
            old = _temp_sibling(final, "old")
            try:
                os.rename(final, old)
            except FileNotFoundError:
                continue
            try:
                os.rename(tmp, final)
            except BaseException:
                os.rename(old, final)  # put the old tree back before reporting the failure
                raise
            return old
        try:
            os.rename(tmp, final)
            return None
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):  # created meanwhile: exchange next pass
                raise
    raise ToolkitError(f"{final}: could not be replaced (other writers kept changing it)")


@contextlib.contextmanager
def atomic_dir(final: str | Path) -> Iterator[Path]:
    """Yield a fresh temporary sibling of ``final``; on success it replaces ``final`` in one atomic step.

    On any exception (including KeyboardInterrupt) the temporary directory is removed and ``final`` is left
    exactly as it was. Leftovers of killed earlier runs on the same target are cleaned up first.
    """
    final = Path(final)
    _ensure_parent(final.parent)
    clean_stale(final)
    if final.exists() and not final.is_dir():
        raise ToolkitError(f"{final}: exists and is not a directory")
    tmp = _temp_sibling(final)
    tmp.mkdir()
    try:
        yield tmp
        try:
            _fsync_tree(tmp)
            old = _install(tmp, final)
        except OSError as exc:
            raise ToolkitError(f"{final}: cannot install the new directory ({exc.strerror or exc})") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)  # if killed here, the next run's clean_stale finishes it
    with contextlib.suppress(OSError):
        _fsync_path(str(final.parent), directory=True)
