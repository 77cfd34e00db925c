"""/api/v1/: Django REST framework views over the same area modules the pages use, with API
tokens (api_tokens.py) for authentication and RFC 9457 problem details for every error."""
