"""One adapter module per legacy HTTP API family: its routes, envelope, status codes and field shapes.

Each module has `add_routes(app, channel) -> [(METHOD, path)]` and wraps its handlers with
`gateway.errors.answers(<its render function>)`.
"""
