"""The shared kernel every layer and every plugin uses: the error tree, the `Secret` type, scrubbing
and clipping of text for records and the character rules behind them, the destination guard
(`netguard`), the token endpoint parser, and the permissions and the shapes of identities
(`permissions`), and asyncio helpers: the event loops `serve` runs on, stopping a background task
(`aio`). Nothing here imports another smtpconfig layer."""
