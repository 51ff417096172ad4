"""The classroom server: `scripts/classroom.sh` runs `python -m rlhf_kit.ui.room`, which serves the collector page
with Voila, sized and guarded for a room of students.

    python -m rlhf_kit.ui.room [NOTEBOOK] [--ip 127.0.0.1] [--port 8866] [--token WORD | --no-token]
                               [--max-pages 40] [--idle-minutes 20] [-- extra voila arguments]

Every page load starts a kernel (about 100 MB; the page imports no torch). So that a room cannot exhaust the
machine:

- at most `--max-pages` kernels run at once (`RoomKernelManager`): one more page load gets a "room full" page
  (HTTP 503) saying what to do, instead of a kernel;
- a page closed or reloaded shuts its kernel down (Voila's page asks for it on `beforeunload`; `set_xsrf_cookie`
  makes that request work), and a kernel with no activity (no click) for `--idle-minutes` is culled, connected or
  not (Jupyter Server's `MappingKernelManager.cull_idle_timeout`, `cull_interval`, `cull_connected`): its student
  reloads and types their name to carry on;
- the server listens on 127.0.0.1 unless told otherwise. `--ip 0.0.0.0` opens it to the classroom network, and
  then a token is required (a random one unless `--token WORD` chooses it): students open the printed link, or
  the bare address and type the token as the password.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import secrets
import socket
import sys
from pathlib import Path

from jupyter_server.services.kernels.kernelmanager import AsyncMappingKernelManager
from tornado import web
from traitlets import Integer

MODULE = "rlhf_kit.ui.room"     # also when run as __main__: voila imports RoomKernelManager by this name
NOTEBOOK = Path(__file__).resolve().parents[2] / "classroom" / "collect.ipynb"
PORT_ENV = "RLHF_KIT_CLASSROOM_PORT"
DEFAULT_PORT, DEFAULT_MAX_PAGES, DEFAULT_IDLE_MINUTES = 8866, 40, 20
CULL_INTERVAL_S = 60


def room_full_message(max_pages: int, idle_minutes: int) -> str:
    """The "room full" page's text (ASCII: it is also the HTTP reason phrase)."""
    idle = f" or idle for {idle_minutes} minutes" if idle_minutes else ""
    return (f"The room is full: {max_pages} pages are open, the most this server takes. Wait a minute and reload "
            f"this page: pages that are closed{idle} free their place. If it stays full, tell your instructor "
            f"(scripts/classroom.sh --max-pages).")


class RoomKernelManager(AsyncMappingKernelManager):
    """Jupyter Server's kernel manager with a cap: at most `max_kernels` kernels (open pages) at once; one more is
    refused with HTTP 503 and `room_full_message`, before any kernel starts."""

    max_kernels = Integer(0, config=True, help="The most kernels that may run at once; 0: no limit.")

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._starting: set[str] = set()        # ids of kernels being started: they count against the cap too

    async def start_kernel(self, *, kernel_id: str | None = None, **kwargs) -> str:
        if kernel_id is not None and kernel_id in self:         # an existing kernel is only looked up
            return await super().start_kernel(kernel_id=kernel_id, **kwargs)
        kernel_id = kernel_id or self.new_kernel_id()
        running = set(self.list_kernel_ids()) | self._starting
        if self.max_kernels and len(running) >= self.max_kernels:
            idle_minutes = self.cull_idle_timeout // 60 if self.cull_idle_timeout > 0 else 0
            message = room_full_message(self.max_kernels, idle_minutes)
            self.log.warning("refused a page: %d kernels are running, the cap (max_kernels)", len(running))
            raise web.HTTPError(503, message.replace("%", "%%"), reason=message)
        self._starting.add(kernel_id)
        try:
            return await super().start_kernel(kernel_id=kernel_id, **kwargs)
        finally:
            self._starting.discard(kernel_id)


def set_xsrf_cookie(req_handler, notebook, cwd) -> None:
    """Voila's prelaunch hook, run on every page load: set the page's _xsrf cookie.

    Voila's page shuts its kernel down on `beforeunload` with a POST that carries the _xsrf cookie, but Voila 0.5
    never sets that cookie, so Jupyter Server refuses the POST (403 "'_xsrf' argument missing", voila-dashboards/
    voila#1458) and the kernel of every closed or reloaded page would live on, holding its student's name, until
    culled. Reading the handler's `xsrf_token` sets the cookie."""
    _ = req_handler.xsrf_token


def serve(voila_argv: list[str]) -> None:
    """Run Voila with `voila_argv` and `set_xsrf_cookie` as its prelaunch hook (a function cannot be passed on
    voila's command line)."""
    from traitlets.config import Config
    from voila.app import Voila

    config = Config()
    config.VoilaConfiguration.prelaunch_hook = set_xsrf_cookie
    Voila.launch_instance(argv=voila_argv, config=config)


def server_command(notebook=NOTEBOOK, *, ip: str = "127.0.0.1", port: int = DEFAULT_PORT, token: str = "",
                   max_pages: int = DEFAULT_MAX_PAGES, idle_seconds: int = DEFAULT_IDLE_MINUTES * 60,
                   cull_interval_s: int = CULL_INTERVAL_S, extra=()) -> list[str]:
    """The command line that serves `notebook` with these settings (token "": no token): voila's, through
    `serve`."""
    return [sys.executable, "-m", MODULE, "--serve", str(notebook),
            "--no-browser", f"--Voila.ip={ip}", f"--port={port}",
            "--Voila.port_retries=0", f"--Voila.token={token}",
            # a broken setup (a bad pairs file) shows its error on the page instead of a blank one
            "--show_tracebacks=True",
            f"--VoilaConfiguration.multi_kernel_manager_class={MODULE}.RoomKernelManager",
            f"--RoomKernelManager.max_kernels={max_pages}",
            f"--MappingKernelManager.cull_idle_timeout={idle_seconds}",
            f"--MappingKernelManager.cull_interval={cull_interval_s}",
            "--MappingKernelManager.cull_connected=True", *extra]


def is_loopback(ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip).is_loopback
    except ValueError:
        return ip == "localhost"


def lan_addresses() -> list[str]:
    """This machine's IPv4 addresses that others on the network may reach (nothing is sent to find them)."""
    found = set()
    try:
        found.update(socket.gethostbyname_ex(socket.gethostname())[2])
    except OSError:
        pass
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))          # picks the outgoing interface; a UDP connect sends nothing
            found.add(s.getsockname()[0])
        except OSError:
            pass
    return sorted(a for a in found if not is_loopback(a))


def how_to_open(ip: str, port: int, token: str, max_pages: int, idle_minutes: int) -> list[str]:
    """What to tell the instructor: where students open the room, and how to open it to the network."""
    query = f"?token={token}" if token else ""
    lines = []
    if is_loopback(ip):
        lines.append(f"classroom: open http://127.0.0.1:{port}/{query} on this machine; only this machine can reach "
                     f"it.")
        lines.append("classroom: to open the room to your classroom network: bash scripts/classroom.sh --ip 0.0.0.0 "
                     "(a token is made up for you, or choose one with --token WORD)")
    else:
        hosts = [ip] if ip not in ("0.0.0.0", "::") else lan_addresses() or ["<this machine's address>"]
        lines.append("classroom: students open " + " or ".join(f"http://{h}:{port}/{query}" for h in hosts))
        lines.append(f"classroom: or the address without '?token=...', and type {token} as the password" if token
                     else "classroom: WARNING: no token: anyone who can reach this port can label (and fill the room)")
    idle = f"; pages idle for {idle_minutes} minutes are closed" if idle_minutes else ""
    lines.append(f"classroom: at most {max_pages} pages at once{idle} (a student reloads and types the same name "
                 f"to carry on)")
    return lines


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="classroom.sh", description="Serve the preference collector to a room "
                                     "(extra arguments go to voila).")
    parser.add_argument("notebook", nargs="?", default=str(NOTEBOOK))
    parser.add_argument("--ip", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine "
                                                          "only; 0.0.0.0: the classroom network)")
    parser.add_argument("--port", type=int, default=None, help=f"default ${PORT_ENV}, else {DEFAULT_PORT}")
    parser.add_argument("--token", default=None, help="the token (password) students need (default: none on "
                                                      "127.0.0.1, a random one on a network)")
    parser.add_argument("--no-token", action="store_true", help="no token even on a network (not recommended)")
    parser.add_argument("--max-pages", type=int, default=DEFAULT_MAX_PAGES,
                        help=f"the most pages (kernels, ~100 MB each) open at once (default {DEFAULT_MAX_PAGES})")
    parser.add_argument("--idle-minutes", type=int, default=DEFAULT_IDLE_MINUTES,
                        help=f"close a page after this many minutes without a click (default "
                             f"{DEFAULT_IDLE_MINUTES}; 0: never)")
    return parser


def prepare_room() -> None:
    """Read the pairs once, building the workspace's `preferences` stage if it is missing (minutes), so that no
    student's page waits for that build, and fix the labels folder for every kernel ($RLHF_KIT_CLASSROOM_DIR)."""
    from .classroom import DIR_ENV, classroom_budget, classroom_dir, classroom_pairs

    pairs, budget, labels_dir = classroom_pairs(), classroom_budget(), classroom_dir().resolve()
    labels_dir.mkdir(parents=True, exist_ok=True)
    os.environ[DIR_ENV] = str(labels_dir)
    print(f"classroom: {len(pairs)} pairs, {budget or len(pairs)} per student; labels in {labels_dir}/<name>.jsonl")
    print(f"classroom: pool the labels with: .venv/bin/python -m rlhf_kit.ui.classroom {labels_dir}")


def _exec(command: list[str]) -> None:
    sys.stdout.flush()
    os.execv(command[0], command)


def main(argv=None) -> int:
    parser = _parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--serve"]:
        serve(argv[1:])
        return 0
    after = argv.index("--") if "--" in argv else len(argv)            # what follows "--" goes to voila as it is
    args, extra = parser.parse_known_args(argv[:after])
    extra += argv[after + 1:]
    port = args.port if args.port is not None else int(os.environ.get(PORT_ENV) or DEFAULT_PORT)
    problems = [f"--{name.replace('_', '-')} must be at least {low}, got {value}"
                for name, value, low in (("max_pages", args.max_pages, 1), ("idle_minutes", args.idle_minutes, 0))
                if value < low]
    if args.token is not None and (args.no_token or not args.token.strip() or not args.token.isprintable()):
        problems.append("--token needs a word (letters and digits) and cannot go with --no-token")
    if problems:
        parser.error("; ".join(problems))
    token = args.token or ("" if args.no_token or is_loopback(args.ip) else secrets.token_urlsafe(6))
    try:
        prepare_room()
    except (OSError, ValueError, RuntimeError) as error:      # a bad pairs file or budget, an unusable workspace
        print(f"classroom: error: {error}", file=sys.stderr)
        return 2
    for line in how_to_open(args.ip, port, token, args.max_pages, args.idle_minutes):
        print(line)
    _exec(server_command(args.notebook, ip=args.ip, port=port, token=token, max_pages=args.max_pages,
                         idle_seconds=args.idle_minutes * 60, extra=extra))
    return 0


if __name__ == "__main__":
    sys.exit(main())
