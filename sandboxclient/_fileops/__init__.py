"""What the files handle (``_files``) is built on: the fixed shell scripts run in the sandbox,
one script's exec with its stdin and stdout, and the host's side of a tar tree (made for an
upload, checked whole and extracted for a download)."""
