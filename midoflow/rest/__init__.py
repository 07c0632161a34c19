"""The midoflow REST API (webob + routes), described by ``openapi.yaml``."""
