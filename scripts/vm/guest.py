"""The test VM's first process once the host's root is mounted (after scripts/vm/init.sh).

Runs the command the host wrote to ``.cache/vm/run/command`` with the environment in
``.cache/vm/run/env``, reaps every orphan meanwhile (as an init must: the suite's daemons
outlive their parents at times), writes the command's exit status to
``.cache/vm/run/status`` and powers the VM off.
"""

import os
import subprocess
import sys


def main() -> None:
    project = sys.argv[1]
    run = os.path.join(project, ".cache", "vm", "run")
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root"}
    with open(os.path.join(run, "env"), encoding="utf-8") as f:
        for line in f.read().splitlines():
            name, sep, value = line.partition("=")
            if sep:
                env[name] = value
    subprocess.run(["ip", "link", "set", "lo", "up"], check=False)
    with open("/sys/fs/cgroup/cgroup.controllers", encoding="utf-8") as f:
        controllers = f.read().strip()
    print(f"vm: kernel {os.uname().release}, cgroup v2 controllers: {controllers}", flush=True)
    child = subprocess.Popen(["sh", os.path.join(run, "command")], cwd=project, env=env)
    status = None
    while status is None:
        pid, code = os.waitpid(-1, 0)
        if pid == child.pid:
            status = os.waitstatus_to_exitcode(code)
    with open(os.path.join(run, "status"), "w", encoding="utf-8") as f:
        f.write(f"{status}\n")
    os.sync()
    with open("/proc/sysrq-trigger", "w") as f:
        f.write("o")


if __name__ == "__main__":
    main()
