"""One training job per workdir: an advisory lock held while a run trains.

Two `train` commands on one workdir (a command started twice, a second
terminal) would save the same checkpoint steps into the same folders; orbax
then fails on the other's temporary files, or one run's steps replace the
other's. Each process of a job takes an exclusive `flock` on
`WORKDIR/.train.lock.<process index>` (one file per process, so the
processes of one multi-host job never contend with each other, and a second
job's process i meets the first job's process i), writes its pid there for
the message, and removes the file when the run returns. The kernel drops
the lock when the process ends (also on kill -9), so a file left behind
by a killed run locks nothing. Where the file system has no locks (some
network or FUSE mounts) the run goes on without one.
"""

import contextlib
import errno
import fcntl
import os

PREFIX = ".train.lock."


def path(workdir: str, process_index: int) -> str:
  return os.path.join(workdir, f"{PREFIX}{process_index}")


def _acquire(lock_path: str, workdir: str):
  """An fd holding the lock on the file now at `lock_path`; None without
  locks on this file system. ValueError when another process holds it."""
  while True:
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
      os.close(fd)
      if e.errno in (errno.EAGAIN, errno.EACCES):
        raise ValueError(
            f"--workdir={workdir} is in use by another training process"
            f"{f' (pid {holder})' if holder else ''}: wait for it to end, "
            "or train into another folder.") from None
      return None  # No locks on this file system: go on without one.
    try:
      same = os.stat(lock_path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
      same = False
    if same:
      return fd
    os.close(fd)  # Removed by the holder that just ended: take the new one.


@contextlib.contextmanager
def hold(workdir: str, process_index: int = 0):
  """Holds the lock of `process_index` in `workdir` (which exists) while
  the body runs; yields the lock file's path (None without locks).

  Raises:
    ValueError: another live process holds it (one line, with its pid).
  """
  lock_path = path(workdir, process_index)
  fd = _acquire(lock_path, workdir)
  if fd is None:
    yield None
    return
  try:
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    yield lock_path
  finally:
    try:
      os.remove(lock_path)
    except OSError:
      pass
    os.close(fd)  # Releases the lock.
