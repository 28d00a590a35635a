"""What every stage script shares: params, paths, errors, MLflow tracking, the entry point."""
