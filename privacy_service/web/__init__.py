"""HTML pages (the privacy notice, later the request portal), their templates and static files."""
