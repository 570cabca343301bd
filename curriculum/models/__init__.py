"""Model builders, one module per framework so each stage imports only its own."""
