"""Assessment scoring service: scores questionnaires, or rejects them with the reason."""
