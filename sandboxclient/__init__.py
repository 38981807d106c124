"""Asyncio-native client for containerd 2.x's sandbox API."""
