"""What the images handle (``_images``) is built on: the Images store, the Transfer calls with
their Streaming side channel, archives in and out, the end of an exported tar, and registry
credentials."""
