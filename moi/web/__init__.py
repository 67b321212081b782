"""``moi server``: the HTTP API, its OpenAPI document, metrics, file routes, the dashboard, static and templates."""
