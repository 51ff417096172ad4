"""Claiming a student's name in the classroom, so that one page at a time labels under a name.

Two pages labelling under one name would merge two people into one annotator (and one page's Undo would take
back the other's click). So the page that presses Start claims the name, and another page that asks for it is
told that it is in use, with a way to take it over (the same student on another computer, or a tab they left):

    claim = NameClaim(labels_dir, "Sam")
    holder = claim.acquire()          # None: the name is ours now; else the claim of the live page holding it
    claim.acquire(takeover=True)      # ours, whoever held it: that page's next click is refused, not saved
    with claim.holding():             # around every write; raises NameTakenOver once another page took it
        store.record(...)
    claim.release()                   # when the page goes (its kernel exits)

A claim is a small JSON file `labels_dir/.claims/<key>.json`, where the key is the name case-folded and NFKC-
normalised (`name_key`), so "Sam" and "sam" claim the same thing: {"name", "token", "pid", "host", "started",
"since", "renewed"}. It ends with its page: Voila shuts a page's kernel down when the page is closed or reloaded,
and a kernel that was killed or culled leaves a claim whose process is gone, which is free at once (the pid is
checked on this machine together with the process's start time, so a reused pid is not mistaken for the kernel).
A claim written on another machine (a labels folder shared over a network) is free `STALE_AFTER_S` after its
page last saved a click.

Every read-modify-write of a claim holds an exclusive flock on its file, and `holding` keeps that lock around
the write it guards: a takeover waits for a click being saved, and no click is saved after a takeover. Nothing
here ever removes a recorded click.
"""

from __future__ import annotations

import json
import os
import socket
import time
import unicodedata
import uuid
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from ..preferences import _lock, _read_all, _write_all
from .collector import WriteRefused

CLAIMS_DIR = ".claims"
STALE_AFTER_S = 30 * 60      # a claim from another machine whose page saved nothing for this long is free


class NameTakenOver(WriteRefused):
    """Another page took over this page's name: this page may no longer write under it."""


def name_key(name: str) -> str:
    """What two spellings of one name have in common: case-folded, then NFKC-normalised ("Sam", "SAM", "sam")."""
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", name).casefold())


@contextmanager
def names_locked(labels_dir):
    """An exclusive lock on the classroom folder's names, held while a page picks the file and claims the name,
    so that two pages pressing Start at once with "Sam" and "sam" end up with one file between them."""
    folder = Path(labels_dir) / CLAIMS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "names.lock", "a+b", buffering=0) as f:
        _lock(f.fileno(), exclusive=True)
        yield


def _started(pid: int) -> float | None:
    """The start time of process `pid` (psutil), None if psutil is missing; raises ProcessLookupError if there is
    no such live process (a zombie counts as gone)."""
    try:
        import psutil
    except ImportError:
        os.kill(pid, 0)                                    # ProcessLookupError if there is none
        return None
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            raise ProcessLookupError(pid)
        return process.create_time()
    except psutil.NoSuchProcess:
        raise ProcessLookupError(pid) from None
    except psutil.AccessDenied:
        raise PermissionError(pid) from None


def is_live(claim: dict) -> bool:
    """Whether the page that wrote `claim` can still be there (see the module docstring)."""
    if not claim.get("token"):
        return False
    if claim.get("host") != socket.gethostname():
        return time.time() - float(claim.get("renewed") or 0) < STALE_AFTER_S
    pid = claim.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        started = _started(pid)
    except ProcessLookupError:
        return False
    except PermissionError:                                # a process of another user: it exists
        return True
    recorded = claim.get("started")
    return started is None or recorded is None or abs(started - float(recorded)) < 1.0


def _read(f) -> dict:
    """The claim in the open file; {} when it is empty, released or unreadable (a crash while it was written)."""
    try:
        claim = json.loads(_read_all(f).decode("utf-8") or "{}")
    except ValueError:
        return {}
    return claim if isinstance(claim, dict) else {}


def _write(f, claim: dict) -> None:
    os.ftruncate(f.fileno(), 0)
    _write_all(f.fileno(), json.dumps(claim, ensure_ascii=False).encode("utf-8") + b"\n")


def _clock(claim: dict) -> str:
    """When the claim was made, as a time of day ("10:42:05"), or "" if it does not say."""
    try:
        return datetime.fromisoformat(claim["since"]).strftime("%H:%M:%S")
    except (KeyError, TypeError, ValueError):
        return ""


class NameClaim:
    """This page's claim on `name` in `labels_dir` (see the module docstring)."""

    def __init__(self, labels_dir, name: str):
        self.labels_dir, self.name = Path(labels_dir), name
        self.path = self.labels_dir / CLAIMS_DIR / f"{name_key(name)}.json"
        self.token = uuid.uuid4().hex

    @contextmanager
    def _locked(self):
        with open(self.path, "a+b", buffering=0) as f:
            _lock(f.fileno(), exclusive=True)
            yield f

    def acquire(self, takeover: bool = False) -> dict | None:
        """Claim the name: None when it is ours now, else the claim of the live page that holds it (unchanged).
        With takeover=True it is ours in any case, and the page that held it is refused its next write."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._locked() as f:
            held = _read(f)
            if held.get("token") != self.token and is_live(held) and not takeover:
                return held
            _write(f, self._mine())
        return None

    def _mine(self) -> dict:
        """A new claim of this page."""
        try:
            started = _started(os.getpid())
        except (ProcessLookupError, PermissionError):          # not for ourselves; recorded as unknown if it were
            started = None
        return {"name": self.name, "token": self.token, "pid": os.getpid(), "host": socket.gethostname(),
                "started": started, "since": datetime.now().isoformat(timespec="seconds"), "renewed": time.time()}

    @contextmanager
    def holding(self):
        """Hold the claim's lock around a write; NameTakenOver (nothing written) if a live page took the name over.
        A claim that nobody holds any more (its file removed by hand, the taker's page gone) is taken back."""
        with self._locked() as f:
            held = _read(f)
            if held.get("token") != self.token and is_live(held):
                when = f" at {_clock(held)}" if _clock(held) else ""
                raise NameTakenOver(
                    f"Another page took over the name {self.name}{when}, so this page no longer saves: this click "
                    f"was not saved, every earlier one was. Reload the page to label under another name.")
            yield
            _write(f, {**self._mine(), **(held if held.get("token") == self.token else {}), "renewed": time.time()})

    def release(self) -> None:
        """Give the name up if it is still ours (the page is closing); the labels stay."""
        if not self.path.is_file():
            return
        with self._locked() as f:
            if _read(f).get("token") == self.token:
                _write(f, {})

    def in_use_message(self, held: dict) -> str:
        """What the page asking for a name in use is told (plain text)."""
        since = f" (since {_clock(held)})" if _clock(held) else ""
        return (f"{held.get('name') or self.name} is in use on another page{since}. Pick another name, or, if that "
                f"page is yours (another tab, or a computer you left), take it over: that page then stops saving.")
