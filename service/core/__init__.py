"""The shared kernel every layer and every plugin uses: the error tree, the `Secret` type, scrubbing
and clipping of text for records and the character rules behind them, the destination guard
(`netguard`), the token endpoint parser, and the permissions and the shapes of identities
(`permissions`). Nothing here imports another smtpconfig layer."""
