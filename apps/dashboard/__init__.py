"""``driftline dashboard``: a small web page over the ClickHouse analytics tables.

``queries`` turns request filters into parameterized SQL and shapes the rows into JSON,
``store`` runs that SQL through clickhouse-driver without blocking the event loop, ``server`` is the
aiohttp app serving the JSON API and the static page (``static/``), whose own small script draws the
charts as SVG in the browser, so nothing is fetched from the internet.
"""
