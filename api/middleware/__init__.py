"""The API's middleware, pure ASGI (so WebSockets pass through), one per file.

Order, outermost first: tracing, rate limit, auth, timeout (see ``api.app``).
"""
