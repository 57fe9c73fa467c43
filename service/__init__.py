"""smtpconfig server.

The folders are the layers, each importing only those below it (the import-linter contracts in
pyproject.toml, checked by `make test`): `cli` > `app` > `api` > `outbound` > `domain` > `plugin` >
`ops` > `store` > `settings` > `core`.
"""
