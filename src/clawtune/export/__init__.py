"""`clawtune ft export`: adapter, merged model, GGUF, Ollama and vLLM exports, each checked for train/serve parity."""
