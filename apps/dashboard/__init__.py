"""``driftline dashboard``: a small web page over the ClickHouse analytics tables.

``queries`` (filters -> SQL -> JSON), ``store`` (ClickHouse off the event loop), ``server`` (aiohttp app and
static page, charts drawn as SVG in the browser, nothing fetched from the internet).
"""
