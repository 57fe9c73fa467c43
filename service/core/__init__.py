"""The shared kernel every layer and every plugin uses: the error tree, the `Secret` type, scrubbing
and clipping of text for records and the character rules behind them, the destination guard
(`netguard`) and the token endpoint parser. Nothing here imports another smtpconfig layer."""
