"""What every stage shares below the stages themselves: tokenisation, tables, content fingerprints, joining Ray."""
