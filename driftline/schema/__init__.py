"""The ClickHouse schema: numbered migrations (``migrations/*.sql``) and the runner that applies them."""
