"""What the tests share: backends, helpers, raw wire peers."""
