"""One adapter module per legacy HTTP API family: its routes, envelope, status codes and field shapes.

Each module has `ROUTES`, a table of (METHOD, path, handler) with module-level handlers, each
wrapped with `gateway.errors.answers(<its render function>)`; handlers reach the server through
`common.stubs(request)`. gateway/app.py installs the tables in FAMILIES order, before the
transcoded routes; tests/test_route_table.py prints the whole table and checks no route shadows another.
"""
