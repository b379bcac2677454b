"""HTTP handlers: `handler(body, request) -> (status_code, body_dict)`."""
