"""Fixtures of distribution 3.x behaviour, recorded from its source (see README.md here).

`TagsServer` answers `GET /v2/<name>/tags/list` the way each version's handler does
(registry/handlers/tags.go at v3.0.0, v3.1.0 and v3.1.1, and 2.8.2 as measured), on a real
loopback HTTP server so the portal's real client, with its real `requests` session, talks to it.
"""

import json
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

from ..harness import QuietHandler, serving

HERE = Path(__file__).parent
VERSIONS = ("2.8.2", "3.0.0", "3.1.0", "3.1.1")


def envelope(name):
    return (HERE / name).read_bytes()


class TagsServer:
    """tags/list of one registry version over `tags` ({repository: [tag, ...]})."""

    def __init__(self, version, tags, maxtags=1000):
        assert version in VERSIONS
        self.version, self.tags, self.maxtags = version, tags, maxtags
        self.requests = []
        server = self

        class Handler(QuietHandler):
            def do_GET(self):
                server.requests.append(self.path)
                status, headers, body = server.answer(self.path)
                headers = {**headers, "Content-Type": "application/json"}
                self.answer(status, headers, json.dumps(body).encode())

        self._serving = serving(Handler)
        self.url = self._serving.__enter__().url

    def stop(self):
        self._serving.__exit__(None, None, None)

    def answer(self, raw_path):
        parts = urlsplit(raw_path)
        path = parts.path
        if path == "/v2/":
            return 200, {}, {}
        if not (path.startswith("/v2/") and path.endswith("/tags/list")):
            return 404, {}, {"errors": [{"code": "NOT_FOUND"}]}
        name = path[len("/v2/") : -len("/tags/list")]
        if name not in self.tags:
            return (
                404,
                {},
                {
                    "errors": [
                        {"code": "NAME_UNKNOWN", "message": "repository name not known to registry"}
                    ]
                },
            )
        query = parse_qs(parts.query)
        last = query.get("last", [""])[0]
        n = query.get("n", [None])[0]
        tags = self.tags[name]
        if self.version == "2.8.2":
            return 200, {}, {"name": name, "tags": list(tags)}  # ignores n and last, unsorted
        ordered = sorted(tags)
        if last:
            ordered = [tag for tag in ordered if tag > last]
        if n is None:
            return 200, {}, {"name": name, "tags": ordered}  # limit -1: everything
        try:
            limit = int(n)
        except ValueError:
            limit = -1
        invalid = (400, {}, {"errors": [{"code": "PAGINATION_NUMBER_INVALID"}]})
        if limit < 0:
            return invalid
        if self.version == "3.0.0":
            page = ordered[:limit]
            more = limit < len(ordered) and limit > 0
        else:
            if self.version == "3.1.0" and self.maxtags > 0 and limit > self.maxtags:
                return invalid
            if self.version == "3.1.1" and self.maxtags > 0:
                limit = min(limit, self.maxtags)
            if limit == 0:
                return 200, {}, {"name": name, "tags": []}
            page = ordered[:limit]
            # The storage walk stops when the buffer fills: "more" even if nothing follows.
            more = len(page) == limit
            if not page:
                page = None  # a nil slice, encoded null (fixed only on main, c36fab07f)
        headers = {}
        if more and page:
            query_text = urlencode({"last": page[-1], "n": limit})
            headers["Link"] = f'<{path}?{query_text}>; rel="next"'
        return 200, headers, {"name": name, "tags": page}
