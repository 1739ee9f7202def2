"""Pure decisions on evidence: promotion gate, shadow gate, rollback watch, label-free estimate."""
