"""Process 1 of a sealed run: start the command, reap every process, account for all of it.

bubblewrap's own init does not pass its children's CPU time up to the daemon (measured: a
sealed run reported 0.002 s of CPU for 0.5 s of work), and the compute cap needs it. As
process 1 of the run's pid namespace (`bwrap --as-pid-1`), this waits for the command and for
every process orphaned inside the sandbox (a double-forked helper included), so the kernel
adds each one's CPU time to the daemon's child; once the command has ended, whatever it left
running is killed and reaped too. Exit status: the command's (128 + N for a signal N).

    python -I -S -c "<boot>" COMMAND [ARG...]
"""

from __future__ import annotations

import os
import signal
import sys


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args:
        print("sealinit: no command", file=sys.stderr)
        return 2
    child = os.fork()
    if child == 0:  # the command
        try:
            os.execvp(args[0], args)
        except OSError as exc:
            print(f"sealinit: cannot run {args[0]}: {exc}", file=sys.stderr)
        os._exit(127)
    status = 0
    while True:
        try:
            pid, waited = os.wait()
        except ChildProcessError:
            break  # nothing left in the sandbox
        if pid == child:
            status = waited
            try:  # the command is done: end what it left behind (then reap it above)
                os.kill(-1, signal.SIGKILL)
            except ProcessLookupError:
                pass
    code = os.waitstatus_to_exitcode(status)
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main())
