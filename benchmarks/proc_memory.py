"""Peak-memory measurement shared by the benchmark scripts (Linux ``/proc``).

Each benchmark case runs in a fresh subprocess; after the model is built the peak resident set (``VmHWM``) is
reset by writing 5 to ``/proc/self/clear_refs``, so the reported figure is the increase caused by the timed
work, not by imports or weight initialisation.
"""


def status_kib(field: str) -> int:
    """A ``/proc/self/status`` field in KiB (``VmRSS``, ``VmHWM``...)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak() -> bool:
    """Reset ``VmHWM`` to the current resident set; False where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def run_child(cmd: list[str]) -> dict | None:
    """Run a benchmark case in a fresh process; its ``RESULT {json}`` line, or None (its output printed) on failure."""
    import json
    import subprocess
    import sys

    res = subprocess.run(cmd, capture_output=True, text=True)
    line = [x for x in res.stdout.splitlines() if x.startswith("RESULT ")]
    if res.returncode or not line:
        print(res.stdout, res.stderr, file=sys.stderr)
        return None
    return json.loads(line[0][7:])
