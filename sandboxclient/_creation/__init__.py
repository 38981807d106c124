"""How the handles make what they stand for, each with its roll-back: a sandbox
(``_create``), one on an image (``_sandbox_image``, with ``_image_user``), a container
(``_container_create``) and a one-command sandbox (``_oneshot``). Only the handles at the
package's root import it (and the sandboxer, for the one-command output's label names)."""
