"""Live view over HTTP (``--serve``): dashboard, OBS overlay, MJPEG, events, JSON API, metrics.

``options`` needs no third-party package (the CLI and config import it); ``sink`` and
``server`` pull in aiohttp and prometheus_client.
"""
