"""The register stage: MLflow tracking, the registry, the promotion gate, and the consumer."""
