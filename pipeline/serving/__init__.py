"""The predict stage: scoring new documents with a trained model and its thresholds."""
