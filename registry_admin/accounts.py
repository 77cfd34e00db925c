"""Portal accounts: how django-axes names the account behind a login attempt."""

# Django's username column is 150 characters; axes stores the submitted name in a 255-character
# column, which PostgreSQL enforces (SQLite does not), so an oversized or NUL-carrying name
# from a hostile form must be cut before axes writes it.
MAX_USERNAME = 150


def throttling_username(request, credentials=None):
    """The submitted username, printable characters only, at most 150 of them."""
    source = credentials if credentials else getattr(request, "POST", {})
    raw = source.get("username", "") if hasattr(source, "get") else ""
    return "".join(ch for ch in str(raw or "") if ch.isprintable())[:MAX_USERNAME]
