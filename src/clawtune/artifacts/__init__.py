"""What the stages hand each other, below all of them: the checkpoint manifest, the chat templates and their
rendering (the one renderer training, evaluation, export and serving share), the one PEFT adapter reader, and atomic
writes of files and folders. Nothing here imports a stage."""
