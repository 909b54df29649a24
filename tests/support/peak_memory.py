"""How a test's child process reports its own peak memory.

`getrusage(RUSAGE_SELF).ru_maxrss` is the wrong figure for a child: Linux carries the peak of
the memory image an `execve` replaces into the new program's `ru_maxrss`, so a child started
by a pytest process that has grown to 300 MiB reports at least 300 MiB whatever it does
itself (a memory test passed alone at 166 MiB and failed at 438 MiB inside the full suite).
`VmHWM` in /proc/self/status is the high-water mark of the child's own address space, which
starts fresh at exec.
"""

from __future__ import annotations

# Code a probe runs (after its work) to get its peak resident memory in KiB.
PEAK_KIB = "int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM:')).split()[1])"
