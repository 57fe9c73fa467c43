"""Operations: structured logs, metrics and the audit trail."""
