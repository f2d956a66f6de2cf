"""Stopping the servers the harness started: asked first, killed when they do not listen."""

import subprocess


def stop_process(process: subprocess.Popen, signum: int, deadline: float) -> bool:
    """Send `signum`, wait up to `deadline` seconds for the exit; past it, kill and reap the
    process. True when it exited as asked."""
    process.send_signal(signum)
    try:
        process.wait(deadline)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return False
    return True
