"""The local service stack: Kafka, ClickHouse and Triton for development, tests and the demo.

``stack/`` runs them as plain processes under one run dir (``driftline stack``); the Dockerfiles and
docker-compose.yml describe the same services as containers for a deployment.
"""
