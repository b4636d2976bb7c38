"""`clawtune serve` and `clawtune chat`: an OpenAI-compatible gateway (one base model and many adapters, remote
engines, routing by id and tags, experiments), its request log, and a chat client."""
