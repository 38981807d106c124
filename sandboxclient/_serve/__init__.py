"""What the sandboxer and the stand-in share: the server, field-path updates, the call log,
the busybox root and /proc readers."""
