"""`clawtune ft evaluate`: baseline versus fine-tuned on held-out conversations, with honest statistics."""
