"""smtpconfig server.

The folders are the layers, each importing only those below it: `cli` > `app` > `api` >
`outbound` > `domain` > `plugin` > `ops` > `store` > `settings` > `core`.
"""
