"""What a sandbox's member containers are made with: the defaults they inherit from their
sandbox (seccomp, nested cgroup, rlimits), joining its user namespace with an idmapped root,
and joining a gVisor sandbox's kernel as a runsc subcontainer."""
